//! Loopback integration: the real conductor and agent binaries on 127.0.0.1.

mod agent_api;
mod agent_calls;
mod api_security;
mod boot_serving;
mod burnin;
mod burnin_network;
mod conductor_api;
mod conductor_client;
mod console;
mod deploy_steps;
mod flows;
mod inspection;
mod ipmi;
mod lookup_heartbeat;
mod metrics;
mod power_sync;
mod ramdisk_logs;
mod redfish;
mod rescue;
mod rescue_ssh;
mod security_api;

use ferrite_tests::{Agent, Conductor};
use serde_json::Value;

/// A conductor, one node with one port, and an agent that has looked the
/// node up and heartbeated over HTTPS. Returns the node UUID and the PEM.
pub async fn deployed_pair(
    conductor_flags: &[&str],
    mac: &str,
) -> (Conductor, Agent, String, String) {
    let pair = ferrite_tests::Pair::start(conductor_flags, mac, &[]).await;
    (pair.conductor, pair.agent, pair.uuid, pair.pem)
}

/// `driver_internal_info` of a node, via the API.
pub async fn dii(conductor: &Conductor, uuid: &str) -> Value {
    conductor.node(uuid).await["driver_internal_info"].clone()
}
