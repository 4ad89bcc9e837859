//! Listing nodes in SQL: Ironic's filters as a WHERE clause, its sort keys
//! as an ORDER BY over real columns, and its `marker` as a keyset, so a
//! page of 10 out of 10,000 nodes reads and decodes 10 rows.
//!
//! The columns beside each node's JSON document (schema version 6) are
//! written with every write of the node ([`columns`]) and filled for rows
//! written before they existed when the store opens.

use ferrite_protocol::node::Node;

use super::CORRUPT_FAULT;
use crate::provision_state::ProvisionState;

/// Filters for listing nodes (Ironic's query parameters). Every filter is
/// a column, so none of them reads a document that does not match.
#[derive(Debug, Default, Clone)]
pub struct NodeQuery {
    /// Any of these states; empty means any state.
    pub provision_state: Vec<String>,
    pub driver: Option<String>,
    pub maintenance: Option<bool>,
    pub associated: Option<bool>,
    pub resource_class: Option<String>,
    pub fault: Option<String>,
    pub conductor_group: Option<String>,
    pub owner: Option<String>,
    pub lessee: Option<String>,
    pub retired: Option<bool>,
    pub instance_uuid: Option<String>,
    /// Sorted and cut in SQL; `None` lists every match in insertion order.
    pub page: Option<Page>,
}

impl NodeQuery {
    /// Nodes in any of `states`.
    pub fn in_states(states: &[ProvisionState]) -> Self {
        Self {
            provision_state: states.iter().map(|s| s.as_str().to_string()).collect(),
            ..Self::default()
        }
    }
}

/// One page: `limit` rows after `marker` (a node UUID) in `sort` order.
#[derive(Debug, Clone)]
pub struct Page {
    pub sort: SortKey,
    pub descending: bool,
    pub marker: Option<String>,
    pub limit: usize,
}

/// A node field that is a column, and so can be sorted and paged in SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    column: &'static str,
    /// What a NULL sorts as, so both engines order NULLs alike.
    null_as: &'static str,
}

const TEXT_COLUMNS: &[&str] = &[
    "uuid",
    "name",
    "instance_uuid",
    "provision_state",
    "reservation",
    "driver",
    "resource_class",
    "conductor_group",
    "fault",
    "owner",
    "lessee",
    "power_state",
    "provision_updated_at",
    "created_at",
    "updated_at",
];
const FLAG_COLUMNS: &[&str] = &["maintenance", "retired"];

impl SortKey {
    /// Ironic's default: the order nodes were enrolled in.
    pub const ID: SortKey = SortKey {
        column: "id",
        null_as: "0",
    };

    /// The column for an API field, if it has one.
    pub fn column(field: &str) -> Option<Self> {
        if field == "id" {
            return Some(Self::ID);
        }
        if let Some(column) = TEXT_COLUMNS.iter().find(|c| **c == field) {
            return Some(Self {
                column,
                null_as: "''",
            });
        }
        FLAG_COLUMNS
            .iter()
            .find(|c| **c == field)
            .map(|column| Self {
                column,
                null_as: "0",
            })
    }

    fn expr(&self) -> String {
        if self.column == "id" {
            "id".into()
        } else {
            format!("COALESCE({}, {})", self.column, self.null_as)
        }
    }
}

/// A bound value of a generated statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(Option<String>),
    Int(i64),
}

/// The columns [`select_heads`] reads, in order.
pub const HEAD_COLUMNS: &str = "uuid, name, instance_uuid, provision_state, reservation, \
     driver, conductor_group, COALESCE(maintenance, 0), power_state, provision_updated_at";

/// `SELECT` of the node row columns for `query`, with its parameters.
pub fn select(query: &NodeQuery) -> (String, Vec<Param>) {
    select_columns(
        "data, reservation, uuid, name, instance_uuid, provision_state",
        query,
    )
}

/// `SELECT` of [`HEAD_COLUMNS`] only: no document is read or decoded, for
/// sweeps over the whole fleet that need to know which nodes, not what.
pub fn select_heads(query: &NodeQuery) -> (String, Vec<Param>) {
    select_columns(HEAD_COLUMNS, query)
}

/// A node from the columns of [`HEAD_COLUMNS`]; every other field is its
/// default.
#[allow(clippy::too_many_arguments)]
pub fn head(
    uuid: String,
    name: Option<String>,
    instance_uuid: Option<String>,
    provision_state: String,
    reservation: Option<String>,
    driver: Option<String>,
    conductor_group: Option<String>,
    maintenance: i64,
    power_state: Option<String>,
    provision_updated_at: Option<String>,
) -> Node {
    Node {
        uuid,
        name,
        instance_uuid,
        provision_state,
        reservation,
        driver: driver.unwrap_or_default(),
        conductor_group: conductor_group.unwrap_or_default(),
        maintenance: maintenance != 0,
        power_state,
        provision_updated_at,
        ..Node::default()
    }
}

