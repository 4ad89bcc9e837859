//! The deploy step list, as Ironic's `conductor/steps.py` builds it: the
//! conductor's own (out-of-band) steps of the `direct` deploy interface,
//! the agent's in-band deploy steps (`deploy.get_deploy_steps`, cached in
//! `driver_internal_info.agent_cached_deploy_steps`), and the operator's
//! `deploy_steps` (`driver_internal_info.user_deploy_steps`), which
//! override a same-named step's priority and arguments; priority 0
//! disables a step. Highest priority first, then the interface's rank.

use std::collections::BTreeMap;

use anyhow::Context;
use ferrite_protocol::node::Node;
use serde_json::{json, Map, Value};
use tracing::info;

use crate::agent_clients::AgentClients;
use crate::node_view::node_secure_dict;
use crate::pyrepr::repr;
use crate::store::{Store, StoreError};
use crate::time::internal_now;

pub const USER_STEPS: &str = "user_deploy_steps";
pub const STEPS: &str = "deploy_steps";
pub const INDEX: &str = "deploy_step_index";
pub const AGENT_CACHE: &str = "agent_cached_deploy_steps";

/// The `direct` deploy interface's own steps (`@base.deploy_step`).
pub const DEPLOY: &str = "deploy";
pub const WRITE_IMAGE: &str = "write_image";
pub const PREPARE_INSTANCE_BOOT: &str = "prepare_instance_boot";
pub const TEAR_DOWN_AGENT: &str = "tear_down_agent";
const OOB: &[(&str, i64)] = &[
    (DEPLOY, 100),
    (WRITE_IMAGE, 80),
    (PREPARE_INSTANCE_BOOT, 60),
    (TEAR_DOWN_AGENT, 40),
    ("switch_to_tenant_network", 30),
    ("boot_instance", 20),
];

/// Ironic's disallowed deploy steps (`[api]disallow_deploy_steps` default).
const DISALLOWED: &[&str] = &["vendor.send_raw"];

/// Steps the conductor resolves itself; never validated against drivers.
const RESERVED: &[&str] = &["power_on", "power_off", "reboot", "hold", "wait"];

/// `DEPLOYING_INTERFACE_PRIORITY`: the tie-break between equal priorities.
fn interface_rank(interface: &str) -> i64 {
    match interface {
        "vendor" => 7,
        "power" => 6,
        "management" => 5,
        "firmware" => 4,
        "deploy" => 3,
        "bios" => 2,
        "raid" => 1,
        _ => 0,
    }
}

fn text<'a>(step: &'a Value, key: &str) -> &'a str {
    step.get(key).and_then(Value::as_str).unwrap_or_default()
}

pub fn priority(step: &Value) -> i64 {
    step.get("priority").and_then(Value::as_i64).unwrap_or(0)
}

/// `interface.step`.
pub fn step_id(step: &Value) -> String {
    format!("{}.{}", text(step, "interface"), text(step, "step"))
}

fn same_step(a: &Value, b: &Value) -> bool {
    text(a, "interface") == text(b, "interface") && text(a, "step") == text(b, "step")
}

/// A step the conductor runs itself rather than the agent.
pub fn is_out_of_band(step: &Value) -> bool {
    text(step, "interface") == "deploy" && OOB.iter().any(|(name, _)| *name == text(step, "step"))
}

fn oob_steps() -> Vec<Value> {
    OOB.iter()
        .map(|(step, priority)| {
            json!({"interface": "deploy", "step": step, "priority": priority,
                   "argsinfo": null, "requires_ramdisk": true})
        })
        .collect()
}

