//! Provision states (Ironic's display strings) and which of them a
//! ramdisk may look itself up in.

pub const ENROLL: &str = "enroll";
pub const VERIFYING: &str = "verifying";
pub const MANAGEABLE: &str = "manageable";
pub const AVAILABLE: &str = "available";
pub const DEPLOYING: &str = "deploying";
pub const DEPLOYWAIT: &str = "wait call-back";
pub const ACTIVE: &str = "active";
pub const DEPLOYFAIL: &str = "deploy failed";
pub const DELETING: &str = "deleting";
pub const CLEANING: &str = "cleaning";
pub const CLEANWAIT: &str = "clean wait";
pub const CLEANFAIL: &str = "clean failed";
pub const INSPECTING: &str = "inspecting";
pub const INSPECTWAIT: &str = "inspect wait";
pub const INSPECTFAIL: &str = "inspect failed";
pub const RESCUING: &str = "rescuing";
pub const RESCUEWAIT: &str = "rescue wait";
pub const RESCUE: &str = "rescue";
pub const RESCUEFAIL: &str = "rescue failed";
pub const UNRESCUING: &str = "unrescuing";
pub const UNRESCUEFAIL: &str = "unrescue failed";
pub const SERVICEWAIT: &str = "service wait";
pub const ERROR: &str = "error";
pub const ADOPTFAIL: &str = "adopt failed";

/// `ironic/common/states.py: LOOKUP_ALLOWED_STATES`.
const LOOKUP_ALLOWED: &[&str] = &[
    DEPLOYING,
    DEPLOYWAIT,
    CLEANING,
    CLEANWAIT,
    INSPECTING,
    INSPECTWAIT,
    RESCUING,
    RESCUEWAIT,
    SERVICEWAIT,
];
/// Extra states allowed with fast-track (the ramdisk stays up between actions).
const FASTTRACK_LOOKUP_ALLOWED: &[&str] =
    &[ENROLL, MANAGEABLE, AVAILABLE, "servicing", "service hold"];
/// States a node can be deleted in.
const DELETE_ALLOWED: &[&str] = &[AVAILABLE, MANAGEABLE, ENROLL, ADOPTFAIL];

pub fn lookup_allowed(state: &str, fast_track: bool) -> bool {
    LOOKUP_ALLOWED.contains(&state) || (fast_track && FASTTRACK_LOOKUP_ALLOWED.contains(&state))
}

pub fn delete_allowed(state: &str) -> bool {
    DELETE_ALLOWED.contains(&state)
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
pub fn next_state(state: &str, event: Event) -> Option<&'static str> {
    use Event::*;
    Some(match (state, event) {
        (ENROLL, Manage) => VERIFYING,
        (VERIFYING, Done) => MANAGEABLE,
        (VERIFYING, Fail) => ENROLL,
        (MANAGEABLE, Provide | Clean) => CLEANING,
        (MANAGEABLE, Inspect) => INSPECTING,
        (MANAGEABLE, Manage) => MANAGEABLE,
        (AVAILABLE, Deploy) => DEPLOYING,
        (AVAILABLE, Manage) => MANAGEABLE,
        (DEPLOYING, Wait) => DEPLOYWAIT,
        (DEPLOYING, Done) => ACTIVE,
        (DEPLOYING, Fail) => DEPLOYFAIL,
        (DEPLOYWAIT, Resume) => DEPLOYING,
        (DEPLOYWAIT, Fail) => DEPLOYFAIL,
        (DEPLOYWAIT, Delete) => DELETING,
        (DEPLOYFAIL, Deploy | Rebuild) => DEPLOYING,
        (DEPLOYFAIL, Delete) => DELETING,
        (ACTIVE, Rebuild) => DEPLOYING,
        (ACTIVE, Delete) => DELETING,
        (DELETING, Clean) => CLEANING,
        (DELETING, Fail) => ERROR,
        (ERROR, Rebuild) => DEPLOYING,
        (ERROR, Delete) => DELETING,
        (CLEANING, Wait) => CLEANWAIT,
        (CLEANING, Done) => AVAILABLE,
        (CLEANING, Manage) => MANAGEABLE,
        (CLEANING, Fail) => CLEANFAIL,
        (CLEANWAIT, Resume) => CLEANING,
        (CLEANWAIT, Fail | Abort) => CLEANFAIL,
        (CLEANFAIL, Manage) => MANAGEABLE,
        (INSPECTING, Done) => MANAGEABLE,
        (INSPECTING, Wait) => INSPECTWAIT,
        (INSPECTING, Fail) => INSPECTFAIL,
        (INSPECTWAIT, Done) => MANAGEABLE,
        (INSPECTWAIT, Resume) => INSPECTING,
        (INSPECTWAIT, Fail | Abort) => INSPECTFAIL,
        (INSPECTFAIL, Manage) => MANAGEABLE,
        (INSPECTFAIL, Inspect) => INSPECTING,
        // Rescue (`ironic/common/state_machine.py`).
        (ACTIVE | RESCUE | RESCUEFAIL | UNRESCUEFAIL, Rescue) => RESCUING,
        (RESCUING, Done) => RESCUE,
        (RESCUING, Wait) => RESCUEWAIT,
        (RESCUING, Fail) => RESCUEFAIL,
        (RESCUEWAIT, Resume) => RESCUING,
        (RESCUEWAIT, Fail | Abort) => RESCUEFAIL,
        (RESCUE | RESCUEFAIL | RESCUEWAIT | UNRESCUEFAIL, Delete) => DELETING,
        (RESCUE | RESCUEFAIL | UNRESCUEFAIL, Unrescue) => UNRESCUING,
        (UNRESCUING, Done) => ACTIVE,
        (UNRESCUING, Fail) => UNRESCUEFAIL,
        _ => return None,
    })
}

