//! PID 1's side of rescue mode. Once the agent finalized a rescue (the
//! marker `/etc/.rescued` and the rescue user's hash in
//! `/etc/ipa-rescue-config/ipa-rescue-password`, see `crate::rescue`), the
//! agent holds still and PID 1 starts the rescue service: the ssh server
//! (`ferrite-agent rescue-sshd`, `crate::rescue::sshd`) on port 22, with
//! the user `rescue` and that hash, started again whenever it ends. The
//! shell it gives is the `rescue` profile's busybox (`/bin/sh`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

/// The shell of rescue logins (a link to busybox, made at rescue start).
const SHELL: &str = "/bin/sh";
/// A server that ended is started again after this pause.
const RESPAWN_DELAY: Duration = Duration::from_secs(1);

pub struct RescueWatch {
    root: PathBuf,
    started: bool,
    server: Option<i32>,
    restart_at: Option<Instant>,
}

impl RescueWatch {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            started: false,
            server: None,
            restart_at: None,
        }
    }

    /// Called from PID 1's loop: start the rescue service once the marker
    /// appears, and the server again when it is due.
    pub fn tick(&mut self) {
        if !self.started && crate::rescue::is_rescued(&self.root) {
            self.started = true;
            self.start_service();
        }
        if self.restart_at.is_some_and(|t| Instant::now() >= t) {
            self.spawn_server();
        }
    }

    /// When PID 1 must next call [`Self::tick`].
    pub fn due(&self) -> Option<Instant> {
        self.restart_at
    }

    /// PID 1 reaped `pid`: if it was the server, start it again soon.
    pub fn reaped(&mut self, pid: i32) {
        if self.server == Some(pid) {
            warn!("rescue ssh server exited; a new one in {RESPAWN_DELAY:?}");
            self.server = None;
            self.restart_at = Some(Instant::now() + RESPAWN_DELAY);
        }
    }

    fn start_service(&mut self) {
        info!(
            "rescue mode: the agent API is closed; rescue password hash in {}",
            crate::rescue::password_file(&self.root).display()
        );
        let busybox = Path::new(super::debug_shell::BUSYBOX);
        if busybox.exists() {
            super::debug_shell::install_applets(busybox);
        }
        if !Path::new(SHELL).exists() {
            error!(
                "rescue mode: this ramdisk has no shell ({SHELL}; build it with \
                 PROFILE=rescue); no ssh server, the rescue user cannot log in"
            );
            return;
        }
        self.spawn_server();
    }

    fn spawn_server(&mut self) {
        self.restart_at = None;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0("ferrite-rescue-sshd")
            .arg("rescue-sshd")
            .arg("--password-file")
            .arg(crate::rescue::password_file(&self.root))
            .args(["--shell", SHELL])
            // Its log goes to the console and the agent's log file.
            .env(super::CHILD_MARKER, "1")
            .stdin(Stdio::null());
        // SAFETY: sigemptyset and sigprocmask are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                // PID 1 blocks the signals its signalfd reads.
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(child) => {
                info!(
                    "rescue mode: ssh server started, pid {}: log in as \"rescue\" on port 22 \
                     with the rescue password",
                    child.id()
                );
                self.server = Some(child.id() as i32);
            }
            Err(e) => {
                error!("rescue mode: starting the ssh server: {e}");
                self.restart_at = Some(Instant::now() + RESPAWN_DELAY * 10);
            }
        }
    }
}
