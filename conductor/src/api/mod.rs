//! The Ironic REST API subset: root documents, nodes, ports, and the
//! ramdisk endpoints (lookup, heartbeat).

mod burnin_pairing;
mod conductors;
mod deploy_steps;
pub mod error;
pub mod forward;
mod history;
mod inspection;
pub mod metrics;
mod node_lock;
mod nodes;
mod patch;
mod ports;
mod raid;
mod ramdisk;
mod root;
mod secrets;
mod states;
pub mod version;
pub mod views;

use std::collections::HashMap;
use std::sync::Arc;

use axum::middleware::from_fn_with_state;
use axum::routing::{get, post, put};
use axum::Router;
use serde_json::{json, Map, Value};

use crate::config::ConductorConfig;
use crate::flows::Flows;
use crate::store::Store;
use error::{ApiError, ApiResult};

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub config: Arc<ConductorConfig>,
    pub flows: Arc<Flows>,
    /// `burnin_network` pairing groups (in memory: `crate::pairing`).
    pub pairing: Arc<crate::pairing::Registry>,
    /// Hands requests for another conductor group's nodes to their owner.
    pub forwarder: Arc<forward::Forwarder>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

pub fn router(state: AppState) -> Router {
    // The routes that make a conductor work on a node (its BMC, its
    // network); reads and record changes stay on the shared database.
    let to_owner = || from_fn_with_state(state.clone(), forward::node_verb);
    Router::new()
        .route("/", get(root::root))
        .route("/v1", get(root::v1))
        .route("/v1/", get(root::v1))
        .route("/v1/nodes", get(nodes::list).post(nodes::create))
        .route("/v1/nodes/", get(nodes::list).post(nodes::create))
        .route("/v1/nodes/detail", get(nodes::list_detail))
        .route(
            "/v1/nodes/{ident}",
            get(nodes::show).patch(nodes::update).delete(nodes::delete),
        )
        .route("/v1/nodes/{ident}/states", get(nodes::states))
        .route(
            "/v1/nodes/{ident}/states/provision",
            put(states::provision).layer(to_owner()),
        )
        .route(
            "/v1/nodes/{ident}/states/power",
            put(states::power).layer(to_owner()),
        )
        .route(
            "/v1/nodes/{ident}/states/raid",
            put(raid::set_target).layer(to_owner()),
        )
        .route(
            "/v1/nodes/{ident}/management/boot_device",
            get(states::get_boot_device).merge(put(states::set_boot_device).layer(to_owner())),
        )
        .route("/v1/nodes/{ident}/validate", get(states::validate))
        .route("/v1/nodes/{ident}/history", get(history::list))
        .route("/v1/nodes/{ident}/history/{event}", get(history::show))
        .route(
            "/v1/nodes/{ident}/maintenance",
            put(states::set_maintenance).delete(states::unset_maintenance),
        )
        .route(
            "/v1/nodes/{ident}/inventory",
            get(inspection::get_inventory),
        )
        .route("/v1/nodes/{ident}/ports", get(ports::list_for_node))
        .route(
            "/v1/nodes/{ident}/ports/detail",
            get(ports::list_for_node_detail),
        )
        .route("/metrics", get(metrics::scrape))
        .route("/v1/conductors", get(conductors::list))
        .route("/v1/conductors/{hostname}", get(conductors::show))
        .route("/v1/ports", get(ports::list).post(ports::create))
        .route("/v1/ports/", get(ports::list).post(ports::create))
        .route("/v1/ports/detail", get(ports::list_detail))
        .route(
            "/v1/ports/{uuid}",
            get(ports::show).patch(ports::update).delete(ports::delete),
        )
        .route("/v1/lookup", get(ramdisk::lookup))
        .route(
            "/v1/heartbeat/{node}",
            post(ramdisk::heartbeat).layer(from_fn_with_state(state.clone(), forward::heartbeat)),
        )
        .route(
            "/v1/continue_inspection",
            post(ramdisk::continue_inspection),
        )
        .route(
            "/v1/ferrite/network-burnin/pair",
            post(burnin_pairing::pair),
        )
        .route(
            "/v1/ferrite/network-burnin/leave",
            post(burnin_pairing::leave),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn(version::negotiate))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("The resource could not be found.")
}

