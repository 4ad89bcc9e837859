//! `POST /v1/heartbeat/{node}` body.

use serde::{Deserialize, Serialize};

/// What IPA sends; optional keys depend on the negotiated microversion
/// (`agent_version` ≥ 1.36, `agent_token` ≥ 1.62, `agent_verify_ca` ≥ 1.68).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HeartbeatRequest {
    /// `{protocol}://{ip}:{port}`: no path, no trailing slash, IPv6 bracketed.
    pub callback_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// PEM of the agent's auto-TLS certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_verify_ca: Option<String>,
    /// `start`, `end` or `error` (≥ 1.72). IPA never sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_status_message: Option<String>,
}
