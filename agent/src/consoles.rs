//! `ipa-debug=1` in the ramdisk: log lines go to every console the kernel
//! lists in /proc/consoles (serial ports and the VGA tty), not only to
//! /dev/console (the last `console=`). A writer thread owns the consoles;
//! loggers hand it lines through a bounded queue and never wait: a full
//! queue or a console that cannot take more (a stuck serial line) loses
//! lines instead of blocking PID 1 or the agent.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// Log lines waiting for the writer thread; more are dropped.
const QUEUE: usize = 1024;

/// The device names in /proc/consoles (`ttyS0`, `tty0`, `ttyAMA0`, ...),
/// in the kernel's order.
pub fn parse_proc_consoles(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| !n.is_empty() && !n.contains('/') && !n.contains(".."))
        .map(str::to_string)
        .collect()
}

fn open_console(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
}

/// Where log lines go: every console, or stderr.
#[derive(Clone)]
pub struct Fanout {
    tx: SyncSender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
    /// Lines queued and not yet written.
    pending: Arc<AtomicUsize>,
}

/// This process's fan-out, for [`flush`] before power-off.
static ACTIVE: OnceLock<Fanout> = OnceLock::new();

/// Wait (at most `within`) for queued lines to reach the consoles: PID 1
/// calls this before reboot(2), which would cut them off.
pub fn flush(within: Duration) {
    let Some(f) = ACTIVE.get() else { return };
    let deadline = Instant::now() + within;
    while f.pending.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Fanout {
    /// Open every console of `proc_consoles` under `dev`; `None` if none
    /// opens (the caller keeps stderr).
    pub fn open(proc_consoles: &Path, dev: &Path) -> Option<(Self, Vec<String>)> {
        let text = std::fs::read_to_string(proc_consoles).ok()?;
        let mut consoles = Vec::new();
        for name in parse_proc_consoles(&text) {
            let path = dev.join(&name);
            if let Ok(f) = open_console(&path) {
                consoles.push((name, path, f));
            }
        }
        if consoles.is_empty() {
            return None;
        }
        let names = consoles.iter().map(|(n, _, _)| n.clone()).collect();
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
        let files: Vec<(std::path::PathBuf, File)> =
            consoles.into_iter().map(|(_, p, f)| (p, f)).collect();
        let pending = Arc::new(AtomicUsize::new(0));
        let written = pending.clone();
        std::thread::Builder::new()
            .name("consoles".into())
            .spawn(move || {
                let mut files = files;
                while let Ok(line) = rx.recv() {
                    for (path, f) in &mut files {
                        // Non-blocking: a console whose buffer is full loses
                        // (the rest of) this line.
                        if let Err(e) = f.write_all(&line) {
                            // EIO: the tty was hung up (the debug shell, its
                            // session leader, exited); a new open works.
                            if e.raw_os_error() == Some(libc::EIO) {
                                if let Ok(new) = open_console(path) {
                                    *f = new;
                                    let _ = f.write_all(&line);
                                }
                            }
                        }
                    }
                    written.fetch_sub(1, Ordering::Release);
                }
            })
            .ok()?;
        Some((
            Self {
                tx,
                dropped: Arc::default(),
                pending,
            },
            names,
        ))
    }

    fn send(&self, data: &[u8]) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(data.to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines lost to a full queue.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The log destination both PID 1 and the agent write through.
#[derive(Clone, Default)]
pub enum Console {
    #[default]
    Stderr,
    All(Fanout),
}

impl Console {
    /// With `debug` in the ramdisk: every console; else stderr.
    pub fn choose(debug: bool) -> Self {
        if !debug {
            return Self::Stderr;
        }
        match Fanout::open(Path::new("/proc/consoles"), Path::new("/dev")) {
            Some((f, _)) => {
                let _ = ACTIVE.set(f.clone());
                Self::All(f)
            }
            None => Self::Stderr,
        }
    }

    pub fn write_line(&self, data: &[u8]) {
        match self {
            // The console may be gone (closed serial port); nothing to do.
            Self::Stderr => {
                let _ = io::stderr().write_all(data);
            }
            Self::All(f) => f.send(data),
        }
    }
}

impl Write for Console {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_line(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Console {
    type Writer = Console;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_consoles_names() {
        let text = "ttyS0                -W- (EC p a)    4:64\n\
                    tty0                 -WU (E  p  )    4:1\n\
                    ../evil              -W- (E)         1:1\n";
        assert_eq!(parse_proc_consoles(text), vec!["ttyS0", "tty0"]);
    }

    #[test]
    fn lines_reach_every_console() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("consoles"),
            "a -W- (E) 4:64\nb -W- (E) 4:65\nmissing -W- (E) 4:66\n",
        )
        .unwrap();
        for n in ["a", "b"] {
            std::fs::write(dir.path().join(n), "").unwrap();
        }
        let (fanout, names) = Fanout::open(&dir.path().join("consoles"), dir.path()).unwrap();
        assert_eq!(names, vec!["a", "b"]);
        let console = Console::All(fanout);
        console.write_line(b"hello\n");
        drop(console); // the writer thread drains the queue, then ends
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for n in ["a", "b"] {
            while std::fs::read_to_string(dir.path().join(n)).unwrap() != "hello\n" {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{n} never got the line"
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }

    #[test]
    fn a_full_queue_drops_instead_of_blocking() {
        let (tx, _rx) = sync_channel(1);
        let f = Fanout {
            tx,
            dropped: Arc::default(),
            pending: Arc::default(),
        };
        for _ in 0..5 {
            f.send(b"x\n");
        }
        assert_eq!(f.dropped(), 4);
    }
}
