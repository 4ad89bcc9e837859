//! Fetching the ramdisk's logs at the end of an agent-driven flow, as
//! Ironic's `collect_ramdisk_logs`: when a deploy or clean step fails
//! (`deploy_logs_collect=on_failure`, the default) and also when one ends
//! well (`always`). A collection that fails never changes the flow's
//! outcome: it adds one clause to `last_error` or a warning.

use std::path::PathBuf;

use ferrite_protocol::node::Node;
use serde_json::{Map, Value};
use tracing::{info, warn};

use super::Flows;
use crate::config::DeployLogsCollect;
use crate::ramdisk_logs;

/// Ironic's label for logs of cleaning (deploys have none).
pub const CLEANING: &str = "cleaning";

/// `message` for `last_error`, naming the stored logs or why there are none.
pub async fn on_failure(
    flows: &Flows,
    node: &Node,
    label: Option<&str>,
    message: String,
) -> String {
    if flows.config.deploy_logs_collect == DeployLogsCollect::Never {
        return message;
    }
    let sep = if message.trim_end().ends_with('.') {
        " "
    } else {
        ". "
    };
    let message = message.trim_end();
    match collect(flows, node, label).await {
        Ok(path) => format!("{message}{sep}Ramdisk logs: {}", path.display()),
        Err(why) => {
            warn!(node = %node.uuid, error = %why, "could not collect the ramdisk logs");
            format!("{message}{sep}Ramdisk logs could not be collected: {why}.")
        }
    }
}

/// A flow ended well: keep the logs if `deploy_logs_collect=always`.
pub async fn on_success(flows: &Flows, node: &Node, label: Option<&str>) {
    if flows.config.deploy_logs_collect != DeployLogsCollect::Always {
        return;
    }
    match collect(flows, node, label).await {
        Ok(path) => {
            let text = format!("Ramdisk logs: {}", path.display());
            if let Err(e) = flows
                .store
                .record_event(&node.uuid, "INFO", "provisioning", &text, flows.host())
                .await
            {
                warn!(node = %node.uuid, error = %e, "could not record node history");
            }
        }
        Err(why) => warn!(node = %node.uuid, error = %why, "could not collect the ramdisk logs"),
    }
}

/// `log.collect_system_logs`, bounded in time (one command timeout in all,
/// retries included) and size; the stored file.
async fn collect(flows: &Flows, node: &Node, label: Option<&str>) -> Result<PathBuf, String> {
    let client = flows.agents.for_node(node).map_err(|e| e.to_string())?;
    let limit = flows.config.agent_command_timeout();
    let call = client.run_limited(
        "log.collect_system_logs",
        Map::new(),
        true,
        ramdisk_logs::MAX_REPLY_BYTES,
    );
    let mut result = tokio::time::timeout(limit, call)
        .await
        .map_err(|_| format!("the agent did not answer within {} s", limit.as_secs()))?
        .map_err(|e| e.to_string())?;
    if let Some(err) = &result.command_error {
        return Err(format!("the agent failed the command: {}", err.summary()));
    }
    // Taken, not copied: it can be 130 MiB.
    let Some(Value::String(encoded)) = result
        .command_result
        .as_mut()
        .and_then(|r| r.get_mut("system_logs"))
        .map(Value::take)
    else {
        return Err(ramdisk_logs::LogsError::Missing.to_string());
    };
    let dir = flows.config.deploy_logs_dir();
    let name = ramdisk_logs::file_name(node, label, chrono::Utc::now());
    let path = tokio::task::spawn_blocking(move || {
        let data = ramdisk_logs::decode(&encoded)?;
        ramdisk_logs::store(&dir, &name, &data)
    })
    .await
    .map_err(|e| format!("storing the logs stopped: {e}"))?
    .map_err(|e| e.to_string())?;
    info!(node = %node.uuid, path = %path.display(), "ramdisk logs stored");
    Ok(path)
}
