//! Direct deploy, as Ironic's `agent` deploy interface runs it: boot the
//! ramdisk, then the deploy steps in priority order (`deploy_steps`):
//! `write_image` (the agent writes the image; then `get_partition_uuids`),
//! the agent's in-band steps the operator asked for (`inject_files`,
//! `raid.apply_configuration`, ...), `prepare_instance_boot`
//! (`install_bootloader` where the image needs it), and `tear_down_agent`:
//! power off through the agent, boot from disk, `active`. And the reverse:
//! undeploy.

use ferrite_protocol::node::Node;
use ferrite_protocol::CommandStatus;
use serde_json::{json, Map, Value};
use tracing::info;

use super::deploy_steps::{self as steps, AGENT_CACHE, INDEX, STEPS, USER_STEPS};
use super::intent::{self, Pending};
use super::{logs, power, transition, Flows};
use crate::agent_client::AgentClient;
use crate::agent_session;
use crate::fsm::Event;
use crate::power::{BootDevice, PowerAction};
use crate::provision_state::{NodeStates, ProvisionState as S};
use crate::store::StoreError;

const PHASE: &str = "deploy_phase";
const COMMAND: &str = "deploy_command_id";
const PHASE_FINISH: &str = "finishing";

/// The agent's last image-write progress, kept while `write_image` runs.
pub const PROGRESS: &str = "deploy_progress";

/// Everything a deploy keeps in `driver_internal_info` while it runs.
const RUN_KEYS: &[&str] = &[
    PHASE,
    COMMAND,
    intent::KEY,
    STEPS,
    INDEX,
    AGENT_CACHE,
    PROGRESS,
];

pub fn finishing(node: &Node) -> bool {
    node.driver_internal_info.get(PHASE).and_then(Value::as_str) == Some(PHASE_FINISH)
}

fn info_str<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.instance_info
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Ironic's deploy validation of `instance_info`, with its message.
/// `file_allowed` is `[conductor]file_url_allowed_paths`.
pub fn validate(node: &Node, file_allowed: &[std::path::PathBuf]) -> Result<(), String> {
    let mut missing = Vec::new();
    if info_str(node, "image_source").is_none() {
        missing.push("image_source");
    }
    if is_partition_image(node)
        && info_str(node, "root_gb").is_none()
        && node.instance_info.get("root_gb").is_none()
    {
        missing.push("root_gb");
    }
    if !missing.is_empty() {
        return Err(format!(
            "Failed to validate deploy or power info for node {}. Error: Cannot validate image information for node {} because one or more parameters are missing from its instance_info. Missing are: {:?}",
            node.uuid, node.uuid, missing
        ));
    }
    let source = info_str(node, "image_source").unwrap_or_default();
    if !(source.starts_with("http://")
        || source.starts_with("https://")
        || source.starts_with("file://"))
    {
        return Err(format!(
            "Failed to validate deploy or power info for node {}. Error: image_source {source} is not an http(s) or file URL (this conductor has no image service)",
            node.uuid
        ));
    }
    if source.starts_with("file://") {
        super::file_url::check(source, file_allowed).map_err(|why| {
            format!(
                "Failed to validate deploy or power info for node {}. Error: image_source {source} is refused: {why}",
                node.uuid
            )
        })?;
    }
    if info_str(node, "image_checksum").is_none() && info_str(node, "image_os_hash_value").is_none()
    {
        return Err(format!(
            "Failed to validate deploy or power info for node {}. Error: instance_info has neither image_checksum nor image_os_hash_algo/image_os_hash_value",
            node.uuid
        ));
    }
    Ok(())
}

fn is_partition_image(node: &Node) -> bool {
    match info_str(node, "image_type") {
        Some(t) => t == "partition",
        None => info_str(node, "kernel").is_some() && info_str(node, "ramdisk").is_some(),
    }
}

/// The root `install_bootloader` is given: on software RAID Ironic names it
/// by the image's `rootfs_uuid` (`instance_info.image_rootfs_uuid`; there is
/// no Glance here) before what the agent found.
fn bootloader_root(node: &Node, found: Option<String>) -> Option<String> {
    is_software_raid(node)
        .then(|| {
            node.instance_info
                .get("image_rootfs_uuid")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        })
        .flatten()
        .or(found)
}

