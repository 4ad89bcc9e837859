//! Ironic's provision state machine: its events, which state an event
//! leads to, and which states a ramdisk may look itself up in. Every
//! function here matches on all states, so a new state must be placed in
//! each.

pub use crate::provision_state::ProvisionState;
use ProvisionState as S;

/// `ironic/common/states.py: LOOKUP_ALLOWED_STATES`, plus the states
/// fast track adds (the ramdisk stays up between actions).
pub fn lookup_allowed(state: ProvisionState, fast_track: bool) -> bool {
    match state {
        S::Deploying
        | S::DeployWait
        | S::Cleaning
        | S::CleanWait
        | S::Inspecting
        | S::InspectWait
        | S::Rescuing
        | S::RescueWait
        | S::ServiceWait => true,
        S::Enroll | S::Manageable | S::Available | S::Servicing | S::ServiceHold => fast_track,
        S::Verifying
        | S::Active
        | S::DeployFail
        | S::Deleting
        | S::CleanFail
        | S::InspectFail
        | S::Rescue
        | S::RescueFail
        | S::Unrescuing
        | S::UnrescueFail
        | S::ServiceFail
        | S::Error
        | S::AdoptFail => false,
    }
}

/// States a node can be deleted in.
pub fn delete_allowed(state: ProvisionState) -> bool {
    match state {
        S::Available | S::Manageable | S::Enroll | S::AdoptFail => true,
        S::Verifying
        | S::Deploying
        | S::DeployWait
        | S::Active
        | S::DeployFail
        | S::Deleting
        | S::Cleaning
        | S::CleanWait
        | S::CleanFail
        | S::Inspecting
        | S::InspectWait
        | S::InspectFail
        | S::Rescuing
        | S::RescueWait
        | S::Rescue
        | S::RescueFail
        | S::Unrescuing
        | S::UnrescueFail
        | S::Servicing
        | S::ServiceWait
        | S::ServiceHold
        | S::ServiceFail
        | S::Error => false,
    }
}

/// Events of Ironic's provision state machine (`ironic/common/states.py`):
/// API verbs plus the conductor's own progress events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Manage,
    Provide,
    Inspect,
    Clean,
    Deploy,
    Rebuild,
    Delete,
    Abort,
    Rescue,
    Unrescue,
    /// Conductor events.
    Done,
    Wait,
    Resume,
    Fail,
}

impl Event {
    /// The event a `PUT .../states/provision` target stands for (Ironic's
    /// `VERBS`), or None for a target the API does not know.
    pub fn from_target(target: &str) -> Option<Self> {
        Some(match target {
            "manage" => Self::Manage,
            "provide" => Self::Provide,
            "inspect" => Self::Inspect,
            "clean" => Self::Clean,
            "active" | "deploy" => Self::Deploy,
            "rebuild" => Self::Rebuild,
            "deleted" | "undeploy" => Self::Delete,
            "abort" => Self::Abort,
            "rescue" => Self::Rescue,
            "unrescue" => Self::Unrescue,
            _ => return None,
        })
    }

    /// The name Ironic uses in InvalidStateRequested messages.
    pub fn verb(self) -> &'static str {
        match self {
            Self::Manage => "manage",
            Self::Provide => "provide",
            Self::Inspect => "inspect",
            Self::Clean => "clean",
            Self::Deploy => "deploy",
            Self::Rebuild => "rebuild",
            Self::Delete => "delete",
            Self::Abort => "abort",
            Self::Rescue => "rescue",
            Self::Unrescue => "unrescue",
            Self::Done => "done",
            Self::Wait => "wait",
            Self::Resume => "resume",
            Self::Fail => "fail",
        }
    }
}

/// API targets accepted by `PUT /v1/nodes/{id}/states/provision`.
pub const API_TARGETS: &[&str] = &[
    "manage", "provide", "inspect", "clean", "active", "deploy", "rebuild", "deleted", "undeploy",
    "abort", "rescue", "unrescue",
];