/// `target_provision_state` while a node is in a transitional state
/// (Ironic's per-state `target`); None in stable states. Manual cleaning
/// targets `manageable` and is set explicitly by its flow.
pub fn target_of(state: &str) -> Option<&'static str> {
    Some(match state {
        VERIFYING => MANAGEABLE,
        DEPLOYING | DEPLOYWAIT => ACTIVE,
        DELETING => AVAILABLE,
        CLEANING | CLEANWAIT => AVAILABLE,
        INSPECTING | INSPECTWAIT => MANAGEABLE,
        // Ironic keeps the rescue targets on failure, too.
        RESCUING | RESCUEWAIT | RESCUEFAIL => RESCUE,
        UNRESCUING | UNRESCUEFAIL => ACTIVE,
        _ => return None,
    })
}

/// States whose progress is waited for with a timeout.
/// States a flow passes through between steps: a conductor that stops
/// there (restart, takeover) continues the flow.
/// States a flow passes through between its steps, with nobody waiting
/// on the agent: a conductor that stopped there resumes the flow.
pub const TRANSIENT_STATES: [&str; 7] = [
    VERIFYING, CLEANING, DEPLOYING, DELETING, INSPECTING, RESCUING, UNRESCUING,
];

/// States that wait for the agent to call back, under a timeout.
pub const WAIT_STATES: [&str; 4] = [DEPLOYWAIT, CLEANWAIT, INSPECTWAIT, RESCUEWAIT];

pub fn is_transient(state: &str) -> bool {
    TRANSIENT_STATES.contains(&state)
}

pub fn is_wait_state(state: &str) -> bool {
    WAIT_STATES.contains(&state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_rules() {
        assert!(lookup_allowed(DEPLOYWAIT, false));
        assert!(lookup_allowed(CLEANWAIT, false));
        assert!(!lookup_allowed(ENROLL, false));
        assert!(lookup_allowed(ENROLL, true));
        assert!(!lookup_allowed(ACTIVE, true));
    }

    #[test]
    fn ironic_transitions() {
        use Event::*;
        // The seeds' operator session, verb by verb.
        assert_eq!(next_state(ENROLL, Manage), Some(VERIFYING));
        assert_eq!(next_state(VERIFYING, Done), Some(MANAGEABLE));
        assert_eq!(next_state(MANAGEABLE, Provide), Some(CLEANING));
        assert_eq!(next_state(CLEANING, Done), Some(AVAILABLE));
        assert_eq!(next_state(AVAILABLE, Manage), Some(MANAGEABLE));
        assert_eq!(next_state(MANAGEABLE, Inspect), Some(INSPECTING));
        assert_eq!(next_state(INSPECTWAIT, Done), Some(MANAGEABLE));
        assert_eq!(next_state(MANAGEABLE, Clean), Some(CLEANING));
        assert_eq!(next_state(CLEANING, Manage), Some(MANAGEABLE));
        assert_eq!(next_state(AVAILABLE, Deploy), Some(DEPLOYING));
        assert_eq!(next_state(DEPLOYWAIT, Resume), Some(DEPLOYING));
        assert_eq!(next_state(DEPLOYING, Done), Some(ACTIVE));
        assert_eq!(next_state(ACTIVE, Delete), Some(DELETING));
        assert_eq!(next_state(DELETING, Clean), Some(CLEANING));
        // Illegal verbs.
        assert_eq!(next_state(ENROLL, Provide), None);
        assert_eq!(next_state(AVAILABLE, Inspect), None);
        assert_eq!(next_state(ACTIVE, Deploy), None);
        assert_eq!(next_state(CLEANWAIT, Deploy), None);
        assert_eq!(next_state(MANAGEABLE, Abort), None);
        assert_eq!(next_state(CLEANWAIT, Abort), Some(CLEANFAIL));
        assert_eq!(next_state(INSPECTWAIT, Abort), Some(INSPECTFAIL));
        assert_eq!(Event::from_target("active"), Some(Deploy));
        assert_eq!(Event::from_target("undeploy"), Some(Delete));
        assert_eq!(Event::from_target("fly"), None);
        assert_eq!(target_of(CLEANWAIT), Some(AVAILABLE));
        assert_eq!(target_of(ACTIVE), None);
        // Rescue and back.
        assert_eq!(next_state(ACTIVE, Rescue), Some(RESCUING));
        assert_eq!(next_state(RESCUING, Wait), Some(RESCUEWAIT));
        assert_eq!(next_state(RESCUEWAIT, Resume), Some(RESCUING));
        assert_eq!(next_state(RESCUING, Done), Some(RESCUE));
        assert_eq!(next_state(RESCUE, Unrescue), Some(UNRESCUING));
        assert_eq!(next_state(UNRESCUING, Done), Some(ACTIVE));
        assert_eq!(next_state(RESCUEWAIT, Fail), Some(RESCUEFAIL));
        assert_eq!(next_state(RESCUEFAIL, Unrescue), Some(UNRESCUING));
        assert_eq!(next_state(AVAILABLE, Rescue), None);
        assert_eq!(next_state(ACTIVE, Unrescue), None);
        assert_eq!(next_state(RESCUEWAIT, Unrescue), None);
        assert_eq!(target_of(RESCUEWAIT), Some(RESCUE));
        assert_eq!(Event::from_target("rescue"), Some(Rescue));
    }
}
