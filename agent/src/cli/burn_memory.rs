//! `ferrite-agent burn-memory`: the memory burn-in's child process (see
//! `hardware::burnin::memory`). It makes itself the OOM killer's first
//! choice, runs the workers and prints their reports as one JSON line.

use std::time::Duration;

use crate::hardware::burnin::memory::{self, Plan};

#[derive(clap::Args, Debug)]
pub struct BurnMemoryArgs {
    /// Worker threads.
    #[arg(long)]
    pub workers: usize,
    /// Bytes each worker maps and stresses.
    #[arg(long)]
    pub bytes_per_worker: u64,
    /// How long to keep stressing (each worker finishes its pass).
    #[arg(long)]
    pub seconds: u64,
}

pub fn run(args: BurnMemoryArgs) -> anyhow::Result<()> {
    // Best effort: without it the OOM killer still prefers the bigger process.
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "1000") {
        tracing::warn!(error = %e, "could not raise the burn-in's OOM score");
    }
    let report = memory::run(Plan {
        workers: args.workers,
        bytes_per_worker: args.bytes_per_worker,
        duration: Duration::from_secs(args.seconds),
    });
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