/// Ironic's `is_software_raid`: a logical disk on the `software` controller.
fn is_software_raid(node: &Node) -> bool {
    node.target_raid_config
        .get("logical_disks")
        .and_then(Value::as_array)
        .is_some_and(|lds| lds.iter().any(|ld| ld["controller"] == "software"))
}

fn boot_mode(node: &Node) -> &'static str {
    let caps = node
        .instance_info
        .get("capabilities")
        .or_else(|| node.properties.get("capabilities"));
    let text = match caps {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    };
    let uefi = node
        .instance_info
        .get("deploy_boot_mode")
        .and_then(Value::as_str)
        == Some("uefi")
        || text.split(',').any(|kv| kv.trim() == "boot_mode:uefi");
    if uefi {
        "uefi"
    } else {
        "bios"
    }
}

/// `image_info` for `write_image`, built as Ironic's `AgentDeploy.write_image` does.
pub fn image_info(node: &Node) -> Value {
    let source = info_str(node, "image_source").unwrap_or_default();
    let id = source.rsplit('/').next().unwrap_or(source);
    let mut info = json!({
        "id": id,
        "urls": [info_str(node, "image_url").unwrap_or(source)],
        "disk_format": info_str(node, "image_disk_format"),
        "container_format": "bare",
        "stream_raw_images": true,
        "checksum": info_str(node, "image_checksum"),
        "os_hash_algo": info_str(node, "image_os_hash_algo"),
        "os_hash_value": info_str(node, "image_os_hash_value"),
        "node_uuid": node.uuid,
    });
    if is_partition_image(node) {
        let num = |k: &str| {
            node.instance_info
                .get(k)
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
                .unwrap_or(0)
        };
        let extra = json!({
            "image_type": "partition",
            "root_gb": num("root_gb"),
            "root_mb": num("root_gb") * 1024,
            "swap_mb": num("swap_mb"),
            "ephemeral_mb": num("ephemeral_gb") * 1024,
            "ephemeral_format": info_str(node, "ephemeral_format"),
            "preserve_ephemeral": node.instance_info.get("preserve_ephemeral").cloned().unwrap_or(json!(false)),
            "deploy_boot_mode": boot_mode(node),
            "boot_option": "local",
            "disk_label": info_str(node, "disk_label"),
            "kernel": info_str(node, "kernel"),
            "ramdisk": info_str(node, "ramdisk"),
        });
        if let (Some(m), Some(e)) = (info.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
    }
    info
}

/// Right after `deploy`/`rebuild`: boot the ramdisk and wait for its call.
pub async fn begin(flows: &Flows, node: &Node) -> anyhow::Result<()> {
    flows
        .store
        .update_node::<StoreError, _>(&node.uuid, |n| {
            // A fast-track agent's steps are asked again, as Ironic's `deploy` step does.
            for key in RUN_KEYS {
                n.driver_internal_info.remove(*key);
            }
            n.deploy_step.clear();
            Ok(())
        })
        .await?;
    let what = format!("Deploy failed for node {}", node.uuid);
    flows.boot_and_wait(node, false, &what).await
}

/// The step now running (its index and command), shown as `deploy_step`.
async fn set_current(
    flows: &Flows,
    uuid: &str,
    index: usize,
    command: Option<&str>,
    step: &Value,
) -> anyhow::Result<()> {
    flows
        .store
        .update_node::<StoreError, _>(uuid, |n| {
            n.driver_internal_info.insert(INDEX.into(), json!(index));
            match command {
                Some(id) => n.driver_internal_info.insert(COMMAND.into(), json!(id)),
                None => n.driver_internal_info.remove(COMMAND),
            };
            n.driver_internal_info.remove(intent::KEY);
            n.deploy_step = step.as_object().cloned().unwrap_or_default();
            Ok(())
        })
        .await?;
    Ok(())
}

/// The agent's logs (`deploy_logs_collect`), `deploy failed`, then power
/// off as Ironic's `[deploy]power_off_after_deploy_failure` (default on)
/// does: through the agent first (it syncs; it is the only way for machines
/// whose power the conductor does not drive), then the power driver.
async fn fail_deploy(flows: &Flows, node: &Node, message: String) -> anyhow::Result<()> {
    let message = logs::on_failure(flows, node, None, message).await;
    transition::fail(flows, &node.uuid, &message).await?;
    if let Ok(client) = flows.agents.for_node(node) {
        if let Err(e) = client.run("standby.power_off", Map::new(), false).await {
            tracing::warn!(node = %node.uuid, error = %e, "power off through the agent failed");
        }
    }
    let node = flows.store.get_node(&node.uuid).await?;
    if let Err(e) = power::set_power(flows, &node, PowerAction::Off).await {
        tracing::warn!(node = %node.uuid, error = %format!("{e:#}"), "power off after the failed deploy failed");
    }
    Ok(())
}

/// The first heartbeat of this ramdisk: its deploy steps, then the step
/// list (Ironic's `validate_deploy_steps` once the agent is up). `None`
/// when the deploy failed.
async fn load_steps(flows: &Flows, node: &Node) -> anyhow::Result<Option<Node>> {
    let uuid = &node.uuid;
    if !node.driver_internal_info.contains_key(AGENT_CACHE) {
        if let Err(e) = steps::refresh(&flows.store, &flows.agents, uuid).await {
            fail_deploy(
                flows,
                node,
                format!("Failed to load in-band deploy steps: {e:#}"),
            )
            .await?;
            return Ok(None);
        }
    }
    let node = flows.store.get_node(uuid).await?;
    if node.driver_internal_info.contains_key(STEPS) {
        return Ok(Some(node));
    }
    let list = match steps::plan(&node) {
        Ok(list) => list,
        Err(e) => {
            fail_deploy(
                flows,
                &node,
                format!("Failed to validate the final deploy steps list for node {uuid}: {e}"),
            )
            .await?;
            return Ok(None);
        }
    };
    // `deploy.deploy` (boot the ramdisk) is what brought the agent here.
    let booted = list
        .iter()
        .position(|s| steps::is_out_of_band(s) && s["step"] == steps::DEPLOY);
    info!(node = %uuid, steps = ?list.iter().map(steps::step_id).collect::<Vec<_>>(), "deploy steps");
    let node = flows
        .store
        .update_node::<StoreError, _>(uuid, |n| {
            n.driver_internal_info
                .insert(STEPS.into(), Value::Array(list.clone()));
            match booted {
                Some(i) => n.driver_internal_info.insert(INDEX.into(), json!(i)),
                None => n.driver_internal_info.remove(INDEX),
            };
            Ok(())
        })
        .await?;
    Ok(Some(node))
}

/// `wait call-back`, each heartbeat: follow the running step, or start the
/// next one.
pub async fn on_heartbeat(flows: &Flows, node: &Node) -> anyhow::Result<()> {
    let uuid = &node.uuid;
    let Some(node) = load_steps(flows, node).await? else {
        return Ok(());
    };
    let list: Vec<Value> = node
        .driver_internal_info
        .get(STEPS)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut index = node
        .driver_internal_info
        .get(INDEX)
        .and_then(Value::as_u64)
        .map(|i| i as usize);
    let client = flows.agents.for_node(&node)?;

    let mut command = node
        .driver_internal_info
        .get(COMMAND)
        .and_then(Value::as_str)
        .map(str::to_string);
    if command.is_none() {
        match intent::pending(&client, node.driver_internal_info.get(intent::KEY)).await? {
            Some(Pending::Started { index: i, step, id }) => {
                set_current(flows, uuid, i, Some(&id), &step).await?;
                (index, command) = (Some(i), Some(id));
            }
            Some(Pending::NotSent) => intent::forget(flows, uuid).await?,
            None => {}
        }
    }
    if let (Some(i), Some(id)) = (index, command) {
        let current = list.get(i).cloned().unwrap_or_default();
        let commands = client.commands().await?;
        let Some(cmd) = commands.iter().rev().find(|c| c.id == id) else {
            return fail_deploy(
                flows,
                &node,
                format!("Agent lost the running deploy command {id}"),
            )
            .await;
        };
        match cmd.command_status {
            CommandStatus::Running => {
                // Progress for operators: the agent's interim result.
                if let Some(progress) = cmd.command_result.as_ref().and_then(|r| r.get("progress"))
                {
                    flows
                        .metrics
                        .image_progress(uuid, node.name.as_deref(), progress);
                    let p = progress.clone();
                    flows
                        .store
                        .update_node::<StoreError, _>(uuid, |n| {
                            n.driver_internal_info.insert(PROGRESS.into(), p);
                            Ok(())
                        })
                        .await?;
                }
                return Ok(());
            }
            CommandStatus::Succeeded => {
                info!(node = %uuid, step = %steps::step_id(&current), "deploy step done");
                after_step(flows, &node, &client, &current, cmd.command_result.as_ref()).await?;
            }
            _ => {
                let detail = cmd.error_summary().to_string();
                return fail_deploy(
                    flows,
                    &node,
                    format!(
                        "Deploy step {} failed on node {uuid}. {detail}",
                        steps::step_id(&current)
                    ),
                )
                .await;
            }
        }
    }
    let node = flows.store.get_node(uuid).await?;
    start_next(flows, &node, &client, &list, index.map_or(0, |i| i + 1)).await
}

/// What a finished step leaves on the node.
async fn after_step(
    flows: &Flows,
    node: &Node,
    client: &AgentClient,
    step: &Value,
    result: Option<&Value>,
) -> anyhow::Result<()> {
    let uuid = &node.uuid;
    match steps::step_id(step).as_str() {
        "deploy.write_image" => {
            let (root, _) = partition_uuids(client).await?;
            let whole_disk = !is_partition_image(node);
            flows
                .store
                .update_node::<StoreError, _>(uuid, |n| {
                    n.driver_internal_info
                        .insert("is_whole_disk_image".into(), json!(whole_disk));
                    n.driver_internal_info
                        .insert("root_uuid_or_disk_id".into(), json!(root));
                    n.driver_internal_info.remove(PROGRESS);
                    Ok(())
                })
                .await?;
        }
        // Ironic's `_create_configuration_final` after the deploy step.
        "raid.apply_configuration" => {
            let created = result
                .and_then(|r| r.get("deploy_result"))
                .and_then(|r| r.get("logical_disks"))
                .filter(|l| l.is_array())
                .cloned();
            if let Some(lds) = created {
                flows
                    .store
                    .update_node::<StoreError, _>(uuid, |n| {
                        n.raid_config = Map::new();
                        n.raid_config.insert("logical_disks".into(), lds);
                        n.raid_config
                            .insert("last_updated".into(), json!(crate::time::internal_now()));
                        Ok(())
                    })
                    .await?;
            }
        }
        _ => {}
    }
    flows
        .store
        .update_node::<StoreError, _>(uuid, |n| {
            n.driver_internal_info.remove(COMMAND);
            Ok(())
        })
        .await?;
    Ok(())
}

/// `standby.get_partition_uuids`: the root and ESP UUIDs.
async fn partition_uuids(client: &AgentClient) -> anyhow::Result<(Option<String>, Option<String>)> {
    let uuids = client
        .run("standby.get_partition_uuids", Map::new(), true)
        .await?;
    let result = uuids.command_result.unwrap_or(Value::Null);
    let get = |k: &str| result.get(k).and_then(Value::as_str).map(str::to_string);
    Ok((get("root uuid"), get("efi system partition uuid")))
}

/// Start the step at `next` or later (the conductor's own steps that need
/// no command are done in passing); the end of the list, or
/// `tear_down_agent`, finishes the deploy.
async fn start_next(
    flows: &Flows,
    node: &Node,
    client: &AgentClient,
    list: &[Value],
    mut next: usize,
) -> anyhow::Result<()> {
    let uuid = &node.uuid;
    loop {
        let Some(step) = list.get(next) else {
            return finish_now(flows, uuid).await;
        };
        if !steps::is_out_of_band(step) {
            execute_step(flows, node, client, next, step).await?;
            info!(node = %uuid, step = %steps::step_id(step), "deploy step started");
            return Ok(());
        }
        match step["step"].as_str().unwrap_or_default() {
            steps::WRITE_IMAGE => {
                let step = json!({"interface": "deploy", "step": "write_image",
                                  "priority": step["priority"],
                                  "args": {"image_info": image_info(node),
                                           "configdrive": node.instance_info.get("configdrive").cloned().unwrap_or(Value::Null)}});
                execute_step(flows, node, client, next, &step).await?;
                info!(node = %uuid, "write_image started");
                return Ok(());
            }
            steps::PREPARE_INSTANCE_BOOT => {
                // Ironic installs a bootloader for partition images, for
                // whole-disk images in UEFI (the NVRAM entry), and on
                // software RAID (the holders' boot partitions).
                let whole_disk = !is_partition_image(node);
                let uefi = boot_mode(node) == "uefi";
                if whole_disk && !uefi && !is_software_raid(node) {
                    next += 1;
                    continue;
                }
                let (root, efi) = partition_uuids(client).await?;
                let root = bootloader_root(node, root);
                let mut params = Map::new();
                params.insert("root_uuid".into(), json!(root));
                params.insert("efi_system_part_uuid".into(), json!(efi));
                params.insert("prep_boot_part_uuid".into(), Value::Null);
                params.insert("target_boot_mode".into(), json!(boot_mode(node)));
                let started = intent::send(
                    flows,
                    uuid,
                    client,
                    "image.install_bootloader",
                    params,
                    next,
                    step,
                )
                .await?;
                return set_current(flows, uuid, next, Some(&started.id), step).await;
            }
            // `deploy` booted the ramdisk already.
            steps::DEPLOY => next += 1,
            // tear_down_agent, switch_to_tenant_network, boot_instance.
            _ => return finish_now(flows, uuid).await,
        }
    }
}

/// `deploy.execute_deploy_step` for step `index` (its intent recorded
/// first), then the step as the node's current one.
async fn execute_step(
    flows: &Flows,
    node: &Node,
    client: &AgentClient,
    index: usize,
    step: &Value,
) -> anyhow::Result<()> {
    let params = flows.step_params(node, step, "deploy_version").await?;
    let started = intent::send(
        flows,
        &node.uuid,
        client,
        "deploy.execute_deploy_step",
        params,
        index,
        step,
    )
    .await?;
    set_current(flows, &node.uuid, index, Some(&started.id), step).await
}

async fn finish_now(flows: &Flows, uuid: &str) -> anyhow::Result<()> {
    let step =
        json!({"interface": "deploy", "step": "tear_down_agent", "priority": 40, "args": {}});
    flows
        .store
        .update_node::<StoreError, _>(uuid, |n| {
            n.driver_internal_info
                .insert(PHASE.into(), json!(PHASE_FINISH));
            n.driver_internal_info.remove(COMMAND);
            n.deploy_step = step.as_object().cloned().unwrap_or_default();
            Ok(())
        })
        .await?;
    let node = flows.store.get_node(uuid).await?;
    finish(flows, &node).await
}

/// Power off through the agent (it syncs first), boot from disk, power on, `active`.
pub async fn finish(flows: &Flows, node: &Node) -> anyhow::Result<()> {
    let uuid = &node.uuid;
    if node.state()? == S::DeployWait {
        transition::fire(flows, uuid, Event::Resume, |_| {}).await?;
    }
    if let Ok(client) = flows.agents.for_node(node) {
        // Ironic's tear_down_agent keeps the logs first with `always`.
        logs::on_success(flows, node, None).await;
        if let Err(e) = client.run("standby.sync", Map::new(), true).await {
            tracing::warn!(node = %uuid, error = %e, "sync through the agent failed");
        }
        match client.run("standby.power_off", Map::new(), false).await {
            Ok(_) => info!(node = %uuid, "agent powering the machine off"),
            Err(e) => {
                tracing::warn!(node = %uuid, error = %e, "power off through the agent failed; using the power driver")
            }
        }
    }
    let node = flows.store.get_node(uuid).await?;
    let outcome = async {
        power::set_power(flows, &node, PowerAction::Off).await?;
        power::set_boot_device(flows, &node, BootDevice::Disk, true).await?;
        // The boot script follows the state: `active` boots the local disk.
        transition::fire(flows, uuid, Event::Done, |n| {
            n.deploy_step.clear();
            // Ironic's `wipe_deploy_internal_info` (the last heartbeat
            // stays: the history of the boot that deployed).
            for key in RUN_KEYS.iter().chain(&[
                USER_STEPS,
                agent_session::URL,
                agent_session::TOKEN,
                agent_session::VERIFY_CA,
            ]) {
                n.driver_internal_info.remove(*key);
            }
        })
        .await?;
        let node = flows.store.get_node(uuid).await?;
        power::set_power(flows, &node, PowerAction::On).await
    }
    .await;
    if let Err(e) = outcome {
        let node = flows.store.get_node(uuid).await?;
        if node.state()? != S::Active {
            transition::fail(
                flows,
                uuid,
                &format!("Error rebooting node {uuid} after deploy: {e:#}"),
            )
            .await?;
        } else {
            tracing::warn!(node = %uuid, error = %format!("{e:#}"), "powering on after deploy failed");
        }
        return Ok(());
    }
    info!(node = %uuid, "deployed");
    Ok(())
}

/// `deleted`/`undeploy`: power off, forget the instance, then clean.
pub async fn tear_down(flows: &Flows, node: &Node) -> anyhow::Result<()> {
    let uuid = &node.uuid;
    if let Err(e) = power::set_power(flows, node, PowerAction::Off).await {
        transition::fail(
            flows,
            uuid,
            &format!("Failed to tear down node {uuid}: {e:#}"),
        )
        .await?;
        return Ok(());
    }
    let node = transition::fire(flows, uuid, Event::Clean, |n| {
        n.instance_info.clear();
        n.instance_uuid = None;
        for key in
            RUN_KEYS
                .iter()
                .chain(&[USER_STEPS, "is_whole_disk_image", "root_uuid_or_disk_id"])
        {
            n.driver_internal_info.remove(*key);
        }
        n.deploy_step.clear();
        super::cleaning::reset(n, None);
    })
    .await?;
    super::cleaning::begin(flows, &node).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(info: Value) -> Node {
        Node {
            uuid: "u".into(),
            instance_info: info.as_object().cloned().unwrap_or_default(),
            ..Default::default()
        }
    }

    #[test]
    fn software_raid_root_is_the_images_rootfs_uuid_first() {
        let found = Some("from-agent".to_string());
        let mut n = node(json!({"image_rootfs_uuid": "from-image"}));
        assert_eq!(
            bootloader_root(&n, found.clone()),
            found,
            "not software RAID"
        );
        n.target_raid_config = json!({"logical_disks": [
            {"size_gb": "MAX", "raid_level": "1", "controller": "software"}]})
        .as_object()
        .cloned()
        .unwrap();
        assert_eq!(
            bootloader_root(&n, found.clone()).as_deref(),
            Some("from-image")
        );
        n.instance_info.remove("image_rootfs_uuid");
        assert_eq!(bootloader_root(&n, found.clone()), found);
    }

    #[test]
    fn validation_and_image_info() {
        let err = validate(&node(json!({})), &[]).unwrap_err();
        assert!(err.contains("Missing are: [\"image_source\"]"), "{err}");
        let ok = node(
            json!({"image_source": "http://h/img/disk.qcow2", "image_checksum": "abc",
                             "image_disk_format": "qcow2"}),
        );
        assert!(validate(&ok, &[]).is_ok());
        let info = image_info(&ok);
        assert_eq!(info["id"], "disk.qcow2");
        assert_eq!(info["urls"], json!(["http://h/img/disk.qcow2"]));
        assert_eq!(info["disk_format"], "qcow2");
        assert!(info.get("image_type").is_none());
        let part = node(
            json!({"image_source": "http://h/p.img", "image_checksum": "abc", "kernel": "k",
                               "ramdisk": "r", "root_gb": "10", "capabilities": "boot_mode:uefi"}),
        );
        let info = image_info(&part);
        assert_eq!(info["image_type"], "partition");
        assert_eq!(info["root_mb"], 10240);
        assert_eq!(info["deploy_boot_mode"], "uefi");
        let glance = node(json!({"image_source": "7b2f-glance-id", "image_checksum": "abc"}));
        assert!(validate(&glance, &[])
            .unwrap_err()
            .contains("not an http(s)"));
    }
}
