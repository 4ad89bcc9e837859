//! Memory burn-in with the semantics of IPA's `burnin_memory` (stress-ng's
//! `--vm` stressor): `agent_burnin_vm_vm` workers (0: one per CPU) stress
//! `agent_burnin_vm_vm-bytes` (default `98%` of the available memory,
//! shared among the workers; a size such as `512M` is per worker) for
//! `agent_burnin_vm_timeout` seconds. Each pass writes a pattern derived
//! from the address and the pass over the whole region and reads it back,
//! so a bit that does not hold is reported, not just survived.
//!
//! The workers run in a child process (`ferrite-agent burn-memory`) whose
//! OOM score is the highest: asking for more memory than the machine has
//! gets the child killed and the step failed, never the agent.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// `--vm-bytes`: a share of the available memory or a size per worker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VmBytes {
    Percent(f64),
    Bytes(u64),
}

impl VmBytes {
    /// stress-ng's forms: `98%`, `4096`, `512k`, `512m`, `2g` (binary units).
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("bad percentage {s:?}"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!("{s:?}: a percentage must be in (0, 100]"));
            }
            return Ok(Self::Percent(p));
        }
        let (num, shift) = match t.chars().last().map(|c| c.to_ascii_lowercase()) {
            Some('b') => (&t[..t.len() - 1], 0),
            Some('k') => (&t[..t.len() - 1], 10),
            Some('m') => (&t[..t.len() - 1], 20),
            Some('g') => (&t[..t.len() - 1], 30),
            _ => (t, 0),
        };
        let n: u64 = num.trim().parse().map_err(|_| format!("bad size {s:?}"))?;
        n.checked_shl(shift)
            .filter(|v| v >> shift == n && *v > 0)
            .map(Self::Bytes)
            .ok_or_else(|| format!("{s:?}: the size must be positive and below 16 EiB"))
    }
}

/// What the child is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub workers: usize,
    pub bytes_per_worker: u64,
    pub duration: Duration,
}

/// The smallest region a worker stresses (stress-ng's minimum is 4 KiB;
/// below a page nothing is tested).
const MIN_BYTES: u64 = 4096;

/// Workers and sizes from the settings and what the machine has.
pub fn plan(workers: u64, bytes: VmBytes, available: u64, cpus: usize, duration: Duration) -> Plan {
    let workers = if workers == 0 {
        cpus.max(1)
    } else {
        workers as usize
    };
    let per_worker = match bytes {
        VmBytes::Percent(p) => ((available as f64 * p / 100.0) as u64) / workers as u64,
        VmBytes::Bytes(b) => b,
    };
    Plan {
        workers,
        bytes_per_worker: (per_worker / 4096 * 4096).max(MIN_BYTES),
        duration,
    }
}

/// `MemAvailable` from `<procfs>/meminfo`, in bytes.
pub fn mem_available(procfs: &Path) -> io::Result<u64> {
    let text = std::fs::read_to_string(procfs.join("meminfo"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no MemAvailable in meminfo"))
}

/// What one worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub passes: u64,
    pub bytes_verified: u64,
    pub errors: u64,
    /// The first bad word: offset in the worker's region, expected, found.
    pub first_error: Option<(u64, u64, u64)>,
}

/// An anonymous private mapping, unmapped on drop (a failed mmap is an
/// error to report, where a `Vec` of that size would abort the process).
struct Region {
    ptr: *mut u64,
    words: usize,
}

impl Region {
    fn new(bytes: u64) -> io::Result<Self> {
        let len = usize::try_from(bytes).map_err(|_| io::Error::other("region too large"))?;
        // SAFETY: a fresh anonymous mapping; the pointer is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr.cast(),
            words: len / 8,
        })
    }

    fn words(&mut self) -> &mut [u64] {
        // SAFETY: the mapping is `words * 8` bytes, writable, owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.words) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe {
            libc::munmap(self.ptr.cast(), self.words * 8);
        }
    }
}

/// The pattern word at `index` in pass `pass`: every word differs from its
/// neighbours and from the same word in the previous pass.
fn pattern(index: u64, pass: u64) -> u64 {
    let mut x =
        index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ pass.wrapping_mul(0xd1b5_4a32_d192_ed03);
    x ^= x >> 31;
    x.wrapping_mul(0x94d0_49bb_1331_11eb) ^ pass
}

