//! The opt-in debug shell: with `ferrite-debug-shell=1` on the kernel
//! command line and busybox in the ramdisk (the `debug` profile), PID 1
//! runs `busybox sh` on the serial console and starts it again when it
//! exits. Off by default: a shell on the console is root on the machine.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

pub const PARAM: &str = "ferrite-debug-shell";
/// Where the `debug` profile puts Debian's busybox-static.
pub const BUSYBOX: &str = "/bin/busybox";
/// A shell that ends is started again after this pause.
const RESPAWN_DELAY: Duration = Duration::from_secs(1);

/// Kernel names of serial consoles (x86 `ttyS`, arm64 PL011 `ttyAMA`,
/// virtio and hypervisor consoles `hvc`, USB adapters).
fn is_serial(name: &str) -> bool {
    ["ttyS", "ttyAMA", "hvc", "ttyUSB", "ttymxc"]
        .iter()
        .any(|p| {
            name.strip_prefix(p)
                .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
        })
}

/// The serial console: the last `console=` if it is one (that is
/// /dev/console), else the first serial port in /proc/consoles.
pub fn serial_console(console_param: Option<&str>, proc_consoles: &str) -> Option<String> {
    // `console=ttyS0,115200n8`: the device is before the comma.
    let from_param = console_param
        .map(|c| c.split(',').next().unwrap_or_default())
        .filter(|n| is_serial(n));
    from_param.map(str::to_string).or_else(|| {
        crate::consoles::parse_proc_consoles(proc_consoles)
            .into_iter()
            .find(|n| is_serial(n))
    })
}

/// The applets as links (sh, dmesg, ls, ...) next to busybox; existing
/// files are left alone.
pub fn install_applets(busybox: &Path) {
    let dir = busybox.parent().unwrap_or(Path::new("/bin"));
    match Command::new(busybox)
        .args(["--install", "-s"])
        .arg(dir)
        .stdin(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => warn!("busybox --install: {s}"),
        Err(e) => warn!("busybox --install: {e}"),
    }
}

pub struct DebugShell {
    busybox: PathBuf,
    tty: PathBuf,
    pid: Option<i32>,
    restart_at: Option<Instant>,
    installed: bool,
}

impl DebugShell {
    /// The shell the command line asks for, if this ramdisk can run it;
    /// says why not in the log.
    pub fn from_params(params: &BTreeMap<String, String>) -> Option<Self> {
        let value = params.get(PARAM)?;
        match ferrite_protocol::loose::bool_word(value) {
            Some(true) => {}
            Some(false) => return None,
            None => {
                error!("debug shell: {PARAM}={value:?} is not a boolean; no shell");
                return None;
            }
        }
        if !Path::new(BUSYBOX).exists() {
            error!(
                "debug shell: {PARAM}=1 but this ramdisk has no {BUSYBOX} \
                 (build it with PROFILE=debug); no shell"
            );
            return None;
        }
        let consoles = std::fs::read_to_string("/proc/consoles").unwrap_or_default();
        let Some(tty) = serial_console(params.get("console").map(String::as_str), &consoles) else {
            error!("debug shell: no serial console (console= or /proc/consoles); no shell");
            return None;
        };
        Some(Self {
            busybox: BUSYBOX.into(),
            tty: Path::new("/dev").join(tty),
            pid: None,
            restart_at: None,
            installed: false,
        })
    }

    pub fn start(&mut self) {
        self.restart_at = None;
        if !self.installed {
            install_applets(&self.busybox);
            self.installed = true;
        }
        match self.spawn() {
            Ok(pid) => {
                info!(
                    "debug shell: busybox sh on {}, pid {pid}",
                    self.tty.display()
                );
                self.pid = Some(pid);
            }
            Err(e) => {
                error!("debug shell on {}: {e:#}", self.tty.display());
                self.restart_at = Some(Instant::now() + RESPAWN_DELAY * 10);
            }
        }
    }

    fn spawn(&self) -> anyhow::Result<i32> {
        use anyhow::Context;
        let open = || -> std::io::Result<File> {
            OpenOptions::new().read(true).write(true).open(&self.tty)
        };
        let mut tty = open().with_context(|| format!("opening {}", self.tty.display()))?;
        let _ = write!(
            tty,
            "\r\n*** ferrite debug shell ({PARAM}=1): busybox sh as root.\r\n\
             *** The agent's log: {}; dmesg; /sys. Exit and it starts again.\r\n",
            crate::logfile::AGENT_LOG
        );
        let mut cmd = Command::new(&self.busybox);
        // argv[0] picks busybox's applet; the dash makes it a login shell.
        cmd.arg0("-sh")
            .env_clear()
            .env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
            .env("HOME", "/")
            .env("TERM", "vt100")
            .env("PS1", "ferrite-debug# ")
            .current_dir("/")
            .stdin(open()?)
            .stdout(open()?)
            .stderr(tty);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                // Its own session with the tty as controlling terminal:
                // job control and Ctrl-C work.
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY as _, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().context("starting busybox sh")?;
        Ok(child.id() as i32)
    }

    /// PID 1 reaped `pid`: if it was the shell, start it again soon.
    pub fn reaped(&mut self, pid: i32) {
        if self.pid == Some(pid) {
            info!("debug shell exited; a new one in {RESPAWN_DELAY:?}");
            self.pid = None;
            self.restart_at = Some(Instant::now() + RESPAWN_DELAY);
        }
    }

    /// Called from PID 1's loop: start the shell when it is due.
    pub fn tick(&mut self) {
        if self.restart_at.is_some_and(|t| Instant::now() >= t) {
            self.start();
        }
    }

    /// When PID 1 must next call [`Self::tick`].
    pub fn due(&self) -> Option<Instant> {
        self.restart_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLES: &str = "tty0                 -WU (E  p  )    4:1\n\
                            ttyS1                -W- (E  p a)    4:65\n";

    #[test]
    fn the_serial_console() {
        assert_eq!(
            serial_console(Some("ttyS0,115200n8"), CONSOLES).as_deref(),
            Some("ttyS0")
        );
        assert_eq!(
            serial_console(Some("ttyAMA0"), "").as_deref(),
            Some("ttyAMA0")
        );
        // console=tty0 (VGA) last: the first serial port the kernel has.
        assert_eq!(
            serial_console(Some("tty0"), CONSOLES).as_deref(),
            Some("ttyS1")
        );
        assert_eq!(serial_console(None, CONSOLES).as_deref(), Some("ttyS1"));
        assert_eq!(serial_console(Some("tty0"), "tty0 -WU (E p) 4:1\n"), None);
        assert!(!is_serial("ttyS0/../../x") && !is_serial("ttySx") && is_serial("hvc0"));
    }

    #[test]
    fn off_unless_asked() {
        assert!(DebugShell::from_params(&BTreeMap::new()).is_none());
        let off = BTreeMap::from([(PARAM.to_string(), "0".to_string())]);
        assert!(DebugShell::from_params(&off).is_none());
    }
}
