//! Clean/deploy/service steps as the agent reports them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub step: String,
    /// Ironic sends deploy steps to the agent without one.
    #[serde(default)]
    pub priority: i64,
    pub interface: String,
    #[serde(default)]
    pub reboot_requested: bool,
    #[serde(default = "yes")]
    pub abortable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argsinfo: Option<Value>,
    /// The step's arguments, when a conductor asks for it to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    /// The conductor adds this when it caches steps; agents omit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_ramdisk: Option<bool>,
}

fn yes() -> bool {
    true
}

/// Hardware-manager name → version, e.g. `{"generic_hardware_manager": "1.2"}`.
pub type ManagerVersions = BTreeMap<String, String>;

/// `clean.get_clean_steps` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanStepsResult {
    /// Manager class name → its steps.
    pub clean_steps: BTreeMap<String, Vec<Step>>,
    pub hardware_manager_version: ManagerVersions,
}

/// `deploy.get_deploy_steps` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployStepsResult {
    pub deploy_steps: BTreeMap<String, Vec<Step>>,
    pub hardware_manager_version: ManagerVersions,
}
