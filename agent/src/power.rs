//! Powering the machine off or rebooting it at the conductor's request
//! (`standby.power_off`, `standby.run_image`). Only the ramdisk may do
//! this: the agent as PID 1, the agent supervised by ferrite's PID 1, or
//! an explicit `ferrite-allow-power=1`. Anywhere else (a developer's host,
//! the test suite) the command fails instead of shutting the host down,
//! unless `ferrite-allow-power=exit` says the machine is this process: then
//! powering off ends it, as a machine going dark ends its agent.

use std::time::Duration;

use nix::sys::reboot::RebootMode;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tracing::{error, info};

/// Set in the agent's environment by PID 1 (`init`), so that the agent
/// knows it runs under it and asks it to power off or reboot.
pub const CHILD_MARKER: &str = "FERRITE_INIT_CHILD";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    PowerOff,
    Reboot,
}

impl PowerAction {
    /// What the agent sends PID 1 (busybox init's conventions).
    pub fn signal(self) -> Signal {
        match self {
            Self::PowerOff => Signal::SIGUSR2,
            Self::Reboot => Signal::SIGTERM,
        }
    }

    /// SIGINT is the kernel's Ctrl-Alt-Del.
    pub fn from_signal(sig: Signal) -> Option<Self> {
        match sig {
            Signal::SIGUSR2 | Signal::SIGUSR1 => Some(Self::PowerOff),
            Signal::SIGTERM | Signal::SIGINT => Some(Self::Reboot),
            _ => None,
        }
    }

    pub fn reboot_mode(self) -> RebootMode {
        match self {
            Self::PowerOff => RebootMode::RB_POWER_OFF,
            Self::Reboot => RebootMode::RB_AUTOBOOT,
        }
    }
}

/// What `ferrite-allow-power` lets the agent do outside the ramdisk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PowerPolicy {
    /// Refuse (the default): never shut a host down.
    #[default]
    Refuse,
    /// `1`: call reboot(2) ourselves.
    Direct,
    /// `exit`: the agent process is the machine; it ends (status 0 for power
    /// off, 3 for reboot) so a supervisor or test can "boot" it again.
    ExitProcess,
}

impl PowerPolicy {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "exit" => Some(Self::ExitProcess),
            _ => ferrite_protocol::loose::bool_word(value).map(|on| {
                if on {
                    Self::Direct
                } else {
                    Self::Refuse
                }
            }),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PowerError {
    #[error(
        "refusing to {0}: the agent is not running as the ramdisk's init (PID 1) \
         and ferrite-allow-power=1 is not on the kernel command line"
    )]
    NotAllowed(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// We are PID 1.
    Init,
    /// Ask our PID 1 (ferrite's init) by signal.
    AskInit,
    /// `ferrite-allow-power=1`: call reboot(2) ourselves.
    Direct,
    /// `ferrite-allow-power=exit`: end this process.
    Exit,
}

/// True when this process is ferrite's PID 1 or the agent it supervises.
pub fn in_ramdisk() -> bool {
    std::process::id() == 1 || supervised_by_init()
}

/// Spawned by ferrite's init: the marker is set, our parent is PID 1, and
/// PID 1 runs the same binary as we do (so a stray marker on a host whose
/// init is systemd never makes us signal it).
pub fn supervised_by_init() -> bool {
    std::env::var_os(CHILD_MARKER).is_some_and(|v| v == "1")
        && nix::unistd::getppid() == Pid::from_raw(1)
        && match (
            std::fs::read_link("/proc/1/exe"),
            std::fs::read_link("/proc/self/exe"),
        ) {
            (Ok(init), Ok(me)) => init == me,
            _ => false,
        }
}

fn route(action: PowerAction, policy: PowerPolicy) -> Result<Route, PowerError> {
    if std::process::id() == 1 {
        Ok(Route::Init)
    } else if supervised_by_init() {
        Ok(Route::AskInit)
    } else if policy == PowerPolicy::Direct {
        Ok(Route::Direct)
    } else if policy == PowerPolicy::ExitProcess {
        Ok(Route::Exit)
    } else {
        Err(PowerError::NotAllowed(match action {
            PowerAction::PowerOff => "power off",
            PowerAction::Reboot => "reboot",
        }))
    }
}

/// Check that we may, sync, and carry out `action` after `delay` (so the
/// command's result is recorded and reported before the machine goes).
pub fn schedule(
    action: PowerAction,
    policy: PowerPolicy,
    delay: Duration,
) -> Result<(), PowerError> {
    let route = route(action, policy)?;
    nix::unistd::sync();
    info!("{action:?} in {delay:?}");
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        nix::unistd::sync();
        match route {
            Route::Init => crate::init::power::shutdown(action),
            Route::AskInit => {
                if let Err(e) = nix::sys::signal::kill(Pid::from_raw(1), action.signal()) {
                    error!("asking init to {action:?}: {e}");
                }
            }
            Route::Direct => {
                let err = nix::sys::reboot::reboot(action.reboot_mode());
                error!("reboot(2) failed: {err:?}");
            }
            Route::Exit => {
                info!("{action:?}: ending the agent process (ferrite-allow-power=exit)");
                std::process::exit(match action {
                    PowerAction::PowerOff => 0,
                    PowerAction::Reboot => 3,
                });
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_outside_the_ramdisk() {
        // The test runner is neither PID 1 nor under ferrite's init.
        assert!(!in_ramdisk());
        let err = schedule(
            PowerAction::PowerOff,
            PowerPolicy::Refuse,
            Duration::from_secs(3600),
        )
        .unwrap_err();
        assert!(err.to_string().contains("refusing to power off"), "{err}");
        assert!(err.to_string().contains("ferrite-allow-power=1"), "{err}");
    }

    #[test]
    fn policy_values() {
        assert_eq!(PowerPolicy::parse("exit"), Some(PowerPolicy::ExitProcess));
        assert_eq!(PowerPolicy::parse("1"), Some(PowerPolicy::Direct));
        assert_eq!(PowerPolicy::parse("false"), Some(PowerPolicy::Refuse));
        assert_eq!(PowerPolicy::parse("halt"), None);
    }

    #[test]
    fn signals_round_trip() {
        assert_eq!(route(PowerAction::Reboot, PowerPolicy::Refuse).ok(), None);
        assert_eq!(
            route(PowerAction::PowerOff, PowerPolicy::ExitProcess).ok(),
            Some(Route::Exit)
        );
        for a in [PowerAction::PowerOff, PowerAction::Reboot] {
            assert_eq!(PowerAction::from_signal(a.signal()), Some(a));
        }
    }
}