fn select_columns(columns: &str, query: &NodeQuery) -> (String, Vec<Param>) {
    let mut params = Vec::new();
    let mut bind = |p: Param| {
        params.push(p);
        format!("${}", params.len())
    };
    let mut conditions: Vec<String> = Vec::new();
    if !query.provision_state.is_empty() {
        let list: Vec<String> = query
            .provision_state
            .iter()
            .map(|s| bind(Param::Text(Some(s.clone()))))
            .collect();
        conditions.push(format!("provision_state IN ({})", list.join(", ")));
    }
    let texts = [
        ("driver", &query.driver),
        ("resource_class", &query.resource_class),
        ("fault", &query.fault),
        ("conductor_group", &query.conductor_group),
        ("owner", &query.owner),
        ("lessee", &query.lessee),
        ("instance_uuid", &query.instance_uuid),
    ];
    for (column, value) in texts {
        if let Some(v) = value {
            conditions.push(format!("{column} = {}", bind(Param::Text(Some(v.clone())))));
        }
    }
    for (column, value) in [
        ("maintenance", query.maintenance),
        ("retired", query.retired),
    ] {
        if let Some(v) = value {
            conditions.push(format!(
                "COALESCE({column}, 0) = {}",
                bind(Param::Int(v as i64))
            ));
        }
    }
    match query.associated {
        Some(true) => conditions.push("instance_uuid IS NOT NULL".into()),
        Some(false) => conditions.push("instance_uuid IS NULL".into()),
        None => {}
    }
    let (order, limit) = match &query.page {
        None => ("id".to_string(), String::new()),
        Some(page) => {
            let (op, dir) = if page.descending {
                ("<", "DESC")
            } else {
                (">", "ASC")
            };
            let expr = page.sort.expr();
            if let Some(marker) = &page.marker {
                let m = bind(Param::Text(Some(marker.clone())));
                let marker_id = format!("(SELECT id FROM nodes WHERE uuid = {m})");
                conditions.push(if page.sort == SortKey::ID {
                    format!("id {op} {marker_id}")
                } else {
                    let marker_value = format!("(SELECT {expr} FROM nodes WHERE uuid = {m})");
                    format!(
                        "({expr} {op} {marker_value} OR ({expr} = {marker_value} AND id {op} {marker_id}))"
                    )
                });
            }
            let limit = bind(Param::Int(page.limit as i64));
            let order = if page.sort == SortKey::ID {
                format!("id {dir}")
            } else {
                format!("{expr} {dir}, id {dir}")
            };
            (order, format!(" LIMIT {limit}"))
        }
    };
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    (
        format!("SELECT {columns} FROM nodes{filter} ORDER BY {order}{limit}"),
        params,
    )
}

/// The queryable columns of a node, in the order of
/// [`super::rows::sql::SET_NODE_COLUMNS`]'s `$2..`.
pub fn columns(node: &Node) -> Vec<Param> {
    let text = |v: &Option<String>| Param::Text(v.clone());
    vec![
        Param::Text(Some(node.driver.clone())),
        Param::Int(node.maintenance as i64),
        text(&node.resource_class),
        Param::Text(Some(node.conductor_group.clone())),
        text(&node.fault),
        text(&node.owner),
        text(&node.lessee),
        Param::Int(node.retired as i64),
        text(&node.power_state),
        text(&node.provision_updated_at),
        text(&node.created_at),
        text(&node.updated_at),
    ]
}

/// The columns of a row whose document does not parse: shown in
/// maintenance with the corrupt-record fault, as reads show it.
pub fn corrupt_columns() -> Vec<Param> {
    let mut cols = columns(&Node {
        maintenance: true,
        fault: Some(CORRUPT_FAULT.into()),
        ..Node::default()
    });
    cols[0] = Param::Text(Some(String::new()));
    cols
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_bound_parameters() {
        let (sql, params) = select(&NodeQuery {
            provision_state: vec!["wait call-back".into(), "clean wait".into()],
            maintenance: Some(false),
            driver: Some("ipmi'; DROP TABLE nodes".into()),
            ..NodeQuery::default()
        });
        assert_eq!(
            sql,
            "SELECT data, reservation, uuid, name, instance_uuid, provision_state FROM nodes \
             WHERE provision_state IN ($1, $2) AND driver = $3 AND COALESCE(maintenance, 0) = $4 ORDER BY id"
        );
        assert_eq!(
            params[2],
            Param::Text(Some("ipmi'; DROP TABLE nodes".into()))
        );
        assert_eq!(params[3], Param::Int(0));
    }

    #[test]
    fn a_marker_pages_by_the_sort_key_then_id() {
        let (sql, params) = select(&NodeQuery {
            page: Some(Page {
                sort: SortKey::column("name").unwrap(),
                descending: true,
                marker: Some("m".into()),
                limit: 5,
            }),
            ..NodeQuery::default()
        });
        assert!(sql.ends_with(
            "WHERE (COALESCE(name, '') < (SELECT COALESCE(name, '') FROM nodes WHERE uuid = $1) \
             OR (COALESCE(name, '') = (SELECT COALESCE(name, '') FROM nodes WHERE uuid = $1) \
             AND id < (SELECT id FROM nodes WHERE uuid = $1))) \
             ORDER BY COALESCE(name, '') DESC, id DESC LIMIT $2"
        ), "{sql}");
        assert_eq!(params, vec![Param::Text(Some("m".into())), Param::Int(5)]);
    }

    #[test]
    fn only_columns_sort_in_sql() {
        assert!(SortKey::column("provision_updated_at").is_some());
        assert!(SortKey::column("maintenance").is_some());
        assert!(SortKey::column("last_error").is_none());
        assert!(SortKey::column("driver_info").is_none());
        assert!(SortKey::column("id; DROP").is_none());
    }
}
