//! Limits on clients: the file descriptor ceiling, the listen backlog
//! against somaxconn, and a rate-limited warning when the connection cap
//! bites.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Descriptors kept free for the database, boot files, TFTP, BMC calls.
const SPARE_FDS: u64 = 256;

/// Raise RLIMIT_NOFILE's soft limit to the hard one; the connection cap
/// that the result allows.
pub fn raise_nofile(max_connections: usize) -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return max_connections;
    };
    let soft = match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => hard,
        Err(e) => {
            tracing::warn!(soft, hard, error = %e, "could not raise RLIMIT_NOFILE");
            soft
        }
    };
    let reachable = usize::try_from(soft.saturating_sub(SPARE_FDS)).unwrap_or(usize::MAX);
    if reachable < max_connections {
        tracing::warn!(
            max_connections,
            nofile = soft,
            using = reachable,
            "--max-connections is above what RLIMIT_NOFILE allows; lowered"
        );
        return reachable.max(1);
    }
    max_connections
}

/// Warn when the kernel will cap `--listen-backlog`.
pub fn check_backlog(backlog: u32) {
    let Some(somaxconn) = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return;
    };
    if backlog > somaxconn {
        tracing::warn!(
            listen_backlog = backlog,
            somaxconn,
            "--listen-backlog is above net.core.somaxconn, which caps it: raise it with sysctl -w net.core.somaxconn={backlog}"
        );
    }
}

/// At most one warning per `every`, counting the waits in between.
pub struct CapLog {
    every: Duration,
    last: Mutex<Option<Instant>>,
    waits: AtomicU64,
}

impl CapLog {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(None),
            waits: AtomicU64::new(0),
        }
    }

    pub fn bite(&self, cap: usize) {
        let waits = self.waits.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.is_some_and(|at| at.elapsed() < self.every) {
            return;
        }
        *last = Some(Instant::now());
        self.waits.store(0, Ordering::Relaxed);
        tracing::warn!(
            max_connections = cap,
            waited = waits,
            "connection cap reached: new connections wait until slow or idle clients finish or time out (--max-connections, --header-read-timeout)"
        );
    }
}
