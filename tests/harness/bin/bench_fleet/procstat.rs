//! CPU seconds and peak memory of the processes under test, from /proc:
//! `utime + stime` of `/proc/<pid>/stat`, `VmRSS` of `status` and, for
//! process families (Ironic's forked workers, PostgreSQL's backends), the
//! proportional set size of `smaps_rollup`, which counts shared pages once.

use std::fs;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

/// Which processes one figure sums.
#[derive(Clone, Debug)]
pub enum Scope {
    /// One process.
    Pid(u32),
    /// Every process in this process group (Ironic's launcher and workers).
    Group(u32),
    /// This process and its descendants (a PostgreSQL postmaster).
    Tree(u32),
}

#[derive(Clone, Debug)]
pub struct Watched {
    pub label: String,
    pub scope: Scope,
}

/// `/proc/<pid>/stat` fields after the command name: (ppid, pgrp, ticks).
fn stat(pid: u32) -> Option<(u32, u32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): ppid is 4, pgrp 5, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let pgrp = f.get(2)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, pgrp, utime + stime))
}

/// A `kB` line of a /proc status-like file.
fn kib(path: &str, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Scope {
    fn pids(&self) -> Vec<u32> {
        match *self {
            Scope::Pid(pid) => vec![pid],
            Scope::Group(pgid) => all_pids()
                .into_iter()
                .filter(|&p| stat(p).is_some_and(|(_, g, _)| g == pgid))
                .collect(),
            Scope::Tree(root) => {
                let table: Vec<(u32, u32)> = all_pids()
                    .into_iter()
                    .filter_map(|p| stat(p).map(|(pp, _, _)| (p, pp)))
                    .collect();
                let mut out = vec![root];
                let mut i = 0;
                while i < out.len() {
                    let parent = out[i];
                    out.extend(
                        table
                            .iter()
                            .filter(|(_, pp)| *pp == parent)
                            .map(|(p, _)| *p),
                    );
                    i += 1;
                }
                out
            }
        }
    }

    fn is_family(&self) -> bool {
        !matches!(self, Scope::Pid(_))
    }
}

fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

/// One sample of a watched scope.
#[derive(Clone, Copy, Default)]
struct Sample {
    cpu_s: f64,
    rss_kib: u64,
    pss_kib: u64,
}

fn sample(scope: &Scope, tps: f64) -> Sample {
    let mut s = Sample::default();
    for pid in scope.pids() {
        if let Some((_, _, ticks)) = stat(pid) {
            s.cpu_s += ticks as f64 / tps;
        }
        s.rss_kib += kib(&format!("/proc/{pid}/status"), "VmRSS:").unwrap_or(0);
        if scope.is_family() {
            s.pss_kib += kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:").unwrap_or(0);
        }
    }
    s
}

/// What one process (family) used over a phase.
#[derive(Clone, Debug, Serialize)]
pub struct Usage {
    pub label: String,
    pub cpu_seconds: f64,
    /// Of one core, over the phase's wall time.
    pub cpu_percent: f64,
    pub peak_rss_mib: f64,
    /// Families only: shared pages counted once.
    pub peak_pss_mib: Option<f64>,
}

/// Samples the watched processes (and the simulator itself) every 200 ms
/// for peaks; CPU is read at the edges of a phase.
pub struct Meter {
    watched: Vec<Watched>,
    tps: f64,
    peaks: Mutex<Vec<(u64, u64)>>,
}

pub struct Mark {
    cpu: Vec<f64>,
    at: std::time::Instant,
}

impl Meter {
    /// Starts the sampler; it runs until the meter is dropped.
    pub fn start(mut watched: Vec<Watched>) -> Arc<Self> {
        watched.push(Watched {
            label: "simulator".into(),
            scope: Scope::Pid(std::process::id()),
        });
        let n = watched.len();
        let meter = Arc::new(Self {
            watched,
            tps: ticks_per_second(),
            peaks: Mutex::new(vec![(0, 0); n]),
        });
        let weak = Arc::downgrade(&meter);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let Some(meter) = weak.upgrade() else { return };
                let meter2 = meter.clone();
                // /proc walks are blocking file reads.
                let _ = tokio::task::spawn_blocking(move || meter2.sample_peaks()).await;
            }
        });
        meter
    }

    fn sample_peaks(&self) {
        let now: Vec<Sample> = self
            .watched
            .iter()
            .map(|w| sample(&w.scope, self.tps))
            .collect();
        if let Ok(mut peaks) = self.peaks.lock() {
            for (p, s) in peaks.iter_mut().zip(now) {
                p.0 = p.0.max(s.rss_kib);
                p.1 = p.1.max(s.pss_kib);
            }
        }
    }

    /// Start of a phase: CPU so far, peaks reset.
    pub fn mark(&self) -> Mark {
        if let Ok(mut peaks) = self.peaks.lock() {
            peaks.iter_mut().for_each(|p| *p = (0, 0));
        }
        self.sample_peaks();
        Mark {
            cpu: self.cpu_now(),
            at: std::time::Instant::now(),
        }
    }

    fn cpu_now(&self) -> Vec<f64> {
        self.watched
            .iter()
            .map(|w| sample(&w.scope, self.tps).cpu_s)
            .collect()
    }

    /// End of a phase begun at `mark`.
    pub fn usage_since(&self, mark: &Mark) -> Vec<Usage> {
        self.sample_peaks();
        let wall = mark.at.elapsed().as_secs_f64().max(1e-3);
        let cpu = self.cpu_now();
        let peaks = self.peaks.lock().map(|p| p.clone()).unwrap_or_default();
        self.watched
            .iter()
            .enumerate()
            .map(|(i, w)| {
                // A family member that exited takes its ticks along: never below 0.
                let used = (cpu[i] - mark.cpu.get(i).copied().unwrap_or(0.0)).max(0.0);
                let (rss, pss) = peaks.get(i).copied().unwrap_or((0, 0));
                Usage {
                    label: w.label.clone(),
                    cpu_seconds: round3(used),
                    cpu_percent: round3(100.0 * used / wall),
                    peak_rss_mib: round3(rss as f64 / 1024.0),
                    peak_pss_mib: w.scope.is_family().then(|| round3(pss as f64 / 1024.0)),
                }
            })
            .collect()
    }
}

pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