/// The driver's steps: out-of-band ones, then the agent's in-band ones of
/// the deploy interface (unless shadowed by an out-of-band one) and of the
/// raid interface when it is `agent`.
fn driver_steps(node: &Node) -> Vec<Value> {
    let mut steps = oob_steps();
    let cached = node
        .driver_internal_info
        .get(AGENT_CACHE)
        .and_then(Value::as_object);
    let in_band = |interface: &str| -> Vec<Value> {
        cached
            .and_then(|c| c.get(interface))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for step in in_band("deploy") {
        if !steps.iter().any(|s| same_step(s, &step)) {
            steps.push(step);
        }
    }
    if node.raid_interface.as_deref().unwrap_or("agent") == "agent" {
        steps.extend(in_band("raid"));
    }
    steps
}

/// `[api]disallow_deploy_steps`: Ironic's `StepNotAllowed`.
pub fn check_disallowed(user_steps: &[Value]) -> Result<(), String> {
    match user_steps
        .iter()
        .map(step_id)
        .find(|id| DISALLOWED.contains(&id.as_str()))
    {
        Some(id) => Err(format!(
            "deploy step '{id}' is not allowed. Disallowed by operator configuration [api]disallow_deploy_steps."
        )),
        None => Ok(()),
    }
}

/// Ironic's `_validate_user_step` for a deploy step.
fn step_errors(user: &Value, driver: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let empty = Map::new();
    let argsinfo = driver
        .get("argsinfo")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let args = user
        .get("args")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let unexpected: Vec<&str> = args
        .keys()
        .filter(|k| !argsinfo.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !unexpected.is_empty() {
        errors.push(format!(
            "deploy step {} has these unexpected arguments: {}",
            repr(user),
            unexpected.join(", ")
        ));
    }
    if priority(user) > 0 {
        let missing: Vec<String> = argsinfo
            .iter()
            .filter(|(name, info)| info["required"] == true && !args.contains_key(*name))
            .map(|(name, info)| match info["description"].as_str() {
                Some(d) if !d.is_empty() => format!("{name} ({d})"),
                _ => name.clone(),
            })
            .collect();
        if !missing.is_empty() {
            errors.push(format!(
                "deploy step {} is missing these required arguments: {}",
                repr(user),
                missing.join(", ")
            ));
        }
        if text(driver, "interface") == "deploy" && text(driver, "step") == DEPLOY {
            errors.push(format!(
                "deploy step {} on interface {} is a core step and cannot be overridden by user steps. It may be disabled by setting the priority to 0",
                text(user, "step"),
                text(user, "interface")
            ));
        }
    }
    errors
}

/// Ironic's `_validate_user_deploy_steps` on the `deploy_steps` argument:
/// the steps the driver knows, or the error text. `skip_missing` lets steps
/// pass that only the agent may know (before it has booted).
pub fn validate_user(
    node: &Node,
    user_steps: &[Value],
    skip_missing: bool,
) -> Result<Vec<Value>, String> {
    let driver = driver_steps(node);
    let mut errors = Vec::new();
    let mut valid: Vec<Value> = Vec::new();
    for user in user_steps {
        if RESERVED.contains(&text(user, "step")) {
            continue;
        }
        let Some(known) = driver.iter().find(|d| same_step(d, user)) else {
            if !skip_missing {
                errors.push(format!(
                    "node does not support this deploy step: {}",
                    repr(user)
                ));
            }
            continue;
        };
        errors.extend(step_errors(user, known));
        valid.push(user.clone());
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for s in &valid {
        *counts.entry(step_id(s)).or_default() += 1;
    }
    let duplicates: Vec<String> = counts
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id)
        .collect();
    if !duplicates.is_empty() {
        errors.push(format!(
            "deploy steps from all deploy templates matching this node's instance traits cannot have the same interface and step. Duplicate deploy steps for {}",
            duplicates.join(", ")
        ));
    }
    if errors.is_empty() {
        Ok(valid)
    } else {
        Err(format!(
            "Validation of deploy steps from \"deploy steps\" argument failed.{}",
            errors.join("; ")
        ))
    }
}

/// The node's stored `deploy_steps` argument.
pub fn user_steps(node: &Node) -> Vec<Value> {
    node.driver_internal_info
        .get(USER_STEPS)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Ironic's `_get_all_deployment_steps` once the agent's steps are known:
/// enabled driver steps not overridden by the operator, the operator's
/// enabled steps, highest priority first (stable for equal keys).
pub fn plan(node: &Node) -> Result<Vec<Value>, String> {
    let user = validate_user(node, &user_steps(node), false)?;
    let mut steps: Vec<Value> = driver_steps(node)
        .into_iter()
        .filter(|d| priority(d) > 0 && !user.iter().any(|u| same_step(u, d)))
        .collect();
    steps.extend(user.into_iter().filter(|u| priority(u) > 0));
    steps.retain(|s| !DISALLOWED.contains(&step_id(s).as_str()));
    steps.sort_by_key(|s| std::cmp::Reverse((priority(s), interface_rank(text(s, "interface")))));
    // The agent is powered off by tear_down_agent: an in-band step after it
    // could only fail.
    if let Some(down) = steps
        .iter()
        .position(|s| is_out_of_band(s) && text(s, "step") == TEAR_DOWN_AGENT)
    {
        if let Some(late) = steps[down..].iter().find(|s| !is_out_of_band(s)) {
            return Err(format!(
                "deploy step {} (priority {}) runs in the agent, which deploy.tear_down_agent (priority 40) has stopped by then",
                step_id(late),
                priority(late)
            ));
        }
    }
    Ok(steps)
}

/// Ask the agent for its deploy steps and cache them on the node, as
/// Ironic's `refresh_steps(task, 'deploy')`.
pub async fn refresh(store: &Store, agents: &AgentClients, uuid: &str) -> anyhow::Result<()> {
    let node = store.get_node(uuid).await?;
    let client = agents.for_node(&node)?;
    let ports = super::steps_cache::node_ports(store, uuid).await?;
    let mut params = Map::new();
    params.insert("node".into(), node_secure_dict(&node));
    params.insert("ports".into(), Value::Array(ports));
    let answer = client
        .run("deploy.get_deploy_steps", params, true)
        .await
        .context("fetching deploy steps from the agent")?;
    let result = answer.command_result.unwrap_or(Value::Null);
    let (Some(by_manager), Some(versions)) = (
        result.get("deploy_steps").and_then(Value::as_object),
        result.get("hardware_manager_version"),
    ) else {
        anyhow::bail!(
            "agent get_deploy_steps for node {uuid} returned an invalid result. Keys: deploy_steps, hardware_manager_version are needed in result: {}",
            repr(&result)
        );
    };
    let mut by_interface: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for step in by_manager.values().filter_map(Value::as_array).flatten() {
        if ["interface", "step", "priority"]
            .iter()
            .any(|k| step.get(*k).is_none())
        {
            anyhow::bail!(
                "agent get_deploy_steps for node {uuid} returned an invalid deploy step. Keys: interface, step, priority are needed in step: {}",
                repr(step)
            );
        }
        by_interface
            .entry(text(step, "interface").to_string())
            .or_default()
            .push(step.clone());
    }
    let versions = versions.clone();
    store
        .update_node::<StoreError, _>(uuid, |n| {
            let dii = &mut n.driver_internal_info;
            dii.insert(AGENT_CACHE.into(), json!(by_interface));
            dii.insert(
                "agent_cached_deploy_steps_refreshed".into(),
                json!(internal_now()),
            );
            dii.insert("hardware_manager_version".into(), versions);
            Ok(())
        })
        .await?;
    info!(node = %uuid, "cached the agent's deploy steps");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(agent: Value, user: Value) -> Node {
        let mut n = Node {
            uuid: "u".into(),
            ..Default::default()
        };
        n.driver_internal_info.insert(AGENT_CACHE.into(), agent);
        n.driver_internal_info.insert(USER_STEPS.into(), user);
        n
    }

    fn agent() -> Value {
        json!({
            "deploy": [
                {"interface": "deploy", "step": "write_image", "priority": 0},
                {"interface": "deploy", "step": "inject_files", "priority": 0,
                 "argsinfo": {"files": {"required": false}, "verify_ca": {"required": false}}},
                {"interface": "deploy", "step": "erase_devices_metadata", "priority": 0}],
            "raid": [{"interface": "raid", "step": "apply_configuration", "priority": 0,
                      "argsinfo": {"raid_config": {"description": "The RAID configuration to apply.", "required": true},
                                   "delete_existing": {"required": false}}}],
        })
    }

    fn names(steps: &[Value]) -> Vec<String> {
        steps
            .iter()
            .map(|s| format!("{}:{}", step_id(s), priority(s)))
            .collect()
    }

    #[test]
    fn user_steps_merge_with_the_driver_steps() {
        let n = node(
            agent(),
            json!([{"interface": "deploy", "step": "inject_files", "args": {"files": []}, "priority": 50},
                   {"interface": "raid", "step": "apply_configuration", "args": {"raid_config": {}}, "priority": 90},
                   {"interface": "deploy", "step": "prepare_instance_boot", "args": {}, "priority": 0}]),
        );
        assert_eq!(
            names(&plan(&n).unwrap()),
            [
                "deploy.deploy:100",
                "raid.apply_configuration:90",
                "deploy.write_image:80",
                "deploy.inject_files:50",
                "deploy.tear_down_agent:40",
                "deploy.switch_to_tenant_network:30",
                "deploy.boot_instance:20"
            ]
        );
        // Without user steps: the driver's enabled steps only.
        let plain = node(agent(), json!([]));
        assert_eq!(plan(&plain).unwrap().len(), 6);
    }

    #[test]
    fn ironic_validation_texts() {
        let unknown = json!([{"interface": "deploy", "step": "nope", "args": {}, "priority": 50}]);
        let n = node(agent(), unknown.clone());
        // Before the agent's steps are known an unknown step may be in-band.
        assert!(validate_user(&n, unknown.as_array().unwrap(), true).is_ok());
        assert_eq!(
            plan(&n).unwrap_err(),
            "Validation of deploy steps from \"deploy steps\" argument failed.node does not support this deploy step: {'args': {}, 'interface': 'deploy', 'priority': 50, 'step': 'nope'}"
        );
        let bad = json!([{"interface": "deploy", "step": "write_image", "args": {"x": 1}, "priority": 85},
                         {"interface": "deploy", "step": "deploy", "args": {}, "priority": 10},
                         {"interface": "raid", "step": "apply_configuration", "args": {}, "priority": 5}]);
        let n = node(agent(), bad.clone());
        assert_eq!(
            validate_user(&n, bad.as_array().unwrap(), false).unwrap_err(),
            "Validation of deploy steps from \"deploy steps\" argument failed.\
             deploy step {'args': {'x': 1}, 'interface': 'deploy', 'priority': 85, 'step': 'write_image'} has these unexpected arguments: x; \
             deploy step deploy on interface deploy is a core step and cannot be overridden by user steps. It may be disabled by setting the priority to 0; \
             deploy step {'args': {}, 'interface': 'raid', 'priority': 5, 'step': 'apply_configuration'} is missing these required arguments: raid_config (The RAID configuration to apply.)"
        );
        let twice = json!([{"interface": "deploy", "step": "inject_files", "args": {}, "priority": 50},
                           {"interface": "deploy", "step": "inject_files", "args": {}, "priority": 45}]);
        assert!(validate_user(&n, twice.as_array().unwrap(), false)
            .unwrap_err()
            .ends_with("Duplicate deploy steps for deploy.inject_files"));
        assert_eq!(
            check_disallowed(json!([{"interface": "vendor", "step": "send_raw"}]).as_array().unwrap()).unwrap_err(),
            "deploy step 'vendor.send_raw' is not allowed. Disallowed by operator configuration [api]disallow_deploy_steps."
        );
        let late = node(
            agent(),
            json!([{"interface": "deploy", "step": "inject_files", "args": {}, "priority": 35}]),
        );
        assert!(plan(&late)
            .unwrap_err()
            .contains("deploy.inject_files (priority 35)"));
    }
}
