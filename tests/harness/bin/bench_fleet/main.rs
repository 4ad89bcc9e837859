//! ferrite-bench-fleet: N simulated ironic-python-agents against one
//! configuration (issue 17, docs/scale-plan.md §5.4), as scripts/bench-fleet
//! runs it. Phases: enrollment through the API; a boot storm (N agents start
//! within `--storm-spread` seconds); steady heartbeat rates (warm-up, then a
//! measured window); then the highest rate held with p99 under the target
//! and no errors. Writes one JSON report and prints its markdown table;
//! `table` prints one table from several reports.

mod agent;
mod conn;
mod fake_agent;
mod histogram;
mod procstat;
mod report;
mod systems;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::sync::watch;
use tokio::task::JoinSet;

use agent::{Fleet, Phase, Spec, Stats};
use conn::Endpoint;
use procstat::Meter;
use report::{KindReport, ListReport, Report, SteadyReport, StormReport};
use systems::Kind;

#[derive(Parser)]
#[command(about = "Fleet simulator and benchmark (issue 17)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmark one configuration; write its JSON report.
    Run(Box<RunArgs>),
    /// Print the markdown tables of several JSON reports.
    Table { reports: Vec<PathBuf> },
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long, value_enum)]
    system: Kind,
    /// Simulated agents, one node each.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Offered heartbeat rates of the steady phases, per second.
    #[arg(long, value_delimiter = ',', default_value = "50,200,800,3200")]
    rates: Vec<f64>,
    /// Short phases (3 s warm-up, 10 s measured, 120 s storm limit).
    #[arg(long)]
    quick: bool,
    /// Warm-up before each measured window, seconds (10; quick 3).
    #[arg(long)]
    warmup: Option<f64>,
    /// Measured window per rate, seconds (60; quick 10).
    #[arg(long)]
    measure: Option<f64>,
    /// All agents boot within this many seconds.
    #[arg(long, default_value_t = 10.0)]
    storm_spread: f64,
    /// Give up waiting for every agent's first heartbeat after this (300; quick 120).
    #[arg(long)]
    storm_timeout: Option<f64>,
    /// `heartbeat_timeout` instead of the lookup's, outside the steady phases.
    #[arg(long)]
    heartbeat_timeout: Option<f64>,
    /// This share of the agents announce a callback_url where nothing listens.
    #[arg(long, default_value_t = 0.0)]
    unreachable_fraction: f64,
    /// Enrollment requests in flight.
    #[arg(long, default_value_t = 16)]
    enroll_in_flight: usize,
    /// Per request, as IPA's `http_request_timeout`.
    #[arg(long, default_value_t = 30.0)]
    request_timeout: f64,
    /// A rate is held when the heartbeats' p99 is below this and nothing failed.
    #[arg(long, default_value_t = 100.0)]
    p99_target_ms: f64,
    /// `--system external`: API URLs (agents spread round-robin).
    #[arg(long)]
    api_url: Vec<String>,
    /// `--system external`: `label=pid` of a server process (tree) to measure.
    #[arg(long)]
    watch_pid: Vec<String>,
    /// `--system external`: `Authorization` header value for the admin API.
    #[arg(long, env = "BENCH_FLEET_AUTHORIZATION")]
    authorization: Option<String>,
    /// Times each listing query is timed after enrollment (0: none).
    #[arg(long, default_value_t = 20)]
    list_repeat: usize,
    /// The JSON report.
    #[arg(long)]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => {
            let report = run(&args).await?;
            let json = serde_json::to_value(&report)?;
            if let Some(dir) = args.out.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&args.out, serde_json::to_string_pretty(&json)?)
                .with_context(|| format!("writing {}", args.out.display()))?;
            print!("{}", report::tables(&[json]));
            Ok(())
        }
        Command::Table { reports } => {
            let mut all = Vec::new();
            for path in reports {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                all.push(serde_json::from_str(&text).with_context(|| path.display().to_string())?);
            }
            print!("{}", report::tables(&all));
            Ok(())
        }
    }
}

fn say(what: &str) {
    eprintln!(
        "[bench-fleet {}] {what}",
        chrono::Utc::now().format("%H:%M:%S")
    );
}

