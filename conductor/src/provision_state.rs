//! Ironic's provision states as one type. The store and the REST API keep
//! Ironic's display strings ("wait call-back", "clean wait", ...); the
//! conductor parses them here once and matches on the enum, so a new state
//! makes the compiler list every `match` that must learn it.

use std::fmt;
use std::str::FromStr;

use ferrite_protocol::node::Node;

/// `ironic/common/states.py`, the states this conductor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProvisionState {
    Enroll,
    Verifying,
    Manageable,
    Available,
    Deploying,
    /// Ironic's DEPLOYWAIT.
    DeployWait,
    Active,
    DeployFail,
    Deleting,
    Cleaning,
    CleanWait,
    CleanFail,
    Inspecting,
    InspectWait,
    InspectFail,
    Rescuing,
    RescueWait,
    Rescue,
    RescueFail,
    Unrescuing,
    UnrescueFail,
    /// Servicing is not driven here; its states only widen lookup and boot.
    Servicing,
    ServiceWait,
    ServiceHold,
    ServiceFail,
    Error,
    /// Keep this last: [`ProvisionState::ALL`]'s length counts from it.
    AdoptFail,
}

/// A provision state string the conductor does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provision state {0:?}")]
pub struct UnknownState(pub String);

impl ProvisionState {
    /// Every state, in the order an operator meets them.
    /// Its length is counted from the declaration (AdoptFail stays the last
    /// variant), so a state declared but not listed does not compile.
    pub const ALL: [Self; Self::AdoptFail as usize + 1] = [
        Self::Enroll,
        Self::Verifying,
        Self::Manageable,
        Self::Inspecting,
        Self::InspectWait,
        Self::InspectFail,
        Self::Cleaning,
        Self::CleanWait,
        Self::CleanFail,
        Self::Available,
        Self::Deploying,
        Self::DeployWait,
        Self::DeployFail,
        Self::Active,
        Self::Deleting,
        Self::Error,
        Self::Rescuing,
        Self::RescueWait,
        Self::Rescue,
        Self::RescueFail,
        Self::Unrescuing,
        Self::UnrescueFail,
        Self::Servicing,
        Self::ServiceWait,
        Self::ServiceHold,
        Self::ServiceFail,
        Self::AdoptFail,
    ];

    /// Ironic's `states.FAILURE_STATES`: where a failed flow leaves a
    /// node, its `last_error` kept (a power action there does not clear it).
    pub fn is_failure(self) -> bool {
        match self {
            Self::DeployFail
            | Self::CleanFail
            | Self::InspectFail
            | Self::RescueFail
            | Self::UnrescueFail
            | Self::AdoptFail
            | Self::ServiceFail => true,
            Self::Enroll
            | Self::Verifying
            | Self::Manageable
            | Self::Available
            | Self::Deploying
            | Self::DeployWait
            | Self::Active
            | Self::Deleting
            | Self::Cleaning
            | Self::CleanWait
            | Self::Inspecting
            | Self::InspectWait
            | Self::Rescuing
            | Self::RescueWait
            | Self::Rescue
            | Self::Unrescuing
            | Self::Servicing
            | Self::ServiceWait
            | Self::ServiceHold
            | Self::Error => false,
        }
    }

    /// Ironic's exact wire (and database) string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Enroll => "enroll",
            Self::Verifying => "verifying",
            Self::Manageable => "manageable",
            Self::Available => "available",
            Self::Deploying => "deploying",
            Self::DeployWait => "wait call-back",
            Self::Active => "active",
            Self::DeployFail => "deploy failed",
            Self::Deleting => "deleting",
            Self::Cleaning => "cleaning",
            Self::CleanWait => "clean wait",
            Self::CleanFail => "clean failed",
            Self::Inspecting => "inspecting",
            Self::InspectWait => "inspect wait",
            Self::InspectFail => "inspect failed",
            Self::Rescuing => "rescuing",
            Self::RescueWait => "rescue wait",
            Self::Rescue => "rescue",
            Self::RescueFail => "rescue failed",
            Self::Unrescuing => "unrescuing",
            Self::UnrescueFail => "unrescue failed",
            Self::Servicing => "servicing",
            Self::ServiceWait => "service wait",
            Self::ServiceHold => "service hold",
            Self::ServiceFail => "service failed",
            Self::Error => "error",
            Self::AdoptFail => "adopt failed",
        }
    }

    pub fn parse(s: &str) -> Result<Self, UnknownState> {
        s.parse()
    }
}

impl FromStr for ProvisionState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

impl fmt::Display for ProvisionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<ProvisionState> for &str {
    fn eq(&self, other: &ProvisionState) -> bool {
        *self == other.as_str()
    }
}

impl serde::Serialize for ProvisionState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ProvisionState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The node's states, read from and written to the wire-typed `Node`.
pub trait NodeStates {
    /// `provision_state`; an unknown string is an error naming the node.
    fn state(&self) -> Result<ProvisionState, NodeStateError>;
    /// `target_provision_state`, likewise.
    fn target_state(&self) -> Result<Option<ProvisionState>, NodeStateError>;
    fn set_state(&mut self, state: ProvisionState);
    fn set_target_state(&mut self, target: Option<ProvisionState>);
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node {node}: {source}")]
pub struct NodeStateError {
    pub node: String,
    #[source]
    pub source: UnknownState,
}

impl NodeStates for Node {
    fn state(&self) -> Result<ProvisionState, NodeStateError> {
        self.provision_state
            .parse()
            .map_err(|source| NodeStateError {
                node: self.uuid.clone(),
                source,
            })
    }

    fn target_state(&self) -> Result<Option<ProvisionState>, NodeStateError> {
        self.target_provision_state
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|source| NodeStateError {
                node: self.uuid.clone(),
                source,
            })
    }

    fn set_state(&mut self, state: ProvisionState) {
        self.provision_state = state.as_str().to_string();
    }

    fn set_target_state(&mut self, target: Option<ProvisionState>) {
        self.target_provision_state = target.map(|t| t.as_str().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_round_trip() {
        for state in ProvisionState::ALL {
            assert_eq!(state.as_str().parse::<ProvisionState>(), Ok(state));
            assert_eq!(state.to_string(), state.as_str());
            let json = serde_json::to_value(state).unwrap();
            assert_eq!(json, serde_json::json!(state.as_str()));
            assert_eq!(
                serde_json::from_value::<ProvisionState>(json).unwrap(),
                state
            );
        }
        assert_eq!(ProvisionState::DeployWait.as_str(), "wait call-back");
        assert_eq!(
            "deploy wait".parse::<ProvisionState>(),
            Err(UnknownState("deploy wait".into()))
        );
    }

    #[test]
    fn all_is_complete() {
        // `as_str` is exhaustive; ALL must hold each state once.
        let mut seen = std::collections::HashSet::new();
        for state in ProvisionState::ALL {
            assert!(seen.insert(state.as_str()));
        }
        assert_eq!(seen.len(), ProvisionState::ALL.len());
    }

    #[test]
    fn node_edge() {
        let mut node = Node {
            uuid: "u1".into(),
            provision_state: "clean wait".into(),
            ..Node::default()
        };
        assert_eq!(node.state(), Ok(ProvisionState::CleanWait));
        node.set_target_state(Some(ProvisionState::Manageable));
        assert_eq!(node.target_provision_state.as_deref(), Some("manageable"));
        node.provision_state = "bogus".into();
        let err = node.state().unwrap_err();
        assert_eq!(
            err.to_string(),
            "node u1: unknown provision state \"bogus\""
        );
    }
}
