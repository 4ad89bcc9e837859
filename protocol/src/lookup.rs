//! `GET /v1/lookup` response.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::node::Link;

/// The token placeholder Ironic returns once a token has been handed out.
pub const MASKED_TOKEN: &str = "******";
/// IPA refuses shorter tokens.
pub const MIN_TOKEN_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LookupResponse {
    pub node: LookupNode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<LookupConfig>,
    /// Pre-`config` Ironic put the timeout at the top level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout: Option<f64>,
}

impl LookupResponse {
    pub fn heartbeat_timeout(&self) -> f64 {
        self.config
            .as_ref()
            .map(|c| c.heartbeat_timeout)
            .or(self.heartbeat_timeout)
            .unwrap_or(DEFAULT_HEARTBEAT_TIMEOUT)
    }
}

/// The node as lookup shows it (Ironic's `_LOOKUP_RETURN_FIELDS`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LookupNode {
    pub uuid: String,
    #[serde(default)]
    pub properties: Map<String, Value>,
    #[serde(default)]
    pub instance_info: Map<String, Value>,
    #[serde(default)]
    pub driver_internal_info: Map<String, Value>,
    #[serde(default)]
    pub links: Vec<Link>,
}

/// `[api]ramdisk_heartbeat_timeout` default.
pub const DEFAULT_HEARTBEAT_TIMEOUT: f64 = 300.0;

fn default_heartbeat_timeout() -> f64 {
    DEFAULT_HEARTBEAT_TIMEOUT
}

/// `config` in the lookup response (`ironic/api/controllers/v1/ramdisk.py:config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LookupConfig {
    #[serde(default)]
    pub metrics: Value,
    #[serde(default)]
    pub metrics_statsd: Value,
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout: f64,
    #[serde(default)]
    pub agent_containers: Value,
    /// The token, or [`MASKED_TOKEN`] if it was already handed out.
    #[serde(default)]
    pub agent_token: Option<String>,
    #[serde(default)]
    pub agent_token_required: bool,
    #[serde(default)]
    pub agent_md5_checksum_enable: bool,
    #[serde(default)]
    pub disable_deep_image_inspection: bool,
    /// Absent (older Ironic): the agent keeps IPA's default list.
    #[serde(default)]
    pub permitted_image_formats: Option<Vec<String>>,
    #[serde(default)]
    pub agent_skip_bmc_detect: bool,
    #[serde(default)]
    pub enable_bios_bootloader_install: bool,
    #[serde(default)]
    pub tls_min_version: Option<String>,
    #[serde(default)]
    pub tls_cipher_suites: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_captured_lookup() {
        let raw = include_str!("../tests/fixtures/lookup-response.json");
        let r: LookupResponse = serde_json::from_str(raw).unwrap();
        assert_eq!(r.node.uuid, "4873bdf2-4b92-4be2-93a8-bd0fb7f2dc58");
        let cfg = r.config.as_ref().unwrap();
        assert_eq!(cfg.agent_token.as_deref().map(str::len), Some(43));
        assert_eq!(r.heartbeat_timeout(), 300.0);
        assert_eq!(cfg.tls_min_version.as_deref(), Some("1.3"));
    }

    #[test]
    fn old_api_top_level_timeout() {
        let r: LookupResponse =
            serde_json::from_str(r#"{"node": {"uuid": "u"}, "heartbeat_timeout": 60}"#).unwrap();
        assert_eq!(r.heartbeat_timeout(), 60.0);
    }
}