/// The state `event` leads to from `state`, or None when Ironic forbids it.
/// One arm per state; within it, the events it accepts.
pub fn next_state(state: ProvisionState, event: Event) -> Option<ProvisionState> {
    use Event::*;
    Some(match (state, event) {
        (S::Enroll, Manage) => S::Verifying,
        (S::Enroll, _) => return None,
        (S::Verifying, Done) => S::Manageable,
        (S::Verifying, Fail) => S::Enroll,
        (S::Verifying, _) => return None,
        (S::Manageable, Provide | Clean) => S::Cleaning,
        (S::Manageable, Inspect) => S::Inspecting,
        (S::Manageable, Manage) => S::Manageable,
        (S::Manageable, _) => return None,
        (S::Available, Deploy) => S::Deploying,
        (S::Available, Manage) => S::Manageable,
        (S::Available, _) => return None,
        (S::Deploying, Wait) => S::DeployWait,
        (S::Deploying, Done) => S::Active,
        (S::Deploying, Fail) => S::DeployFail,
        (S::Deploying, _) => return None,
        (S::DeployWait, Resume) => S::Deploying,
        (S::DeployWait, Fail) => S::DeployFail,
        (S::DeployWait, Delete) => S::Deleting,
        (S::DeployWait, _) => return None,
        (S::DeployFail, Deploy | Rebuild) => S::Deploying,
        (S::DeployFail, Delete) => S::Deleting,
        (S::DeployFail, _) => return None,
        (S::Active, Rebuild) => S::Deploying,
        (S::Active, Delete) => S::Deleting,
        (S::Active, Rescue) => S::Rescuing,
        (S::Active, _) => return None,
        (S::Deleting, Clean) => S::Cleaning,
        (S::Deleting, Fail) => S::Error,
        (S::Deleting, _) => return None,
        (S::Error, Rebuild) => S::Deploying,
        (S::Error, Delete) => S::Deleting,
        (S::Error, _) => return None,
        (S::Cleaning, Wait) => S::CleanWait,
        (S::Cleaning, Done) => S::Available,
        (S::Cleaning, Manage) => S::Manageable,
        (S::Cleaning, Fail) => S::CleanFail,
        (S::Cleaning, _) => return None,
        (S::CleanWait, Resume) => S::Cleaning,
        (S::CleanWait, Fail | Abort) => S::CleanFail,
        (S::CleanWait, _) => return None,
        (S::CleanFail, Manage) => S::Manageable,
        (S::CleanFail, _) => return None,
        (S::Inspecting, Done) => S::Manageable,
        (S::Inspecting, Wait) => S::InspectWait,
        (S::Inspecting, Fail) => S::InspectFail,
        (S::Inspecting, _) => return None,
        (S::InspectWait, Done) => S::Manageable,
        (S::InspectWait, Resume) => S::Inspecting,
        (S::InspectWait, Fail | Abort) => S::InspectFail,
        (S::InspectWait, _) => return None,
        (S::InspectFail, Manage) => S::Manageable,
        (S::InspectFail, Inspect) => S::Inspecting,
        (S::InspectFail, _) => return None,
        // Rescue (`ironic/common/state_machine.py`).
        (S::Rescuing, Done) => S::Rescue,
        (S::Rescuing, Wait) => S::RescueWait,
        (S::Rescuing, Fail) => S::RescueFail,
        (S::Rescuing, _) => return None,
        (S::RescueWait, Resume) => S::Rescuing,
        (S::RescueWait, Fail | Abort) => S::RescueFail,
        (S::RescueWait, Delete) => S::Deleting,
        (S::RescueWait, _) => return None,
        (S::Rescue | S::RescueFail | S::UnrescueFail, Rescue) => S::Rescuing,
        (S::Rescue | S::RescueFail | S::UnrescueFail, Delete) => S::Deleting,
        (S::Rescue | S::RescueFail | S::UnrescueFail, Unrescue) => S::Unrescuing,
        (S::Rescue | S::RescueFail | S::UnrescueFail, _) => return None,
        (S::Unrescuing, Done) => S::Active,
        (S::Unrescuing, Fail) => S::UnrescueFail,
        (S::Unrescuing, _) => return None,
        // Servicing and adoption are not driven by this conductor.
        (S::Servicing | S::ServiceWait | S::ServiceHold | S::ServiceFail | S::AdoptFail, _) => {
            return None
        }
    })
}