/// Stress `bytes` until `deadline` (at least one full pass).
pub fn run_worker(bytes: u64, deadline: Instant) -> io::Result<WorkerReport> {
    let mut region = Region::new(bytes)?;
    let words = region.words();
    let mut report = WorkerReport::default();
    loop {
        let pass = report.passes;
        for (i, w) in words.iter_mut().enumerate() {
            // Volatile: the compiler may not skip a store it can prove is read back.
            // SAFETY: `w` is a valid, aligned, exclusive reference.
            unsafe { std::ptr::write_volatile(w, pattern(i as u64, pass)) };
        }
        for (i, w) in words.iter().enumerate() {
            // SAFETY: as above, for reading.
            let found = unsafe { std::ptr::read_volatile(w) };
            let expected = pattern(i as u64, pass);
            if found != expected {
                report.errors += 1;
                report
                    .first_error
                    .get_or_insert(((i * 8) as u64, expected, found));
            }
        }
        report.passes += 1;
        report.bytes_verified += words.len() as u64 * 8;
        if Instant::now() >= deadline {
            return Ok(report);
        }
    }
}

/// What the child prints: one report per worker, or why a worker could
/// not start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub workers: Vec<Result<WorkerReport, String>>,
}

/// Run the plan's workers on threads (the child process's work).
pub fn run(plan: Plan) -> Report {
    let deadline = Instant::now() + plan.duration;
    let handles: Vec<_> = (0..plan.workers)
        .map(|_| std::thread::spawn(move || run_worker(plan.bytes_per_worker, deadline)))
        .collect();
    Report {
        workers: handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(Ok(r)) => Ok(r),
                Ok(Err(e)) => Err(format!("mapping {} bytes: {e}", plan.bytes_per_worker)),
                Err(_) => Err("the worker panicked".into()),
            })
            .collect(),
    }
}

/// Why the burn-in did not pass.
#[derive(Debug, thiserror::Error)]
pub enum BurnError {
    #[error("could not start the burn-in process: {0}")]
    Spawn(#[source] io::Error),
    #[error("the burn-in process was killed by signal {0} (SIGKILL is most likely the OOM killer: ask for fewer bytes)")]
    Killed(i32),
    #[error("the burn-in process did not finish within {0:?} of its deadline and was killed")]
    Overdue(Duration),
    #[error("the burn-in process failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error("the burn-in process's report is unreadable: {0}")]
    Report(String),
    #[error("worker {worker}: {message}")]
    Worker { worker: usize, message: String },
    #[error("{errors} memory errors; the first in worker {worker} at offset {offset:#x}: expected {expected:#018x}, found {found:#018x}")]
    Errors {
        errors: u64,
        worker: usize,
        offset: u64,
        expected: u64,
        found: u64,
    },
}

/// A pass over the whole region may outlast the deadline; this much more
/// is allowed before the child is killed.
const GRACE: Duration = Duration::from_secs(600);
/// The child's report is a few hundred bytes per worker.
const REPORT_LIMIT: u64 = 1 << 20;

/// Run `plan` in a child process of `exe` (this binary) and judge its report.
pub fn run_in_child(exe: &Path, plan: Plan) -> Result<Report, BurnError> {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    let mut child = Command::new(exe)
        .arg("burn-memory")
        .arg("--workers")
        .arg(plan.workers.to_string())
        .arg("--bytes-per-worker")
        .arg(plan.bytes_per_worker.to_string())
        .arg("--seconds")
        .arg(plan.duration.as_secs().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(BurnError::Spawn)?;
    // Drain both pipes on threads, bounded, so the child never blocks on them.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(p) = pipe {
                let _ = p.take(REPORT_LIMIT).read_to_end(&mut out);
            }
            out
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let give_up = Instant::now() + plan.duration + GRACE;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(BurnError::Spawn)? {
            break status;
        }
        if Instant::now() >= give_up {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BurnError::Overdue(GRACE));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if let Some(signal) = status.signal() {
        return Err(BurnError::Killed(signal));
    }
    if !status.success() {
        return Err(BurnError::Failed {
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&stderr)
                .trim()
                .chars()
                .take(500)
                .collect(),
        });
    }
    let report: Report =
        serde_json::from_slice(&stdout).map_err(|e| BurnError::Report(e.to_string()))?;
    judge(&report)?;
    Ok(report)
}

