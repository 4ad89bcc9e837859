//! `GET /` and `GET /v1`: how clients and ramdisks discover versions.

use axum::extract::State;
use axum::Json;
use ferrite_protocol::ironic_api::{IronicRoot, VersionDoc};
use ferrite_protocol::node::Link;
use serde_json::{json, Value};

use super::version::{MAX_VERSION, MIN_VERSION};
use super::AppState;

fn version_doc(base: &str) -> VersionDoc {
    VersionDoc {
        id: "v1".into(),
        links: vec![Link::new(format!("{base}/v1/"), "self")],
        status: "CURRENT".into(),
        min_version: MIN_VERSION,
        version: MAX_VERSION,
    }
}

pub async fn root(State(state): State<AppState>) -> Json<IronicRoot> {
    let base = state.config.public_url();
    Json(IronicRoot {
        name: "OpenStack Ironic API".into(),
        description: "Ironic is an OpenStack project which enables the provision and management of baremetal machines. (ferrite-conductor)".into(),
        versions: vec![version_doc(&base)],
        default_version: version_doc(&base),
    })
}

pub async fn v1(State(state): State<AppState>) -> Json<Value> {
    let base = state.config.public_url();
    let pair = |name: &str| {
        json!([
            Link::new(format!("{base}/v1/{name}/"), "self"),
            Link::new(format!("{base}/{name}/"), "bookmark"),
        ])
    };
    Json(json!({
        "id": "v1",
        "links": [Link::new(format!("{base}/v1/"), "self")],
        "media_types": {"base": "application/json", "type": "application/vnd.openstack.ironic.v1+json"},
        "nodes": pair("nodes"),
        "ports": pair("ports"),
        "lookup": pair("lookup"),
        "heartbeat": pair("heartbeat"),
        "version": version_doc(&base),
    }))
}