/// `target_provision_state` while a node is in a transitional state
/// (Ironic's per-state `target`); None in stable states. Manual cleaning
/// targets `manageable` and is set explicitly by its flow.
pub fn target_of(state: ProvisionState) -> Option<ProvisionState> {
    Some(match state {
        S::Verifying => S::Manageable,
        S::Deploying | S::DeployWait => S::Active,
        S::Deleting => S::Available,
        S::Cleaning | S::CleanWait => S::Available,
        S::Inspecting | S::InspectWait => S::Manageable,
        // Ironic keeps the rescue targets on failure, too.
        S::Rescuing | S::RescueWait | S::RescueFail => S::Rescue,
        S::Unrescuing | S::UnrescueFail => S::Active,
        S::Enroll
        | S::Manageable
        | S::Available
        | S::Active
        | S::DeployFail
        | S::CleanFail
        | S::InspectFail
        | S::Rescue
        | S::Servicing
        | S::ServiceWait
        | S::ServiceHold
        | S::ServiceFail
        | S::Error
        | S::AdoptFail => return None,
    })
}

/// States a flow passes through between its steps, with nobody waiting
/// on the agent: a conductor that stopped there (restart, takeover)
/// resumes the flow. `is_transient` is the exhaustive rule; this is its
/// list, for store queries.
pub const TRANSIENT_STATES: [ProvisionState; 7] = [
    S::Verifying,
    S::Cleaning,
    S::Deploying,
    S::Deleting,
    S::Inspecting,
    S::Rescuing,
    S::Unrescuing,
];

/// States that wait for the agent to call back, under a timeout; the list
/// of `is_wait_state`, for store queries.
pub const WAIT_STATES: [ProvisionState; 4] =
    [S::DeployWait, S::CleanWait, S::InspectWait, S::RescueWait];

pub fn is_transient(state: ProvisionState) -> bool {
    match state {
        S::Verifying
        | S::Cleaning
        | S::Deploying
        | S::Deleting
        | S::Inspecting
        | S::Rescuing
        | S::Unrescuing => true,
        S::Enroll
        | S::Manageable
        | S::Available
        | S::DeployWait
        | S::Active
        | S::DeployFail
        | S::CleanWait
        | S::CleanFail
        | S::InspectWait
        | S::InspectFail
        | S::RescueWait
        | S::Rescue
        | S::RescueFail
        | S::UnrescueFail
        // Servicing is not driven here: nothing to resume.
        | S::Servicing
        | S::ServiceWait
        | S::ServiceHold
        | S::ServiceFail
        | S::Error
        | S::AdoptFail => false,
    }
}

