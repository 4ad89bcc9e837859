//! The hardware-manager trait and the dispatcher over all managers.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferrite_protocol::steps::{ManagerVersions, Step};
use serde_json::{Map, Value};

use crate::command_progress::CommandProgress;
use crate::errors::RestError;
use crate::state::AgentContext;

/// Which family of steps: the names of the keys on the wire differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Clean,
    Deploy,
    Service,
}

impl StepKind {
    pub fn word(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Deploy => "deploy",
            Self::Service => "service",
        }
    }
}

/// Arguments of one step run: the node and ports Ironic sent, plus
/// `step.args` merged with any extra command parameters.
pub struct StepCall {
    pub node: Map<String, Value>,
    pub ports: Vec<Value>,
    pub args: Map<String, Value>,
    pub ctx: Arc<AgentContext>,
    pub progress: CommandProgress,
}

impl StepCall {
    /// A per-step tunable: the step's own args, else the node's
    /// `driver_info` (burn-in settings), else `driver_internal_info` (where
    /// Ironic puts the erase settings).
    pub fn setting(&self, key: &str) -> Option<&Value> {
        self.args.get(key).filter(|v| !v.is_null()).or_else(|| {
            ["driver_info", "driver_internal_info"]
                .iter()
                .find_map(|section| self.node.get(*section)?.get(key).filter(|v| !v.is_null()))
        })
    }

    /// A non-negative integer tunable; numbers and numeric strings are accepted.
    pub fn u64_setting(&self, key: &str) -> Result<Option<u64>, RestError> {
        match self.setting(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                RestError::invalid_params(format!("{key} must be a non-negative integer"))
            }),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| {
                RestError::invalid_params(format!(
                    "{key} must be a non-negative integer, got {s:?}"
                ))
            }),
            Some(other) => Err(RestError::invalid_params(format!(
                "{key} must be an integer, got {other}"
            ))),
        }
    }

    /// A boolean tunable, `default` when unset.
    pub fn bool_setting(&self, key: &str, default: bool) -> Result<bool, RestError> {
        match self.setting(key) {
            None => Ok(default),
            Some(v) => ferrite_protocol::loose::value_as_bool(v).ok_or_else(|| {
                RestError::invalid_params(format!("{key} must be a boolean, got {v}"))
            }),
        }
    }
}

pub type StepFn = Arc<dyn Fn(&StepCall) -> Result<Value, RestError> + Send + Sync>;

/// A step as advertised, plus the code that runs it (blocking).
#[derive(Clone)]
pub struct StepDef {
    pub step: Step,
    pub kinds: &'static [StepKind],
    pub run: StepFn,
}

pub trait HardwareManager: Send + Sync {
    /// Key in `hardware_manager_version`, e.g. `generic_hardware_manager`.
    fn name(&self) -> &'static str;
    /// Key in `clean_steps`/`deploy_steps`: IPA uses the class name.
    fn class_name(&self) -> &'static str;
    fn version(&self) -> &'static str;
    /// IPA's support level: higher wins when two managers offer a step.
    fn support(&self) -> u8;
    fn steps(&self) -> Vec<StepDef>;
}

/// All managers, best support first.
#[derive(Clone)]
pub struct HardwareManagers {
    managers: Vec<Arc<dyn HardwareManager>>,
}

impl HardwareManagers {
    pub fn new(mut managers: Vec<Arc<dyn HardwareManager>>) -> Self {
        managers.sort_by_key(|m| std::cmp::Reverse(m.support()));
        Self { managers }
    }

    pub fn versions(&self) -> ManagerVersions {
        self.managers
            .iter()
            .map(|m| (m.name().to_string(), m.version().to_string()))
            .collect()
    }

    /// `{ClassName: [steps]}` for one kind.
    pub fn steps(&self, kind: StepKind) -> BTreeMap<String, Vec<Step>> {
        self.managers
            .iter()
            .map(|m| {
                let steps = m
                    .steps()
                    .into_iter()
                    .filter(|d| d.kinds.contains(&kind))
                    .map(|d| d.step)
                    .collect();
                (m.class_name().to_string(), steps)
            })
            .collect()
    }

    /// Raise IPA's `VersionMismatch` if Ironic cached other versions.
    pub fn check_versions(&self, from_ironic: Option<&Value>) -> Result<(), RestError> {
        let Some(Value::Object(theirs)) = from_ironic else {
            return Ok(());
        };
        let ours = self.versions();
        let same = theirs.len() == ours.len()
            && theirs
                .iter()
                .all(|(k, v)| ours.get(k).map(String::as_str) == v.as_str());
        if same {
            Ok(())
        } else {
            Err(RestError::version_mismatch(
                &serde_json::to_string(&ours).unwrap_or_default(),
                &Value::Object(theirs.clone()).to_string(),
            ))
        }
    }

    /// Run `name` on the best manager that has it.
    pub fn dispatch(
        &self,
        kind: StepKind,
        name: &str,
        call: &StepCall,
    ) -> Result<Value, RestError> {
        let def = self
            .managers
            .iter()
            .flat_map(|m| m.steps())
            .find(|d| d.step.step == name && d.kinds.contains(&kind))
            .ok_or_else(|| RestError::method_not_found(name))?;
        (def.run)(call)
    }
}
