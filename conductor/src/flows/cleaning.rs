//! Cleaning: automated (on `provide` and after undeploy: the agent's steps
//! with priority > 0, highest first) and manual (`clean` with the steps
//! the operator gave). One `clean.execute_clean_step` per heartbeat round;
//! the step list and position live in `driver_internal_info`.

use ferrite_protocol::node::Node;
use ferrite_protocol::CommandStatus;
use serde_json::{json, Map, Value};
use tracing::info;

use super::intent::{self, Pending};
use super::{logs, power, steps_cache, transition, Flows};
use crate::fsm::Event;
use crate::power::PowerAction;
use crate::provision_state::{NodeStates, ProvisionState as S};
use crate::store::StoreError;

const STEPS: &str = "clean_steps";
const INDEX: &str = "clean_step_index";
const COMMAND: &str = "clean_command_id";
const FINISHING: &str = "cleaning_finishing";

/// Set up a node's cleaning fields for a new run (manual steps or automated).
pub fn reset(node: &mut Node, manual_steps: Option<Vec<Value>>) {
    let dii = &mut node.driver_internal_info;
    for key in [STEPS, INDEX, COMMAND, FINISHING, intent::KEY] {
        dii.remove(key);
    }
    if let Some(steps) = manual_steps {
        dii.insert(STEPS.into(), Value::Array(steps));
    }
    node.clean_step.clear();
}

pub fn finishing(node: &Node) -> bool {
    node.driver_internal_info.contains_key(FINISHING)
}

fn automated_clean_enabled(flows: &Flows, node: &Node) -> bool {
    node.automated_clean.unwrap_or(flows.config.automated_clean)
}

fn is_manual(node: &Node) -> bool {
    node.target_state() == Ok(Some(S::Manageable))
}

/// Right after `provide`, `clean` or undeploy: boot the ramdisk and wait.
pub async fn begin(flows: &Flows, node: &Node) -> anyhow::Result<()> {
    if !is_manual(node) && !automated_clean_enabled(flows, node) {
        info!(node = %node.uuid, "automated cleaning disabled");
        transition::fire(flows, &node.uuid, Event::Done, |_| {}).await?;
        return Ok(());
    }
    let what = format!("Failed to prepare node {} for cleaning", node.uuid);
    flows.boot_and_wait(node, false, &what).await
}

/// Priority overrides from the conductor's settings.
fn priority_override(flows: &Flows, step: &str) -> Option<i64> {
    flows.config.clean_step_priorities.iter().find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == step).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The automated step list from the agent's cached steps.
