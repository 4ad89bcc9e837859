//! Power and boot device actions inside flows, recorded on the node.

use std::sync::Arc;

use ferrite_protocol::node::Node;
use serde_json::json;

use super::{Flows, RequestError};
use crate::power::{BootDevice, PowerAction, PowerDriver};
use crate::store::StoreError;

/// Run a power action through the node's driver and record the result.
pub async fn set_power(flows: &Flows, node: &Node, action: PowerAction) -> anyhow::Result<()> {
    let store = &flows.store;
    let driver = PowerDriver::for_node(node)?;
    if action != PowerAction::On {
        // The ramdisk dies with the power: forget its token and URL first,
        // so that nothing can use them while the action runs.
        store
            .update_node::<StoreError, _>(&node.uuid, |n| {
                super::transition::wipe_token_and_url(n);
                Ok(())
            })
            .await?;
    }
    let state = driver.set_state(action, &flows.metrics.bmc).await?;
    store
        .update_node::<StoreError, _>(&node.uuid, |n| {
            n.power_state = Some(state.to_string());
            n.target_power_state = None;
            Ok(())
        })
        .await?;
    tracing::info!(node = %node.uuid, ?action, interface = driver.interface(), "power action done");
    Ok(())
}

pub async fn set_boot_device(
    flows: &Flows,
    node: &Node,
    device: BootDevice,
    persistent: bool,
) -> anyhow::Result<()> {
    PowerDriver::for_node(node)?
        .set_boot_device(device, persistent, &flows.metrics.bmc)
        .await?;
    flows
        .store
        .update_node::<StoreError, _>(&node.uuid, |n| {
            n.driver_internal_info.insert(
                "boot_device".into(),
                json!({"boot_device": device.name(), "persistent": persistent}),
            );
            Ok(())
        })
        .await?;
    Ok(())
}

/// Boot the deploy ramdisk: network boot next, then (re)start the machine.
pub async fn boot_ramdisk(flows: &Flows, node: &Node) -> anyhow::Result<()> {
    set_boot_device(flows, node, BootDevice::Pxe, false).await?;
    let action = if node.power_state.as_deref() == Some(crate::power::POWER_ON) {
        PowerAction::Reboot
    } else {
        PowerAction::On
    };
    set_power(flows, node, action).await
}

impl Flows {
    /// `PUT /v1/nodes/{id}/states/power`, as Ironic's
    /// `change_node_power_state`: under the node's reservation (a node a
    /// flow holds is NodeLocked), the target recorded at once, the action
    /// in the background, the lock held until the BMC has answered.
    pub async fn request_power(
        self: &Arc<Self>,
        ident: &str,
        action: PowerAction,
    ) -> Result<Node, RequestError> {
        let node = self.store.get_node(ident).await?;
        PowerDriver::for_node(&node).map_err(|e| RequestError::Invalid(e.to_string()))?;
        let lock = self.locked(&node.uuid).await?;
        let node = self
            .store
            .update_node::<StoreError, _>(&node.uuid, |n| {
                n.target_power_state = Some(action.result().to_string());
                Ok(())
            })
            .await?;
        let flows = self.clone();
        let started = node.clone();
        tokio::spawn(async move {
            // Success records the new state (set_power); a failure clears
            // the target and says why. Ironic clears an old last_error on
            // success.
            let recorded = match set_power(&flows, &started, action).await {
                Ok(()) if started.last_error.is_none() => Ok(()),
                outcome => {
                    let error = outcome
                        .err()
                        .map(|e| format!("Failed to change power state: {e:#}"));
                    flows
                        .store
                        .update_node::<StoreError, _>(&started.uuid, |n| {
                            n.target_power_state = None;
                            n.last_error = error;
                            Ok(())
                        })
                        .await
                        .map(drop)
                }
            };
            if let Err(e) = recorded {
                tracing::warn!(node = %started.uuid, error = %e, "could not record the power action's outcome");
            }
            lock.release().await;
        });
        Ok(node)
    }

    /// `PUT /v1/nodes/{id}/management/boot_device`, under the node's
    /// reservation and inside the request, as Ironic's `set_boot_device`.
    pub async fn request_boot_device(
        self: &Arc<Self>,
        ident: &str,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), RequestError> {
        let node = self.store.get_node(ident).await?;
        PowerDriver::for_node(&node).map_err(|e| RequestError::Invalid(e.to_string()))?;
        let lock = self.locked(&node.uuid).await?;
        let outcome = set_boot_device(self, &node, device, persistent).await;
        lock.release().await;
        outcome.map_err(|e| RequestError::Invalid(format!("{e:#}")))
    }
}
