//! Ask the agent for its clean steps and cache them on the node, as Ironic's
//! `refresh_steps` does: grouped by interface, marked `requires_ramdisk`.

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::{json, Value};
use tracing::info;

use crate::agent_clients::AgentClients;
use crate::node_view::node_secure_dict;
use crate::store::{Store, StoreError};
use crate::time::internal_now;

pub const CACHE_KEY: &str = "agent_cached_clean_steps";

/// The node's ports as the agent's step calls carry them (`ports`).
pub async fn node_ports(store: &Store, uuid: &str) -> Result<Vec<Value>, StoreError> {
    Ok(store
        .list_ports(Some(uuid))
        .await?
        .iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .collect())
}

/// `opportunistic`: only because a heartbeat came (one try; the next
/// heartbeat tries again), not a step of a flow.
pub async fn refresh_clean_steps(
    store: &Store,
    agents: &AgentClients,
    uuid: &str,
    opportunistic: bool,
) -> anyhow::Result<()> {
    let node = store.get_node(uuid).await?;
    let client = match opportunistic {
        true => agents.opportunistic(&node)?,
        false => agents.for_node(&node)?,
    };
    let ports = node_ports(store, uuid).await?;
    let result = client
        .get_clean_steps(node_secure_dict(&node), ports)
        .await
        .context("fetching clean steps from the agent")?;

    let mut by_interface: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for step in result.clean_steps.into_values().flatten() {
        let mut step = step;
        step.requires_ramdisk = Some(true);
        by_interface
            .entry(step.interface.clone())
            .or_default()
            .push(serde_json::to_value(&step)?);
    }
    let count: usize = by_interface.values().map(Vec::len).sum();
    store
        .update_node::<StoreError, _>(uuid, |n| {
            let dii = &mut n.driver_internal_info;
            dii.insert(CACHE_KEY.into(), json!(by_interface));
            dii.insert(
                "agent_cached_clean_steps_refreshed".into(),
                json!(internal_now()),
            );
            dii.insert(
                "hardware_manager_version".into(),
                json!(result.hardware_manager_version),
            );
            Ok(())
        })
        .await?;
    info!(node = %uuid, steps = count, "cached the agent's clean steps");
    Ok(())
}
