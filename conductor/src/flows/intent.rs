//! No step command sent twice. A step's agent command is recorded in two
//! writes around the send: first the intent (the command, the step and
//! its index, and how many commands the agent had listed), then the id of
//! the command the agent started. A conductor that dies, or loses its
//! database, between the two leaves only the intent. Whoever continues the
//! flow looks for the command the agent started for it (IPA's command list
//! only grows, and it runs one command at a time) and follows that one;
//! it sends the step again only if the agent never got it.

use ferrite_protocol::CommandResult;
use serde_json::{json, Map, Value};
use tracing::info;

use super::Flows;
use crate::agent_client::{short_command_name, AgentClient};
use crate::store::StoreError;

/// In `driver_internal_info` from just before a step's command is sent
/// until its id is recorded.
pub const KEY: &str = "agent_command_intent";

/// Send the command of step `index` (`step` as the node shows it), with
/// the intent recorded first.
pub async fn send(
    flows: &Flows,
    uuid: &str,
    client: &AgentClient,
    command: &str,
    params: Map<String, Value>,
    index: usize,
    step: &Value,
) -> anyhow::Result<CommandResult> {
    let seen = client.commands().await?.len();
    let intent = json!({"command": command, "index": index, "seen": seen, "step": step});
    flows
        .store
        .update_node::<StoreError, _>(uuid, |n| {
            n.driver_internal_info.insert(KEY.into(), intent);
            Ok(())
        })
        .await?;
    Ok(client.run(command, params, false).await?)
}

/// What an intent left behind comes to.
pub enum Pending {
    /// The agent started it: follow this command as step `index`.
    Started {
        index: usize,
        step: Value,
        id: String,
    },
    /// The agent never got it: start the step again.
    NotSent,
}

/// The intent a node was left with, looked up in the agent's command list.
pub async fn pending(
    client: &AgentClient,
    intent: Option<&Value>,
) -> anyhow::Result<Option<Pending>> {
    let Some(intent) = intent else {
        return Ok(None);
    };
    let (Some(command), Some(index), Some(seen)) = (
        intent["command"].as_str(),
        intent["index"].as_u64(),
        intent["seen"].as_u64(),
    ) else {
        return Ok(Some(Pending::NotSent));
    };
    let name = short_command_name(command);
    let commands = client.commands().await?;
    let started = commands
        .iter()
        .skip(seen as usize)
        .find(|c| short_command_name(&c.command_name) == name);
    Ok(Some(match started {
        Some(c) => {
            info!(command, id = %c.id, "the agent started this step's command before its id was recorded; following it");
            Pending::Started {
                index: index as usize,
                step: intent["step"].clone(),
                id: c.id.clone(),
            }
        }
        None => Pending::NotSent,
    }))
}

/// Forget an intent whose command the agent never got.
pub async fn forget(flows: &Flows, uuid: &str) -> anyhow::Result<()> {
    flows
        .store
        .update_node::<StoreError, _>(uuid, |n| {
            n.driver_internal_info.remove(KEY);
            Ok(())
        })
        .await?;
    Ok(())
}
