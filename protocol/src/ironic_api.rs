//! Ironic API root documents (`GET /`), which agents read to negotiate.

use serde::{Deserialize, Serialize};

use crate::node::Link;
use crate::version::ApiVersion;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionDoc {
    pub id: String,
    #[serde(default)]
    pub links: Vec<Link>,
    #[serde(default)]
    pub status: String,
    pub min_version: ApiVersion,
    pub version: ApiVersion,
}

/// `GET /` of the Ironic API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IronicRoot {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub versions: Vec<VersionDoc>,
    pub default_version: VersionDoc,
}
