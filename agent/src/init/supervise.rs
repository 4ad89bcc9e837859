//! PID 1's main loop: run the agent as a child, restart it when it dies,
//! reap every orphan the kernel hands us, and act on power signals.

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use tracing::{debug, error, info, warn};

use crate::power::PowerAction;

const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// An agent that ran this long was healthy: restart it at once next time.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The signals PID 1 acts on: children, and power requests.
fn handled_signals() -> SigSet {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        mask.add(s);
    }
    mask
}

/// Block the handled signals in the calling thread, before PID 1 starts
/// any other: threads inherit the mask, and a power signal delivered to a
/// thread that does not block it would kill init (a kernel panic). Blocked,
/// they wait for the signalfd [`run`] opens.
pub fn block_signals() {
    if let Err(e) = handled_signals().thread_block() {
        error!("blocking signals: {e}");
    }
}

/// `shell`: the debug shell to run and respawn beside the agent, if any.
pub fn run(mut shell: Option<super::debug_shell::DebugShell>) -> ! {
    let mask = handled_signals();
    // Blocked signals wait in the signalfd (the child unblocks them).
    block_signals();
    let sfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
        Ok(fd) => Some(fd),
        Err(e) => {
            error!("signalfd: {e}; polling for children instead");
            None
        }
    };
    let mut agent = Agent::default();
    let mut rescue = super::rescue::RescueWatch::new("/".into());
    agent.start();
    if let Some(shell) = shell.as_mut() {
        shell.start();
    }
    loop {
        let next = [
            agent.restart_at,
            shell.as_ref().and_then(|s| s.due()),
            rescue.due(),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = next
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(5))
            .min(Duration::from_secs(5));
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::NONE);
        if let Some(sfd) = &sfd {
            let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => warn!("poll: {e}"),
            }
            while let Ok(Some(info)) = sfd.read_signal() {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                if let Some(action) = PowerAction::from_signal(sig) {
                    super::power::shutdown(action);
                }
            }
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
        agent.reap(|pid| {
            if let Some(shell) = shell.as_mut() {
                shell.reaped(pid);
            }
            rescue.reaped(pid);
        });
        if agent.restart_at.is_some_and(|t| Instant::now() >= t) {
            agent.start();
        }
        if let Some(shell) = shell.as_mut() {
            shell.tick();
        }
        rescue.tick();
    }
}

#[derive(Default)]
struct Agent {
    pid: Option<i32>,
    started: Option<Instant>,
    restart_at: Option<Instant>,
    backoff: Duration,
}

impl Agent {
    fn start(&mut self) {
        self.restart_at = None;
        // The same binary, not as PID 1: main() runs the agent proper. No
        // arguments: the kernel passes init its unknown boot words.
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0("ferrite-agent")
            .env(super::CHILD_MARKER, "1")
            .stdin(Stdio::null());
        // PID 1 blocks the signals its signalfd reads; the agent must get
        // them (SIGTERM at shutdown) the normal way.
        // SAFETY: sigemptyset and sigprocmask are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                Ok(())
            });
        }
        let spawned = cmd.spawn();
        match spawned {
            Ok(child) => {
                info!("agent started, pid {}", child.id());
                self.pid = Some(child.id() as i32);
                self.started = Some(Instant::now());
            }
            Err(e) => {
                error!("starting the agent: {e}");
                self.schedule_restart();
            }
        }
    }

    fn schedule_restart(&mut self) {
        if self.started.is_some_and(|s| s.elapsed() >= HEALTHY_RUN) {
            self.backoff = Duration::ZERO;
        }
        self.backoff = (self.backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
        warn!("restarting the agent in {:?}", self.backoff);
        self.restart_at = Some(Instant::now() + self.backoff);
    }

    /// Collect every exited child: ours and orphans reparented to PID 1.
    /// `other` hears of every other child that ended.
    fn reap(&mut self, mut other: impl FnMut(i32)) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => {
                    debug!("reaped {status:?}");
                    let pid = status.pid().map(|p| p.as_raw());
                    if pid.is_some() && pid == self.pid {
                        error!("the agent ended ({status:?})");
                        self.pid = None;
                        self.schedule_restart();
                    } else if let Some(pid) = pid {
                        other(pid);
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    warn!("waitpid: {e}");
                    return;
                }
            }
        }
    }
}
