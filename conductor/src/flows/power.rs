//! Power and boot device actions inside flows, recorded on the node.

use ferrite_protocol::node::Node;
use serde_json::json;

use super::Flows;
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
