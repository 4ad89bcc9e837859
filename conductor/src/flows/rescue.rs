//! Rescue, as Ironic's `agent` rescue interface runs it: keep the tenant's
//! password (and its crypt hash) in `instance_info`, boot the ramdisk, and
//! on its first heartbeat in `rescue wait` hand the agent the hash with
//! `rescue.finalize_rescue`; the agent sets up the rescue user and closes
//! its API, the password is forgotten, the node is in `rescue`. Unrescue
//! boots the instance again. Failures and the callback timeout forget the
//! password too (Ironic's `remove_node_rescue_password`).

use ferrite_protocol::node::Node;
use ferrite_protocol::rescue::{self, FinalizeRescue, SALT_LEN};
use ferrite_protocol::CommandStatus;
use rand::RngCore;
use serde_json::{json, Map, Value};
use tracing::{info, warn};

use super::{power, transition, Flows};
use crate::fsm::Event;
use crate::power::{BootDevice, PowerAction};
use crate::provision_state::{NodeStates, ProvisionState as S};

/// `instance_info` keys: the tenant's password and the hash sent to the agent.
const PASSWORD: &str = "rescue_password";
const HASHED: &str = "hashed_rescue_password";

/// The tenant's rescue password: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RescuePassword(String);

impl RescuePassword {
    /// Ironic's API rule: a non-empty (not only blank) string.
    pub fn new(text: &str) -> Option<Self> {
        (!text.trim().is_empty()).then(|| Self(text.to_string()))
    }
}

impl std::fmt::Debug for RescuePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RescuePassword(***)")
    }
}

/// Ironic's `hash_password`: crypt(3) with a fresh random salt.
pub fn hash_password(
    password: &RescuePassword,
    algorithm: rescue::HashAlgorithm,
) -> Result<String, rescue::CryptError> {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    rescue::crypt_hash(&password.0, &salt, algorithm)
}

/// Ironic's `do_node_rescue`: the password and its hash are on the node
/// before the flow starts.
pub fn store_password(node: &mut Node, password: &RescuePassword, hashed: &str) {
    node.instance_info
        .insert(PASSWORD.into(), json!(password.0));
    node.instance_info.insert(HASHED.into(), json!(hashed));
}

/// Ironic's `remove_node_rescue_password`.
pub fn remove_password(node: &mut Node) {
    node.instance_info.remove(PASSWORD);
    node.instance_info.remove(HASHED);
}

/// `rescue failed` (from `rescuing` or `rescue wait`) with `error`, the
/// password forgotten; then the machine is powered off (Ironic's
/// `rescuing_error_handler`).
pub async fn fail(flows: &Flows, node: &Node, error: &str) -> anyhow::Result<()> {
    warn!(node = %node.uuid, %error, "rescue failed");
    let message = error.to_string();
    transition::fire(flows, &node.uuid, Event::Fail, move |n| {
        n.last_error = Some(message);
        remove_password(n);
        transition::wipe_token_and_url(n);
    })
    .await?;
    let node = flows.store.get_node(&node.uuid).await?;
    if let Err(e) = power::set_power(flows, &node, PowerAction::Off).await {
        warn!(node = %node.uuid, error = %format!("{e:#}"), "power off after the failed rescue failed");
    }
    Ok(())
}

/// Right after `rescue`: boot the ramdisk (the instance is shut down by the
/// reboot) and wait for the agent's call.
pub async fn begin(flows: &Flows, node: &Node) -> anyhow::Result<()> {
    match flows.boot_fresh_ramdisk(node).await {
        Ok(()) => {
            transition::fire(flows, &node.uuid, Event::Wait, |_| {}).await?;
            info!(node = %node.uuid, "rescue ramdisk booting; waiting for its heartbeat");
            Ok(())
        }
        Err(e) => fail(flows, node, &format!("Failed to rescue: {e:#}")).await,
    }
}

