//! In-band inspection's processing, Ironic's inspector hooks: once
//! `POST /v1/continue_inspection` has parsed and validated the ramdisk's
//! data, find the node ([`lookup_node`]), then run `ramdisk-error`,
//! `validate-interfaces`, `ports`, `architecture` and the property hooks
//! ([`process`]). The state machine's part (inspect wait → manageable or
//! inspect failed) is the flows'.

mod hooks;
mod lookup;

use ferrite_protocol::node::Node;
use serde_json::Value;
use tracing::{error, info};

use crate::config::InspectorAddPorts;
use crate::store::{Store, StoreError};
use crate::time::api_now;

pub use lookup::{bmc_matches, data_accepted, lookup_node};

#[derive(Debug, thiserror::Error)]
pub enum InspectionError {
    /// No node, several, or one not waiting for inspection: Ironic
    /// answers a bare 404 and says why only in its log.
    #[error("The resource could not be found.")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The processing Ironic does after the API answered: a ramdisk error
/// fails inspection (recorded in `last_error`); otherwise store the data
/// and fill in properties and ports.
pub async fn process(
    store: &Store,
    add_ports: InspectorAddPorts,
    node: &Node,
    inventory: Value,
    plugin_data: Value,
) -> Result<(), InspectionError> {
    if let Some(err) = plugin_data["error"].as_str().filter(|e| !e.is_empty()) {
        let message = format!("Ramdisk reported error: {err}");
        error!(node = %node.uuid, %message, "inspection failed");
        store
            .update_node::<StoreError, _>(&node.uuid, |n| {
                n.last_error = Some(message);
                Ok(())
            })
            .await?;
        return Ok(());
    }
    let created = hooks::sync_ports(store, add_ports, node, &inventory).await?;
    store
        .update_node::<StoreError, _>(&node.uuid, |n| {
            hooks::fill_properties(&mut n.properties, &inventory, &plugin_data);
            n.last_error = None;
            Ok(())
        })
        .await?;
    // Logs go to the conductor's log directory in Ironic, not the database.
    let mut stored = plugin_data;
    if let Some(obj) = stored.as_object_mut() {
        obj.remove("logs");
    }
    store
        .save_inventory(&node.uuid, &inventory, &stored, &api_now())
        .await?;
    info!(node = %node.uuid, ports_created = created.len(), "inspection data stored");
    Ok(())
}
