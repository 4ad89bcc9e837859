//! Node records.

use ferrite_protocol::node::Node;
use rusqlite::{params, OptionalExtension, Row};

use super::{unique_violation, Store, StoreError, StoreResult};

/// Filters for listing nodes (Ironic's query parameters).
#[derive(Debug, Default, Clone)]
pub struct NodeQuery {
    pub provision_state: Option<String>,
    pub driver: Option<String>,
    pub maintenance: Option<bool>,
    pub associated: Option<bool>,
    pub resource_class: Option<String>,
}

/// `maintenance_reason`/`fault` of a node whose stored record cannot be read.
pub const CORRUPT_FAULT: &str = "corrupt record";

/// One row: the JSON document plus the columns kept beside it.
struct NodeRow {
    data: String,
    reservation: Option<String>,
    uuid: String,
    name: Option<String>,
    instance_uuid: Option<String>,
    provision_state: String,
}

const COLUMNS: &str = "data, reservation, uuid, name, instance_uuid, provision_state";

fn node_from_row(row: &Row<'_>) -> rusqlite::Result<NodeRow> {
    Ok(NodeRow {
        data: row.get("data")?,
        reservation: row.get("reservation")?,
        uuid: row.get("uuid")?,
        name: row.get("name")?,
        instance_uuid: row.get("instance_uuid")?,
        provision_state: row.get("provision_state")?,
    })
}

fn decode(row: NodeRow) -> StoreResult<Node> {
    let mut node: Node = serde_json::from_str(&row.data)?;
    // The lock lives only in its column, so that taking it is one atomic UPDATE.
    node.reservation = row.reservation;
    Ok(node)
}

/// For reads: a record that does not parse (written by hand, or by an older
/// bug) must not take listing or start-up down with it. It is shown from
/// its columns, in maintenance with the reason, so an operator sees it and
/// can delete it; writes still refuse it ([`decode`]), so nothing
/// overwrites the original bytes.
fn decode_or_degraded(row: NodeRow) -> Node {
    let columns = Node {
        uuid: row.uuid.clone(),
        name: row.name.clone(),
        instance_uuid: row.instance_uuid.clone(),
        provision_state: row.provision_state.clone(),
        reservation: row.reservation.clone(),
        ..Node::default()
    };
    match decode(row) {
        Ok(node) => node,
        Err(e) => {
            tracing::error!(node = %columns.uuid, error = %e, "stored node record is corrupt; showing it degraded");
            Node {
                maintenance: true,
                maintenance_reason: Some(format!(
                    "The stored record of this node is corrupt ({e}); delete the node and enroll it again"
                )),
                fault: Some(CORRUPT_FAULT.into()),
                ..columns
            }
        }
    }
}

fn not_found(ident: &str) -> StoreError {
    StoreError::NotFound(format!("Node {ident} could not be found."))
}

impl Store {
    pub fn create_node(&self, node: &Node) -> StoreResult<()> {
        let data = serde_json::to_string(node)?;
        self.conn()
            .execute(
                "INSERT INTO nodes (uuid, name, instance_uuid, provision_state, data) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![node.uuid, node.name, node.instance_uuid, node.provision_state, data],
            )
            .map_err(|e| unique_violation(e, || duplicate_message(node)))?;
        Ok(())
    }

