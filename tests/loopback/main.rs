//! Loopback integration: the real conductor and agent binaries on 127.0.0.1.

mod agent_api;
mod conductor_api;
mod conductor_client;
mod lookup_heartbeat;

use std::time::Duration;

use ferrite_tests::{wait_for, Agent, Conductor};
use serde_json::{json, Value};

/// A conductor, one node with one port, and an agent that has looked the
/// node up and heartbeated over HTTPS. Returns the node UUID and the PEM.
pub async fn deployed_pair(
    conductor_flags: &[&str],
    mac: &str,
) -> (Conductor, Agent, String, String) {
    let mut flags = vec!["--fast-track", "true"];
    flags.extend_from_slice(conductor_flags);
    let conductor = Conductor::start(&flags).await;
    let node = conductor
        .create_node(json!({"driver": "fake-hardware", "name": "node-0"}))
        .await;
    let uuid = node["uuid"].as_str().expect("uuid").to_string();
    conductor.create_port(&uuid, mac).await;
    let agent = Agent::start(&conductor.url, &[mac], &[]);
    let pem = wait_for(
        "the agent certificate at the conductor",
        Duration::from_secs(20),
        || {
            let pem = conductor.agent_certificate(&uuid);
            async move { pem }
        },
    )
    .await;
    (conductor, agent, uuid, pem)
}

/// `driver_internal_info` of a node, via the API.
pub async fn dii(conductor: &Conductor, uuid: &str) -> Value {
    conductor.node(uuid).await["driver_internal_info"].clone()
}