/// `rescue wait`, the agent's heartbeat: `rescue.finalize_rescue` with the
/// hash, then `rescue`.
pub async fn on_heartbeat(flows: &Flows, node: &Node) -> anyhow::Result<()> {
    let uuid = &node.uuid;
    let outcome = finalize(flows, node).await;
    if let Err(e) = outcome {
        return fail(
            flows,
            node,
            &format!("Node failed to perform rescue operation: {e:#}"),
        )
        .await;
    }
    transition::fire(flows, uuid, Event::Resume, |_| {}).await?;
    // The agent's API is closed for good: its URL and token are worth
    // nothing now, and the password is the tenant's business.
    transition::fire(flows, uuid, Event::Done, |n| {
        remove_password(n);
        transition::wipe_token_and_url(n);
    })
    .await?;
    info!(node = %uuid, "rescued");
    Ok(())
}

async fn finalize(flows: &Flows, node: &Node) -> anyhow::Result<()> {
    let hashed = node
        .instance_info
        .get(HASHED)
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow::anyhow!("Agent rescue requires rescue_password in instance_info"))?;
    let params = FinalizeRescue {
        rescue_password: hashed.to_string(),
        hashed: true,
    };
    let params: Map<String, Value> = match serde_json::to_value(params)? {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let client = flows.agents.for_node(node)?;
    let result = client.run(rescue::COMMAND, params, true).await?;
    if result.command_status != CommandStatus::Succeeded {
        let detail = result.error_summary().to_string();
        anyhow::bail!("Agent returned bad result for command finalize_rescue: {detail}");
    }
    Ok(())
}

/// An aborted `rescue wait` (now `rescue failed`): power off and forget
/// the password and the agent (Ironic's `_do_node_rescue_abort`).
pub async fn fail_cleanup(flows: &Flows, node: &Node) -> anyhow::Result<()> {
    flows
        .store
        .update_node::<crate::store::StoreError, _>(&node.uuid, |n| {
            remove_password(n);
            transition::wipe_token_and_url(n);
            Ok(())
        })
        .await?;
    power::set_power(flows, node, PowerAction::Off).await
}

/// `rescue_callback_timeout` passed in `rescue wait`.
pub async fn timed_out(flows: &Flows, node: &Node) -> anyhow::Result<()> {
    fail(
        flows,
        node,
        "Timeout reached while waiting for rescue ramdisk callback for node",
    )
    .await
}

/// `unrescue`: power off, boot the instance from its disk again, `active`.
pub async fn unrescue(flows: &Flows, node: &Node) -> anyhow::Result<()> {
    let uuid = &node.uuid;
    let outcome = async {
        power::set_power(flows, node, PowerAction::Off).await?;
        power::set_boot_device(flows, node, BootDevice::Disk, true).await?;
        // The boot script follows the state: `active` boots the local disk.
        transition::fire(flows, uuid, Event::Done, |n| {
            remove_password(n);
            transition::wipe_token_and_url(n);
        })
        .await?;
        let node = flows.store.get_node(uuid).await?;
        power::set_power(flows, &node, PowerAction::On).await
    }
    .await;
    if let Err(e) = outcome {
        let node = flows.store.get_node(uuid).await?;
        if node.state()? == S::Unrescuing {
            let message = format!("Failed to unrescue: {e:#}");
            warn!(node = %uuid, error = %message, "unrescue failed");
            transition::fire(flows, uuid, Event::Fail, move |n| {
                n.last_error = Some(message);
            })
            .await?;
        } else {
            warn!(node = %uuid, error = %format!("{e:#}"), "powering on after unrescue failed");
        }
        return Ok(());
    }
    info!(node = %uuid, "unrescued");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_stored_hashed_and_removed() {
        assert!(RescuePassword::new("  ").is_none());
        let pw = RescuePassword::new("tenant pw").unwrap();
        assert!(!format!("{pw:?}").contains("tenant"));
        let mut node = Node::default();
        let hashed = hash_password(&pw, rescue::HashAlgorithm::Sha256).unwrap();
        store_password(&mut node, &pw, &hashed);
        let hashed = node.instance_info[HASHED].as_str().unwrap().to_string();
        assert!(hashed.starts_with("$5$"), "{hashed}");
        assert!(rescue::crypt_verify("tenant pw", &hashed));
        remove_password(&mut node);
        assert!(node.instance_info.is_empty());
    }
}
