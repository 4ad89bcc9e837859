//! PID 1's end: stop everything, flush the disks, and reboot(2).

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::{error, info};

use crate::power::PowerAction;

/// Give processes this long to exit on SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(3);

pub fn shutdown(action: PowerAction) -> ! {
    info!("{action:?}: stopping all processes");
    nix::unistd::sync();
    let all = Pid::from_raw(-1);
    let _ = kill(all, Signal::SIGTERM);
    let started = Instant::now();
    if reap_until(started + GRACE) {
        info!("all processes ended in {:?}", started.elapsed());
    } else {
        info!("processes left after {GRACE:?}: SIGKILL");
        let _ = kill(all, Signal::SIGKILL);
        reap_until(Instant::now() + Duration::from_secs(1));
    }
    nix::unistd::sync();
    // As IPA's `hwclock --systohc`; bounded, and only logged if it fails.
    super::clock::rtc::save_at_shutdown();
    info!("{action:?} now");
    // ipa-debug's console writer: let the last lines out first.
    crate::consoles::flush(Duration::from_millis(500));
    let err = nix::sys::reboot::reboot(action.reboot_mode());
    // Only reachable if the kernel refused: PID 1 must not exit.
    error!("reboot(2) failed: {err:?}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Reap children until none are left (true) or the deadline passes.
fn reap_until(deadline: Instant) -> bool {
    while Instant::now() < deadline {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::ECHILD) => return true,
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(50)),
            _ => {}
        }
    }
    false
}