fn automated_steps(flows: &Flows, node: &Node) -> Vec<Value> {
    let mut steps: Vec<Value> = node
        .driver_internal_info
        .get(steps_cache::CACHE_KEY)
        .and_then(Value::as_object)
        .map(|by_iface| {
            by_iface
                .values()
                .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    for s in steps.iter_mut() {
        let name = s["step"].as_str().unwrap_or_default().to_string();
        if let Some(p) = priority_override(flows, &name) {
            s["priority"] = json!(p);
        }
    }
    steps.retain(|s| s["priority"].as_i64().unwrap_or(0) > 0);
    // Highest priority first; stable for equal priorities.
    steps.sort_by_key(|s| std::cmp::Reverse(s["priority"].as_i64().unwrap_or(0)));
    steps
}

/// Manual steps must be ones the agent offers (Ironic validates them).
fn check_manual(node: &Node, steps: &[Value]) -> Result<(), String> {
    let offered: Vec<(String, String)> = node
        .driver_internal_info
        .get(steps_cache::CACHE_KEY)
        .and_then(Value::as_object)
        .map(|m| {
            m.values()
                .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                .map(|s| {
                    (
                        s["interface"].as_str().unwrap_or_default().to_string(),
                        s["step"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    for s in steps {
        let key = (
            s["interface"].as_str().unwrap_or_default().to_string(),
            s["step"].as_str().unwrap_or_default().to_string(),
        );
        if !offered.contains(&key) {
            return Err(format!(
                "Node {} does not support the clean step {} of interface {}",
                node.uuid, key.1, key.0
            ));
        }
    }
    Ok(())
}

/// Ironic's agent RAID post-step hooks: a finished `create_configuration`
/// stores the agent's result as the node's `raid_config` (with
/// `last_updated`), `delete_configuration` empties it.
async fn record_raid_result(
    flows: &Flows,
    uuid: &str,
    step: &Value,
    result: Option<&Value>,
) -> Result<(), StoreError> {
    if step["interface"] != "raid" {
        return Ok(());
    }
    let created = result
        .and_then(|r| r.get("clean_result"))
        .and_then(|r| r.get("logical_disks"))
        .filter(|l| l.is_array())
        .cloned();
    let update: Option<Map<String, Value>> = match step["step"].as_str() {
        Some("delete_configuration") => Some(Map::new()),
        Some("create_configuration") => created.map(|lds| {
            let mut m = Map::new();
            m.insert("logical_disks".into(), lds);
            m.insert("last_updated".into(), json!(crate::time::internal_now()));
            m
        }),
        _ => None,
    };
    if let Some(raid_config) = update {
        flows
            .store
            .update_node::<StoreError, _>(uuid, |n| {
                n.raid_config = raid_config;
                Ok(())
            })
            .await?;
    }
    Ok(())
}

/// Clean wait, on each heartbeat: follow the running step, start the next,
/// or finish.
pub async fn on_heartbeat(flows: &Flows, node: &Node) -> anyhow::Result<()> {
    let uuid = &node.uuid;
    if !node
        .driver_internal_info
        .contains_key(steps_cache::CACHE_KEY)
    {
        steps_cache::refresh_clean_steps(&flows.store, &flows.agents, uuid, false).await?;
    }
    let mut node = flows.store.get_node(uuid).await?;
    let steps: Vec<Value> = match node
        .driver_internal_info
        .get(STEPS)
        .and_then(Value::as_array)
    {
        Some(s) => s.clone(),
        None => {
            let s = automated_steps(flows, &node);
            node = flows
                .store
                .update_node::<StoreError, _>(uuid, |n| {
                    n.driver_internal_info
                        .insert(STEPS.into(), Value::Array(s.clone()));
                    Ok(())
                })
                .await?;
            s
        }
    };
    if is_manual(&node) && !node.driver_internal_info.contains_key(INDEX) {
        if let Err(e) = check_manual(&node, &steps) {
            transition::fail(flows, uuid, &e).await?;
            return Ok(());
        }
    }
    let client = flows.agents.for_node(&node)?;
    if !node.driver_internal_info.contains_key(COMMAND) {
        match intent::pending(&client, node.driver_internal_info.get(intent::KEY)).await? {
            Some(Pending::Started { index, step, id }) => {
                node = started(flows, uuid, index, &id, &step).await?;
            }
            Some(Pending::NotSent) => intent::forget(flows, uuid).await?,
            None => {}
        }
    }
    let mut index = node
        .driver_internal_info
        .get(INDEX)
        .and_then(Value::as_u64)
        .map(|i| i as usize);

    if let (Some(i), Some(id)) = (
        index,
        node.driver_internal_info
            .get(COMMAND)
            .and_then(Value::as_str),
    ) {
        let commands = client.commands().await?;
        let Some(cmd) = commands.iter().rev().find(|c| c.id == id) else {
            let message = format!(
                "Agent lost the running clean step {} (was the ramdisk rebooted?)",
                steps.get(i).cloned().unwrap_or_default()
            );
            let message = logs::on_failure(flows, &node, Some(logs::CLEANING), message).await;
            transition::fail(flows, uuid, &message).await?;
            return Ok(());
        };
        match cmd.command_status {
            CommandStatus::Running => return Ok(()),
            CommandStatus::Succeeded => {
                info!(node = %uuid, step = %steps[i], "clean step done");
                record_raid_result(flows, uuid, &steps[i], cmd.command_result.as_ref()).await?;
                index = Some(i + 1);
            }
            CommandStatus::CleanVersionMismatch => {
                info!(node = %uuid, "hardware manager versions changed; restarting cleaning");
                flows
                    .store
                    .update_node::<StoreError, _>(uuid, |n| {
                        n.driver_internal_info.remove(steps_cache::CACHE_KEY);
                        n.driver_internal_info.remove(INDEX);
                        n.driver_internal_info.remove(COMMAND);
                        if !is_manual(n) {
                            n.driver_internal_info.remove(STEPS);
                        }
                        Ok(())
                    })
                    .await?;
                return Ok(());
            }
            _ => {
                let detail = cmd.error_summary().to_string();
                let message = format!(
                    "Agent returned error for clean step {} on node {uuid} : {detail}.",
                    steps[i]
                );
                let message = logs::on_failure(flows, &node, Some(logs::CLEANING), message).await;
                transition::fail(flows, uuid, &message).await?;
                power::set_power(flows, &node, PowerAction::Off).await.ok();
                return Ok(());
            }
        }
    }
    let next = index.unwrap_or(0);
    let Some(step) = steps.get(next).cloned() else {
        flows
            .store
            .update_node::<StoreError, _>(uuid, |n| {
                n.driver_internal_info.insert(FINISHING.into(), json!(true));
                Ok(())
            })
            .await?;
        let node = flows.store.get_node(uuid).await?;
        return finish(flows, &node).await;
    };
    let params = flows.step_params(&node, &step, "clean_version").await?;
    let command = intent::send(
        flows,
        uuid,
        &client,
        "clean.execute_clean_step",
        params,
        next,
        &step,
    )
    .await?;
    info!(node = %uuid, %step, "clean step started");
    started(flows, uuid, next, &command.id, &step).await?;
    Ok(())
}

/// Step `index` runs as the agent's command `id`.
async fn started(
    flows: &Flows,
    uuid: &str,
    index: usize,
    id: &str,
    step: &Value,
) -> anyhow::Result<Node> {
    Ok(flows
        .store
        .update_node::<StoreError, _>(uuid, |n| {
            n.driver_internal_info.insert(INDEX.into(), json!(index));
            n.driver_internal_info.insert(COMMAND.into(), json!(id));
            n.driver_internal_info.remove(intent::KEY);
            n.clean_step = step.as_object().cloned().unwrap_or_default();
            Ok(())
        })
        .await?)
}

/// All steps done: power off and land in `available` (or `manageable`).
pub async fn finish(flows: &Flows, node: &Node) -> anyhow::Result<()> {
    let uuid = &node.uuid;
    if node.state()? == S::CleanWait {
        transition::fire(flows, uuid, Event::Resume, |_| {}).await?;
    }
    let node = flows.store.get_node(uuid).await?;
    // Ironic keeps the logs with `always` before tearing cleaning down.
    logs::on_success(flows, &node, Some(logs::CLEANING)).await;
    if !flows.config.fast_track {
        if let Err(e) = power::set_power(flows, &node, PowerAction::Off).await {
            transition::fail(
                flows,
                uuid,
                &format!("Failed to tear down cleaning on node {uuid}: {e:#}"),
            )
            .await?;
            return Ok(());
        }
    }
    let manual = is_manual(&node);
    let event = if manual { Event::Manage } else { Event::Done };
    transition::fire(flows, uuid, event, |n| {
        reset(n, None);
        n.set_target_state(None);
    })
    .await?;
    info!(node = %uuid, manual, "cleaning finished");
    Ok(())
}