pub fn is_wait_state(state: ProvisionState) -> bool {
    match state {
        S::DeployWait | S::CleanWait | S::InspectWait | S::RescueWait => true,
        // Servicing is not driven here: no timeout of ours applies.
        S::ServiceWait => false,
        S::Enroll
        | S::Verifying
        | S::Manageable
        | S::Available
        | S::Deploying
        | S::Active
        | S::DeployFail
        | S::Deleting
        | S::Cleaning
        | S::CleanFail
        | S::Inspecting
        | S::InspectFail
        | S::Rescuing
        | S::Rescue
        | S::RescueFail
        | S::Unrescuing
        | S::UnrescueFail
        | S::Servicing
        | S::ServiceHold
        | S::ServiceFail
        | S::Error
        | S::AdoptFail => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_rules() {
        assert!(lookup_allowed(S::DeployWait, false));
        assert!(lookup_allowed(S::CleanWait, false));
        assert!(!lookup_allowed(S::Enroll, false));
        assert!(lookup_allowed(S::Enroll, true));
        assert!(!lookup_allowed(S::Active, true));
    }

    #[test]
    fn state_lists_match_their_rules() {
        let listed = |rule: fn(ProvisionState) -> bool| -> Vec<ProvisionState> {
            ProvisionState::ALL
                .into_iter()
                .filter(|s| rule(*s))
                .collect()
        };
        let mut transient = TRANSIENT_STATES.to_vec();
        let mut wait = WAIT_STATES.to_vec();
        let key = |s: &ProvisionState| s.as_str();
        transient.sort_by_key(key);
        wait.sort_by_key(key);
        let (mut t, mut w) = (listed(is_transient), listed(is_wait_state));
        t.sort_by_key(key);
        w.sort_by_key(key);
        assert_eq!(t, transient);
        assert_eq!(w, wait);
    }

    #[test]
    fn ironic_transitions() {
        use Event::*;
        // The seeds' operator session, verb by verb.
        assert_eq!(next_state(S::Enroll, Manage), Some(S::Verifying));
        assert_eq!(next_state(S::Verifying, Done), Some(S::Manageable));
        assert_eq!(next_state(S::Manageable, Provide), Some(S::Cleaning));
        assert_eq!(next_state(S::Cleaning, Done), Some(S::Available));
        assert_eq!(next_state(S::Available, Manage), Some(S::Manageable));
        assert_eq!(next_state(S::Manageable, Inspect), Some(S::Inspecting));
        assert_eq!(next_state(S::InspectWait, Done), Some(S::Manageable));
        assert_eq!(next_state(S::Manageable, Clean), Some(S::Cleaning));
        assert_eq!(next_state(S::Cleaning, Manage), Some(S::Manageable));
        assert_eq!(next_state(S::Available, Deploy), Some(S::Deploying));
        assert_eq!(next_state(S::DeployWait, Resume), Some(S::Deploying));
        assert_eq!(next_state(S::Deploying, Done), Some(S::Active));
        assert_eq!(next_state(S::Active, Delete), Some(S::Deleting));
        assert_eq!(next_state(S::Deleting, Clean), Some(S::Cleaning));
        // Illegal verbs.
        assert_eq!(next_state(S::Enroll, Provide), None);
        assert_eq!(next_state(S::Available, Inspect), None);
        assert_eq!(next_state(S::Active, Deploy), None);
        assert_eq!(next_state(S::CleanWait, Deploy), None);
        assert_eq!(next_state(S::Manageable, Abort), None);
        assert_eq!(next_state(S::CleanWait, Abort), Some(S::CleanFail));
        assert_eq!(next_state(S::InspectWait, Abort), Some(S::InspectFail));
        assert_eq!(Event::from_target("active"), Some(Deploy));
        assert_eq!(Event::from_target("undeploy"), Some(Delete));
        assert_eq!(Event::from_target("fly"), None);
        assert_eq!(target_of(S::CleanWait), Some(S::Available));
        assert_eq!(target_of(S::Active), None);
        // Rescue and back.
        assert_eq!(next_state(S::Active, Rescue), Some(S::Rescuing));
        assert_eq!(next_state(S::Rescuing, Wait), Some(S::RescueWait));
        assert_eq!(next_state(S::RescueWait, Resume), Some(S::Rescuing));
        assert_eq!(next_state(S::Rescuing, Done), Some(S::Rescue));
        assert_eq!(next_state(S::Rescue, Unrescue), Some(S::Unrescuing));
        assert_eq!(next_state(S::Unrescuing, Done), Some(S::Active));
        assert_eq!(next_state(S::RescueWait, Fail), Some(S::RescueFail));
        assert_eq!(next_state(S::RescueFail, Unrescue), Some(S::Unrescuing));
        assert_eq!(next_state(S::Available, Rescue), None);
        assert_eq!(next_state(S::Active, Unrescue), None);
        assert_eq!(next_state(S::RescueWait, Unrescue), None);
        assert_eq!(target_of(S::RescueWait), Some(S::Rescue));
        assert_eq!(Event::from_target("rescue"), Some(Rescue));
    }
}