    /// By UUID, or by name when the ident is not a known UUID.
    pub fn get_node(&self, ident: &str) -> StoreResult<Node> {
        let row = self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM nodes WHERE uuid = ?1 OR name = ?1 ORDER BY uuid = ?1 DESC LIMIT 1"),
                params![ident],
                node_from_row,
            )
            .optional()?;
        Ok(decode_or_degraded(row.ok_or_else(|| not_found(ident))?))
    }

    pub fn list_nodes(&self, query: &NodeQuery) -> StoreResult<Vec<Node>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM nodes ORDER BY id"))?;
        let rows = stmt.query_map([], node_from_row)?;
        let mut nodes = Vec::new();
        for row in rows {
            let node = decode_or_degraded(row?);
            if query.matches(&node) {
                nodes.push(node);
            }
        }
        Ok(nodes)
    }

    /// Read-modify-write one node atomically. `update` may refuse with an error.
    pub fn update_node<E, F>(&self, ident: &str, update: F) -> Result<Node, E>
    where
        E: From<StoreError>,
        F: FnOnce(&mut Node) -> Result<(), E>,
    {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(StoreError::from)?;
        let row = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM nodes WHERE uuid = ?1 OR name = ?1 ORDER BY uuid = ?1 DESC LIMIT 1"),
                params![ident],
                node_from_row,
            )
            .optional()
            .map_err(StoreError::from)?;
        let mut node = decode(row.ok_or_else(|| not_found(ident))?)?;
        let uuid = node.uuid.clone();
        update(&mut node)?;
        node.uuid = uuid;
        node.updated_at = Some(crate::time::api_now());
        let data = serde_json::to_string(&node).map_err(StoreError::from)?;
        tx.execute(
            "UPDATE nodes SET name = ?2, instance_uuid = ?3, provision_state = ?4, data = ?5 WHERE uuid = ?1",
            params![node.uuid, node.name, node.instance_uuid, node.provision_state, data],
        )
        .map_err(|e| unique_violation(e, || duplicate_message(&node)))?;
        tx.commit().map_err(StoreError::from)?;
        Ok(node)
    }

    pub fn delete_node(&self, uuid: &str) -> StoreResult<()> {
        let n = self
            .conn()
            .execute("DELETE FROM nodes WHERE uuid = ?1", params![uuid])?;
        if n == 0 {
            return Err(not_found(uuid));
        }
        Ok(())
    }

    /// Take the node's exclusive lock for `host`; `Ok(false)` if someone holds it.
    pub fn try_reserve(&self, uuid: &str, host: &str) -> StoreResult<bool> {
        let n = self.conn().execute(
            "UPDATE nodes SET reservation = ?2 WHERE uuid = ?1 AND reservation IS NULL",
            params![uuid, host],
        )?;
        Ok(n == 1)
    }

    pub fn release(&self, uuid: &str, host: &str) -> StoreResult<()> {
        self.conn().execute(
            "UPDATE nodes SET reservation = NULL WHERE uuid = ?1 AND reservation = ?2",
            params![uuid, host],
        )?;
        Ok(())
    }

    /// Drop every lock held by `host` (locks of a conductor that died).
    pub fn release_all(&self, host: &str) -> StoreResult<usize> {
        Ok(self.conn().execute(
            "UPDATE nodes SET reservation = NULL WHERE reservation = ?1",
            params![host],
        )?)
    }
}

fn duplicate_message(node: &Node) -> String {
    match &node.name {
        Some(name) => format!(
            "A node with UUID {} or name {name} already exists.",
            node.uuid
        ),
        None => format!("A node with UUID {} already exists.", node.uuid),
    }
}

impl NodeQuery {
    fn matches(&self, node: &Node) -> bool {
        self.provision_state
            .as_ref()
            .is_none_or(|s| &node.provision_state == s)
            && self.driver.as_ref().is_none_or(|d| &node.driver == d)
            && self.maintenance.is_none_or(|m| node.maintenance == m)
            && self
                .associated
                .is_none_or(|a| node.instance_uuid.is_some() == a)
            && self
                .resource_class
                .as_ref()
                .is_none_or(|r| node.resource_class.as_ref() == Some(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(uuid: &str, name: &str) -> Node {
        Node {
            uuid: uuid.into(),
            name: Some(name.into()),
            driver: "fake-hardware".into(),
            ..Node::default()
        }
    }

    #[test]
    fn create_get_update_delete() {
        let store = Store::in_memory().unwrap();
        store.create_node(&node("u1", "n1")).unwrap();
        assert_eq!(store.get_node("n1").unwrap().uuid, "u1");
        assert_eq!(store.get_node("u1").unwrap().name.as_deref(), Some("n1"));
        let updated = store
            .update_node::<StoreError, _>("u1", |n| {
                n.provision_state = "manageable".into();
                Ok(())
            })
            .unwrap();
        assert_eq!(updated.provision_state, "manageable");
        assert_eq!(store.get_node("u1").unwrap().provision_state, "manageable");
        store.delete_node("u1").unwrap();
        assert!(matches!(store.get_node("u1"), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn duplicates_conflict_and_change_nothing() {
        let store = Store::in_memory().unwrap();
        store.create_node(&node("u1", "n1")).unwrap();
        assert!(matches!(
            store.create_node(&node("u2", "n1")),
            Err(StoreError::Conflict(_))
        ));
        store.create_node(&node("u2", "n2")).unwrap();
        let renamed = store.update_node::<StoreError, _>("u2", |n| {
            n.name = Some("n1".into());
            Ok(())
        });
        assert!(matches!(renamed, Err(StoreError::Conflict(_))));
        assert_eq!(store.get_node("u2").unwrap().name.as_deref(), Some("n2"));
    }

    #[test]
    fn reservation_is_exclusive() {
        let store = Store::in_memory().unwrap();
        store.create_node(&node("u1", "n1")).unwrap();
        assert!(store.try_reserve("u1", "a").unwrap());
        assert!(!store.try_reserve("u1", "b").unwrap());
        assert_eq!(
            store.get_node("u1").unwrap().reservation.as_deref(),
            Some("a")
        );
        store.release("u1", "b").unwrap();
        assert!(!store.try_reserve("u1", "b").unwrap());
        store.release("u1", "a").unwrap();
        assert!(store.try_reserve("u1", "b").unwrap());
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        Store::open(&path)
            .unwrap()
            .create_node(&node("u1", "n1"))
            .unwrap();
        assert_eq!(
            Store::open(&path).unwrap().get_node("n1").unwrap().uuid,
            "u1"
        );
    }
}
