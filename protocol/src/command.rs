//! IPA command API: `POST /v1/commands/` requests and the five-key result.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `{"name": "<ext>.<command>", "params": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRequest {
    pub name: String,
    pub params: Map<String, Value>,
}

impl CommandRequest {
    pub fn new(name: impl Into<String>, params: Map<String, Value>) -> Self {
        Self {
            name: name.into(),
            params,
        }
    }

    /// Split `ext.command` the way IPA does (at the first dot).
    pub fn split_name(&self) -> Option<(&str, &str)> {
        self.name
            .split_once('.')
            .filter(|(ext, cmd)| !ext.is_empty() && !cmd.is_empty())
    }
}

/// `command_status`. `CLEAN_VERSION_MISMATCH` is what IPA still sends for any
/// hardware-manager version mismatch (clean, deploy or service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CommandStatus {
    Running,
    Succeeded,
    Failed,
    CleanVersionMismatch,
}

impl CommandStatus {
    pub fn is_running(self) -> bool {
        self == Self::Running
    }
}

/// A serialized IPA `RESTError`: `{type, code, message, details}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandError {
    #[serde(rename = "type")]
    pub kind: String,
    pub code: u16,
    pub message: String,
    pub details: String,
}

impl CommandError {
    pub fn new(
        kind: impl Into<String>,
        code: u16,
        message: impl Into<String>,
        details: impl Into<String>,
    ) -> Self {
        Self {
            kind: kind.into(),
            code,
            message: message.into(),
            details: details.into(),
        }
    }

    /// What Ironic's `get_command_error` shows: `details`, else `message`.
    pub fn summary(&self) -> &str {
        if self.details.is_empty() {
            &self.message
        } else {
            &self.details
        }
    }
}

/// Exactly the five keys IPA serializes (`command_params` is never sent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    pub id: String,
    pub command_name: String,
    pub command_status: CommandStatus,
    pub command_error: Option<CommandError>,
    pub command_result: Option<Value>,
}

impl CommandResult {
    /// The error's summary (`CommandError::summary`), or "" without one.
    pub fn error_summary(&self) -> &str {
        self.command_error
            .as_ref()
            .map_or("", CommandError::summary)
    }
}

/// `GET /v1/commands/`: results in the order they were started; the last one
/// is "the current command" for the conductor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CommandList {
    pub commands: Vec<CommandResult>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn result_has_exactly_five_keys() {
        let r = CommandResult {
            id: "x".into(),
            command_name: "get_clean_steps".into(),
            command_status: CommandStatus::CleanVersionMismatch,
            command_error: Some(CommandError::new("E", 500, "m", "d")),
            command_result: None,
        };
        let v = serde_json::to_value(&r).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 5);
        assert_eq!(obj["command_status"], "CLEAN_VERSION_MISMATCH");
        assert_eq!(obj["command_error"]["type"], "E");
    }

    #[test]
    fn parses_a_captured_result() {
        // From ironic-39-captures/clean-automated-http-conductor-to-agent.json.
        let v = json!({"command_error": null, "command_name": "execute_clean_step",
            "command_result": {"clean_result": null, "clean_step": {"step": "erase_devices_metadata"}},
            "command_status": "SUCCEEDED", "id": "65df4aba-12be-484e-b0c9-88c7e443e1a1"});
        let r: CommandResult = serde_json::from_value(v).unwrap();
        assert_eq!(r.command_status, CommandStatus::Succeeded);
    }

    #[test]
    fn splits_names_like_ipa() {
        let req = CommandRequest::new("clean.get_clean_steps", Map::new());
        assert_eq!(req.split_name(), Some(("clean", "get_clean_steps")));
        for bad in ["clean", ".x", "x.", ""] {
            assert_eq!(CommandRequest::new(bad, Map::new()).split_name(), None);
        }
    }
}