/// Wait (bounded) until the requests sent in a phase have all completed.
async fn drain(stats: &Stats, within: Duration) {
    let deadline = Instant::now() + within;
    while stats.in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kinds(stats: &Stats) -> std::collections::BTreeMap<String, KindReport> {
    stats
        .snapshot()
        .into_iter()
        .map(|(k, v)| (k.to_string(), KindReport::from(&v)))
        .collect()
}

/// `count` of `n` agents, spread evenly.
fn unreachable(i: usize, n: usize, count: usize) -> bool {
    n > 0 && (i * count) / n != ((i + 1) * count) / n
}

async fn run(args: &RunArgs) -> anyhow::Result<Report> {
    let warmup = args.warmup.unwrap_or(if args.quick { 3.0 } else { 10.0 });
    let measure = args.measure.unwrap_or(if args.quick { 10.0 } else { 60.0 });
    let storm_timeout = args
        .storm_timeout
        .unwrap_or(if args.quick { 120.0 } else { 300.0 });
    let request_timeout = Duration::from_secs_f64(args.request_timeout);
    let drain_limit = request_timeout + Duration::from_secs(5);
    let n = args.agents;

    let opts = systems::Options {
        external_urls: args.api_url.clone(),
        external_pids: args
            .watch_pid
            .iter()
            .map(|s| {
                let (label, pid) = s.split_once('=').context("--watch-pid label=pid")?;
                Ok((label.to_string(), pid.parse().context("--watch-pid pid")?))
            })
            .collect::<anyhow::Result<_>>()?,
        external_authorization: args.authorization.clone(),
    };
    say(&format!("starting {:?}", args.system));
    let system = systems::start(args.system, &opts).await?;
    let endpoints: Vec<Arc<Endpoint>> = system
        .api_urls
        .iter()
        .map(|u| Endpoint::parse(u).map(Arc::new))
        .collect::<anyhow::Result<_>>()?;
    let meter = Meter::start(system.watched.clone());

    say(&format!(
        "enrolling {n} nodes ({} in flight)",
        args.enroll_in_flight
    ));
    let mark = meter.mark();
    let enroll_seconds = systems::enroll(&system, n, args.enroll_in_flight).await?;
    let enroll_usage = meter.usage_since(&mark);
    say(&format!("enrolled in {enroll_seconds:.1} s"));
    let lists: Vec<ListReport> = systems::time_lists(&system, args.list_repeat)
        .await?
        .into_iter()
        .map(|(query, took, items)| ListReport::new(query, took, items))
        .collect();
    for l in &lists {
        say(&format!(
            "GET {}: p50 {:.1} ms, max {:.1} ms",
            l.query, l.p50_ms, l.max_ms
        ));
    }

    let (fake_url, fake) = fake_agent::start().await?;
    // Bound then released: nothing listens there.
    let dead_url = format!("http://127.0.0.1:{}", ferrite_tests::free_port());
    let unreachable_count = ((n as f64) * args.unreachable_fraction).round() as usize;

    say(&format!(
        "storm: {n} agents boot within {} s",
        args.storm_spread
    ));
    let storm_stats = Arc::new(Stats::default());
    let (tx, rx) = watch::channel(Arc::new(Phase {
        heartbeat_timeout: None,
        stats: storm_stats.clone(),
        stop: false,
    }));
    let fleet = Arc::new(Fleet::new());
    let mark = meter.mark();
    let mut agents = JoinSet::new();
    let mut last_boot = Duration::ZERO;
    for i in 0..n {
        let callback_url = if unreachable(i, n, unreachable_count) {
            dead_url.clone()
        } else {
            fake_url.clone()
        };
        let start_after = Duration::from_secs_f64(args.storm_spread * rand::random::<f64>());
        last_boot = last_boot.max(start_after);
        let spec = Spec {
            mac: systems::mac(i),
            api: endpoints[i % endpoints.len()].clone(),
            callback_url,
            start_after,
            heartbeat_timeout: args.heartbeat_timeout,
            request_timeout,
        };
        agents.spawn(agent::run(spec, fleet.clone(), rx.clone()));
    }
    let storm_deadline = Instant::now() + Duration::from_secs_f64(storm_timeout);
    loop {
        let done =
            fleet.first_beats.load(Ordering::Relaxed) + fleet.gave_up.load(Ordering::Relaxed);
        if done >= n || Instant::now() > storm_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let storm_usage = meter.usage_since(&mark);
    let storm_wall = fleet.t0.elapsed().as_secs_f64();
    let heartbeated = fleet.first_beats.load(Ordering::Relaxed);
    let storm_done_after =
        (heartbeated == n).then(|| fleet.last_first_beat_us.load(Ordering::Relaxed) as f64 / 1e6);
    say(&format!(
        "storm: {heartbeated}/{n} heartbeated, all after {storm_done_after:?} s"
    ));

    let mut steady = Vec::new();
    let mut pending: Option<Arc<Stats>> = Some(storm_stats.clone());
    for &rate in &args.rates {
        // Mean interval is 0.45 × heartbeat_timeout: N / interval = rate.
        let timeout = n as f64 / (0.45 * rate);
        let warm = Arc::new(Stats::default());
        tx.send_replace(Arc::new(Phase {
            heartbeat_timeout: Some(timeout),
            stats: warm.clone(),
            stop: false,
        }));
        if let Some(previous) = pending.take() {
            drain(&previous, drain_limit).await;
        }
        say(&format!(
            "steady {rate}/s: heartbeat_timeout {timeout:.2} s, warm-up {warmup} s"
        ));
        tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
        let measured = Arc::new(Stats::default());
        let db_before = match &system.database {
            Some(url) => Some(systems::db_counters(url)?),
            None => None,
        };
        let mark = meter.mark();
        tx.send_replace(Arc::new(Phase {
            heartbeat_timeout: Some(timeout),
            stats: measured.clone(),
            stop: false,
        }));
        tokio::time::sleep(Duration::from_secs_f64(measure)).await;
        let usage = meter.usage_since(&mark);
        let db_window = match (&system.database, db_before) {
            (Some(url), Some(before)) => Some(systems::db_counters(url)?.since(&before)),
            _ => None,
        };
        // Whatever comes next counts elsewhere; wait for this window's late replies.
        tx.send_replace(Arc::new(Phase {
            heartbeat_timeout: Some(timeout),
            stats: Arc::new(Stats::default()),
            stop: false,
        }));
        drain(&measured, drain_limit).await;
        let mut report = SteadyReport::new(
            rate,
            timeout,
            warmup,
            measure,
            kinds(&warm),
            kinds(&measured),
            usage,
            args.p99_target_ms,
        );
        if let Some(window) = db_window {
            let beats = report.requests.get(agent::HEARTBEAT).map_or(0, |b| b.ok);
            report.database = Some(report::DbPerBeat::new(window, beats));
        }
        say(&format!(
            "steady {rate}/s: {:.1}/s ok, p99 {:?} ms, {} errors",
            report.achieved_rate, report.heartbeat_p99_ms, report.errors
        ));
        steady.push(report);
    }
    if let Some(previous) = pending.take() {
        drain(&previous, drain_limit).await;
    }

    tx.send_replace(Arc::new(Phase {
        heartbeat_timeout: None,
        stats: Arc::new(Stats::default()),
        stop: true,
    }));
    let stopped = tokio::time::timeout(drain_limit, async {
        while agents.join_next().await.is_some() {}
    })
    .await;
    if stopped.is_err() {
        agents.abort_all();
    }

    let logs = keep_logs(&system.logs, &args.out.with_extension("logs"));

    let held_rate = steady
        .iter()
        .filter(|s| s.held)
        .map(|s| s.offered_rate)
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
    Ok(Report {
        system: system.name.clone(),
        kind: format!("{:?}", args.system),
        agents: n,
        quick: args.quick,
        unreachable_fraction: args.unreachable_fraction,
        p99_target_ms: args.p99_target_ms,
        api_urls: system.api_urls.clone(),
        enroll_seconds: procstat::round3(enroll_seconds),
        enroll_processes: enroll_usage,
        lists,
        storm: StormReport {
            spread_seconds: args.storm_spread,
            all_heartbeated_after_s: storm_done_after.map(procstat::round3),
            after_last_boot_s: storm_done_after
                .map(|t| procstat::round3(t - last_boot.as_secs_f64())),
            heartbeated,
            looked_up: fleet.looked_up.load(Ordering::Relaxed),
            gave_up: fleet.gave_up.load(Ordering::Relaxed),
            wall_seconds: procstat::round3(storm_wall),
            requests: kinds(&storm_stats),
            processes: storm_usage,
        },
        steady,
        held_rate,
        connections_opened: fleet.connections.load(Ordering::Relaxed),
        fake_agent_calls: fake.calls(),
        logs,
    })
}

/// Copy the servers' logs out of their temporary directories (removed when
/// the servers stop) to `dir`; where they now are.
fn keep_logs(logs: &[String], dir: &std::path::Path) -> Vec<String> {
    if std::fs::create_dir_all(dir).is_err() {
        return Vec::new();
    }
    logs.iter()
        .enumerate()
        .filter_map(|(i, log)| {
            let name = std::path::Path::new(log)
                .file_name()?
                .to_string_lossy()
                .to_string();
            let to = dir.join(format!("{i}-{name}"));
            std::fs::copy(log, &to).ok()?;
            Some(to.display().to_string())
        })
        .collect()
}
