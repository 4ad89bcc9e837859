//! CPU burn-in, done natively instead of through stress-ng: every selected
//! CPU spins on arithmetic until the deadline.

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

/// Spin `workers` threads (0 = one per CPU) for `duration`; returns the
/// number of work rounds completed, a rough throughput figure for the log.
pub fn burn_cpu(duration: Duration, workers: usize) -> u64 {
    let workers = if workers == 0 {
        thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        workers
    };
    let deadline = Instant::now() + duration;
    let handles: Vec<_> = (0..workers)
        .map(|seed| {
            thread::spawn(move || {
                let mut rounds = 0u64;
                let mut x = seed as u64 | 1;
                while Instant::now() < deadline {
                    for _ in 0..10_000 {
                        // xorshift: cheap, cannot be optimised away.
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                    }
                    black_box(x);
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burns_for_the_requested_time() {
        let start = Instant::now();
        let rounds = burn_cpu(Duration::from_millis(200), 1);
        assert!(start.elapsed() >= Duration::from_millis(200));
        assert!(rounds > 0);
    }
}