/// A worker that could not run, or any memory error, fails the burn-in.
pub fn judge(report: &Report) -> Result<(), BurnError> {
    let mut errors = 0;
    let mut first = None;
    for (worker, r) in report.workers.iter().enumerate() {
        match r {
            Err(message) => {
                return Err(BurnError::Worker {
                    worker,
                    message: message.clone(),
                })
            }
            Ok(r) => {
                errors += r.errors;
                if let (None, Some(e)) = (first, r.first_error) {
                    first = Some((worker, e));
                }
            }
        }
    }
    match first {
        None => Ok(()),
        Some((worker, (offset, expected, found))) => Err(BurnError::Errors {
            errors,
            worker,
            offset,
            expected,
            found,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_bytes_forms() {
        assert_eq!(VmBytes::parse("98%").unwrap(), VmBytes::Percent(98.0));
        assert_eq!(VmBytes::parse("512m").unwrap(), VmBytes::Bytes(512 << 20));
        assert_eq!(VmBytes::parse("2G").unwrap(), VmBytes::Bytes(2 << 30));
        assert_eq!(VmBytes::parse("4096").unwrap(), VmBytes::Bytes(4096));
        for bad in ["", "0", "0%", "101%", "lots", "-1g", "99999999999999g"] {
            assert!(VmBytes::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_percentage_is_shared_and_a_size_is_per_worker() {
        let d = Duration::from_secs(1);
        let p = plan(0, VmBytes::Percent(50.0), 8 << 30, 4, d);
        assert_eq!((p.workers, p.bytes_per_worker), (4, 1 << 30));
        let p = plan(2, VmBytes::Bytes(100 << 20), 8 << 30, 4, d);
        assert_eq!((p.workers, p.bytes_per_worker), (2, 100 << 20));
        assert_eq!(
            plan(1, VmBytes::Bytes(10), 1 << 30, 1, d).bytes_per_worker,
            MIN_BYTES
        );
    }

    #[test]
    fn meminfo_gives_available_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("meminfo"),
            "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n",
        )
        .unwrap();
        assert_eq!(mem_available(dir.path()).unwrap(), 20_000_000 * 1024);
        std::fs::write(dir.path().join("meminfo"), "MemTotal: 1 kB\n").unwrap();
        assert!(mem_available(dir.path()).is_err());
    }

    #[test]
    fn a_worker_verifies_every_word_of_every_pass() {
        let r = run_worker(1 << 20, Instant::now() + Duration::from_millis(50)).unwrap();
        assert!(r.passes >= 1);
        assert_eq!(r.bytes_verified, r.passes << 20);
        assert_eq!((r.errors, r.first_error), (0, None));
    }

    #[test]
    fn patterns_change_between_neighbours_and_passes() {
        assert_ne!(pattern(0, 0), pattern(1, 0));
        assert_ne!(pattern(5, 0), pattern(5, 1));
    }

    #[test]
    fn errors_and_dead_workers_fail_the_burn_in() {
        let good = WorkerReport {
            passes: 2,
            bytes_verified: 8192,
            ..Default::default()
        };
        let bad = WorkerReport {
            errors: 3,
            first_error: Some((0x40, 1, 3)),
            ..good.clone()
        };
        assert!(judge(&Report {
            workers: vec![Ok(good.clone()), Ok(good.clone())]
        })
        .is_ok());
        let e = judge(&Report {
            workers: vec![Ok(good.clone()), Ok(bad)],
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "3 memory errors; the first in worker 1 at offset 0x40: expected 0x0000000000000001, found 0x0000000000000003"
        );
        let e = judge(&Report {
            workers: vec![Ok(good), Err("mapping: ENOMEM".into())],
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("worker 1: mapping"), "{e}");
    }

    #[test]
    fn an_impossible_mapping_is_an_error_not_an_abort() {
        let report = run(Plan {
            workers: 1,
            bytes_per_worker: u64::MAX / 2,
            duration: Duration::ZERO,
        });
        assert!(report.workers[0].is_err(), "{report:?}");
    }
}