/// Paging and sorting parameters shared by the collection endpoints.
pub struct ListParams {
    /// Fields to show: `?fields=`, else all with `detail`, else the short set.
    fields: Option<Vec<String>>,
    /// Ironic's `validate_limit`: the request's, at most `[api]max_limit`,
    /// which is also the default.
    pub limit: usize,
    pub marker: Option<String>,
    pub sort_key: Option<String>,
    pub descending: bool,
    /// The other query parameters, repeated in the `next` link so the
    /// next page has the same filters and order.
    carried: Vec<(String, String)>,
}

impl ListParams {
    /// `template` is a full view of a resource (to validate `fields`);
    /// `short_fields` is what a list shows without `detail`.
    pub fn parse(
        params: &HashMap<String, String>,
        detail_route: bool,
        template: &Map<String, Value>,
        short_fields: &[&str],
        max_limit: usize,
    ) -> ApiResult<Self> {
        let limit = params
            .get("limit")
            .map(|l| l.parse::<usize>().ok().filter(|n| *n > 0))
            .map(|l| l.ok_or_else(|| ApiError::bad_request("Limit must be positive")))
            .transpose()?
            .map_or(max_limit, |l| l.min(max_limit))
            .max(1);
        let descending = match params.get("sort_dir").map(String::as_str) {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid sort direction: {other}. Acceptable values are 'asc' or 'desc'"
                )))
            }
        };
        let detail = detail_route
            || params
                .get("detail")
                .is_some_and(|d| d.eq_ignore_ascii_case("true"));
        let fields = match views::parse_fields(params.get("fields").map(String::as_str), template)?
        {
            Some(f) => Some(f),
            None if detail => None,
            None => Some(views::owned(short_fields)),
        };
        let mut carried: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "limit" | "marker"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        carried.sort();
        Ok(Self {
            fields,
            limit,
            marker: params.get("marker").cloned(),
            sort_key: params.get("sort_key").cloned(),
            descending,
            carried,
        })
    }

    /// Ironic's `get_next`: a full page may have a next one.
    fn next_link(&self, items: &[Map<String, Value>], collection_url: &str) -> Option<String> {
        if items.len() != self.limit {
            return None;
        }
        let last = items.last()?.get("uuid")?.as_str()?;
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.carried {
            query.append_pair(k, v);
        }
        query.append_pair("limit", &self.limit.to_string());
        query.append_pair("marker", last);
        Some(format!("{collection_url}?{}", query.finish()))
    }
}

/// Sort, page and select fields in memory; add `next` when a page is full.
pub fn list_page(
    mut items: Vec<Map<String, Value>>,
    list: &ListParams,
    collection_url: &str,
    key: &str,
) -> ApiResult<Value> {
    if let Some(sort_key) = &list.sort_key {
        if items.first().is_some_and(|i| !i.contains_key(sort_key)) {
            return Err(invalid_sort_key(sort_key));
        }
        items.sort_by_key(|i| sort_text(i.get(sort_key)));
    }
    if list.descending {
        items.reverse();
    }
    if let Some(marker) = &list.marker {
        let pos = items
            .iter()
            .position(|i| i.get("uuid").and_then(Value::as_str) == Some(marker.as_str()))
            .ok_or_else(|| ApiError::bad_request(format!("Marker {marker} could not be found.")))?;
        items.drain(..=pos);
    }
    items.truncate(list.limit);
    Ok(render_page(items, list, collection_url, key))
}

/// A page already sorted and cut (by the database): select the fields and
/// add `next` when it is full.
pub fn render_page(
    items: Vec<Map<String, Value>>,
    list: &ListParams,
    collection_url: &str,
    key: &str,
) -> Value {
    let next = list.next_link(&items, collection_url);
    let shown: Vec<Value> = items
        .into_iter()
        .map(|i| views::select(i, list.fields.as_deref()))
        .collect();
    let mut page = json!({ key: shown });
    if let Some(next) = next {
        page["next"] = Value::String(next);
    }
    page
}

pub fn invalid_sort_key(sort_key: &str) -> ApiError {
    ApiError::bad_request(format!(
        "The sort_key value \"{sort_key}\" is an invalid field for sorting"
    ))
}

fn sort_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}
