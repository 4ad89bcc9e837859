//! Progress of one image write, shared between the pipeline stages, the
//! command result (`GET /v1/commands/<id>`), the log and the CLI bar.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::{json, Value};

/// Where one write's time went, per stage, in nanoseconds (stages with
/// several threads sum them). Logged at the end: the profile of a deploy.
#[derive(Default)]
pub struct StageTimes {
    /// The decoder waiting for the download.
    pub wait_download: AtomicU64,
    /// The decoder waiting for the hash thread to catch up.
    pub wait_hash: AtomicU64,
    /// The decoder waiting for the writer (all buffers in flight).
    pub wait_writer: AtomicU64,
    /// The hash thread hashing.
    pub hash: AtomicU64,
    /// The I/O threads writing data and zeroing ranges.
    pub write: AtomicU64,
    pub zero: AtomicU64,
}

impl StageTimes {
    pub fn add(counter: &AtomicU64, since: Instant) {
        counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn summary(&self) -> String {
        let s = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / 1e9;
        format!(
            "decoder waited {:.2} s for the download, {:.2} s for the hash, {:.2} s for the writer; hashing {:.2} s, writing {:.2} s, zeroing {:.2} s",
            s(&self.wait_download),
            s(&self.wait_hash),
            s(&self.wait_writer),
            s(&self.hash),
            s(&self.write),
            s(&self.zero),
        )
    }
}

pub struct Progress {
    started: Instant,
    pub stages: StageTimes,
    pub received: AtomicU64,
    pub written: AtomicU64,
    /// Download size when known (0: unknown).
    pub total: AtomicU64,
    /// Bytes the target will hold (0: unknown).
    pub target_total: AtomicU64,
    pub retries: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            stages: StageTimes::default(),
            received: AtomicU64::new(0),
            written: AtomicU64::new(0),
            total: AtomicU64::new(0),
            target_total: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }
}

impl Progress {
    pub fn add_received(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_written(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Value {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let received = self.received.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        json!({
            "bytes_received": received,
            "bytes_total": (total > 0).then_some(total),
            "bytes_written": self.written.load(Ordering::Relaxed),
            "target_bytes": match self.target_total.load(Ordering::Relaxed) { 0 => None, n => Some(n) },
            "rate_bytes_per_second": (received as f64 / secs) as u64,
            "elapsed_seconds": (secs * 10.0).round() / 10.0,
            "retries": self.retries.load(Ordering::Relaxed),
        })
    }

    pub fn summary(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let received = self.received.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        let pct = if total > 0 {
            format!(" ({:.0}%)", received as f64 * 100.0 / total as f64)
        } else {
            String::new()
        };
        format!(
            "received {} MiB{pct}, written {} MiB, {:.1} MiB/s",
            received >> 20,
            self.written.load(Ordering::Relaxed) >> 20,
            received as f64 / secs / 1048576.0
        )
    }
}
