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
}
