//! Documents served by the agent's own API (`GET /`, `/v1/`, `/v1/status`).

use serde::{Deserialize, Serialize};

use crate::node::Link;

/// `GET /v1/status`: `started_at` is float epoch seconds, as IPA sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub started_at: f64,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentVersionDoc {
    pub id: String,
    pub links: Vec<Link>,
}

/// `GET /` of the agent API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRoot {
    pub name: String,
    pub description: String,
    pub versions: Vec<AgentVersionDoc>,
    pub default_version: AgentVersionDoc,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaType {
    pub base: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// `GET /v1/` of the agent API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentV1 {
    pub id: String,
    pub links: Vec<Link>,
    pub commands: Vec<Link>,
    pub status: Vec<Link>,
    pub media_types: Vec<MediaType>,
}

pub const AGENT_API_NAME: &str = "OpenStack Ironic Python Agent API";
pub const AGENT_API_DESCRIPTION: &str =
    "Ironic Python Agent is a provisioning agent for OpenStack Ironic";
pub const AGENT_MEDIA_TYPE: &str = "application/vnd.openstack.ironic-python-agent.v1+json";
