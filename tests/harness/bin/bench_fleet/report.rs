//! The JSON report of one run and the markdown tables made from reports.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::agent::{KindStats, HEARTBEAT, LOOKUP};
use crate::procstat::{round3, Usage};
use crate::systems::DbCounters;

#[derive(Serialize)]
pub struct KindReport {
    pub count: u64,
    pub ok: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl From<&KindStats> for KindReport {
    fn from(k: &KindStats) -> Self {
        let r = |v: Option<f64>| v.map(round3);
        Self {
            count: k.latency.count(),
            ok: k.ok,
            errors: k.errors.values().sum(),
            error_kinds: k.errors.clone(),
            p50_ms: r(k.latency.quantile_ms(0.5)),
            p99_ms: r(k.latency.quantile_ms(0.99)),
            mean_ms: r(k.latency.mean_ms()),
            max_ms: r(k.latency.max_ms()),
        }
    }
}

#[derive(Serialize)]
pub struct StormReport {
    pub spread_seconds: f64,
    /// From the start of the storm to the last agent's first heartbeat;
    /// null unless every agent got there.
    pub all_heartbeated_after_s: Option<f64>,
    /// The same, from the moment the last agent booted.
    pub after_last_boot_s: Option<f64>,
    pub heartbeated: usize,
    pub looked_up: usize,
    pub gave_up: usize,
    pub wall_seconds: f64,
    pub requests: BTreeMap<String, KindReport>,
    pub processes: Vec<Usage>,
}

#[derive(Serialize)]
pub struct SteadyReport {
    pub offered_rate: f64,
    /// The `heartbeat_timeout` that offers it.
    pub heartbeat_timeout: f64,
    pub warmup_seconds: f64,
    pub window_seconds: f64,
    /// Successful heartbeats per second in the window.
    pub achieved_rate: f64,
    pub heartbeat_p50_ms: Option<f64>,
    pub heartbeat_p99_ms: Option<f64>,
    /// Failed requests of any type in the window.
    pub errors: u64,
    pub held: bool,
    pub warmup: BTreeMap<String, KindReport>,
    pub requests: BTreeMap<String, KindReport>,
    pub processes: Vec<Usage>,
    /// PostgreSQL's counters over the window, per successful heartbeat.
    pub database: Option<DbPerBeat>,
}

#[derive(Serialize)]
pub struct DbPerBeat {
    pub window: DbCounters,
    pub commits_per_heartbeat: f64,
    pub rows_written_per_heartbeat: f64,
    pub rows_read_per_heartbeat: f64,
}

impl DbPerBeat {
    pub fn new(window: DbCounters, heartbeats: u64) -> Self {
        let per = |v: i64| round3(v as f64 / heartbeats.max(1) as f64);
        Self {
            commits_per_heartbeat: per(window.commits),
            rows_written_per_heartbeat: per(window.rows_written),
            rows_read_per_heartbeat: per(window.rows_read),
            window,
        }
    }
}

impl SteadyReport {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        offered_rate: f64,
        heartbeat_timeout: f64,
        warmup_seconds: f64,
        window_seconds: f64,
        warmup: BTreeMap<String, KindReport>,
        requests: BTreeMap<String, KindReport>,
        processes: Vec<Usage>,
        p99_target_ms: f64,
    ) -> Self {
        let beats = requests.get(HEARTBEAT);
        let errors = requests.values().map(|k| k.errors).sum();
        let p99 = beats.and_then(|b| b.p99_ms);
        Self {
            offered_rate,
            heartbeat_timeout: round3(heartbeat_timeout),
            warmup_seconds,
            window_seconds,
            achieved_rate: round3(beats.map_or(0, |b| b.ok) as f64 / window_seconds.max(1e-3)),
            heartbeat_p50_ms: beats.and_then(|b| b.p50_ms),
            heartbeat_p99_ms: p99,
            errors,
            held: errors == 0 && p99.is_some_and(|p| p < p99_target_ms),
            warmup,
            requests,
            processes,
            database: None,
        }
    }
}

#[derive(Serialize)]
pub struct ListReport {
    pub query: String,
    pub repeat: usize,
    pub nodes_returned: usize,
    pub p50_ms: f64,
    pub max_ms: f64,
}

impl ListReport {
    pub fn new(query: String, mut took_ms: Vec<f64>, nodes_returned: usize) -> Self {
        took_ms.sort_by(f64::total_cmp);
        let at = |q: f64| took_ms.get(((took_ms.len() as f64 - 1.0) * q).round() as usize);
        Self {
            query,
            repeat: took_ms.len(),
            nodes_returned,
            p50_ms: at(0.5).copied().unwrap_or(0.0),
            max_ms: took_ms.last().copied().unwrap_or(0.0),
        }
    }
}

#[derive(Serialize)]
pub struct Report {
    pub system: String,
    pub kind: String,
    pub agents: usize,
    pub quick: bool,
    pub unreachable_fraction: f64,
    pub p99_target_ms: f64,
    pub api_urls: Vec<String>,
    pub enroll_seconds: f64,
    pub enroll_processes: Vec<Usage>,
    /// Listing queries on the enrolled fleet, before the storm.
    pub lists: Vec<ListReport>,
    pub storm: StormReport,
    pub steady: Vec<SteadyReport>,
    /// The highest offered rate held (p99 under the target, no errors).
    pub held_rate: Option<f64>,
    pub connections_opened: u64,
    pub fake_agent_calls: BTreeMap<String, u64>,
    pub logs: Vec<String>,
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |v| {
        if v < 10.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.0}")
        }
    })
}

/// Servers only (not the simulator): CPU seconds, CPU % and peak memory
/// (PSS for process families, whose RSS would count shared pages per process).
fn servers(processes: &Value) -> (f64, f64, f64) {
    let mut cpu = 0.0;
    let mut pct = 0.0;
    let mut mem = 0.0;
    for p in processes.as_array().into_iter().flatten() {
        if p["label"] == "simulator" {
            continue;
        }
        cpu += p["cpu_seconds"].as_f64().unwrap_or(0.0);
        pct += p["cpu_percent"].as_f64().unwrap_or(0.0);
        mem += p["peak_pss_mib"]
            .as_f64()
            .or(p["peak_rss_mib"].as_f64())
            .unwrap_or(0.0);
    }
    (cpu, pct, mem)
}

fn simulator(processes: &Value) -> f64 {
    processes
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["label"] == "simulator")
        .and_then(|p| p["cpu_seconds"].as_f64())
        .unwrap_or(0.0)
}

fn p50_p99(kind: &Value) -> String {
    format!("{} / {}", ms(&kind["p50_ms"]), ms(&kind["p99_ms"]))
}

fn errors(requests: &Value) -> u64 {
    requests
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|k| k["errors"].as_u64())
        .sum()
}

/// The storm, steady and held tables of `reports` (JSON as [`Report`] writes).
pub fn tables(reports: &[Value]) -> String {
    let mut out = String::new();
    let name = |r: &Value| r["system"].as_str().unwrap_or("?").to_string();
    let _ = writeln!(
        out,
        "\n**Boot storm** (latency ms, p50 / p99; server = all server processes)\n"
    );
    let _ = writeln!(
        out,
        "| configuration | N | enrolled in | all heartbeated after (after the last boot) | heartbeated | errors | lookup | heartbeat | server CPU s | server peak MiB | simulator CPU s |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        let s = &r["storm"];
        let (cpu, _, mem) = servers(&s["processes"]);
        let after = match (
            s["all_heartbeated_after_s"].as_f64(),
            s["after_last_boot_s"].as_f64(),
        ) {
            (Some(all), Some(last)) => format!("{all:.1} s ({last:.1} s)"),
            _ => "not all".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} s | {} | {} / {} | {} | {} | {} | {:.1} | {:.0} | {:.1} |",
            name(r),
            r["agents"],
            r["enroll_seconds"].as_f64().unwrap_or(0.0),
            after,
            s["heartbeated"],
            r["agents"],
            errors(&s["requests"]),
            p50_p99(&s["requests"][LOOKUP]),
            p50_p99(&s["requests"][HEARTBEAT]),
            cpu,
            mem,
            simulator(&s["processes"]),
        );
    }
    let _ = writeln!(
        out,
        "\n**Steady heartbeats** (latency from the scheduled time, ms)\n"
    );
    let _ = writeln!(
        out,
        "| configuration | N | offered/s | achieved/s | p50 | p99 | errors | server CPU % of a core | server peak MiB | simulator CPU % | PostgreSQL commits / rows written per heartbeat |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        for s in r["steady"].as_array().into_iter().flatten() {
            let (_, pct, mem) = servers(&s["processes"]);
            let window = s["window_seconds"].as_f64().unwrap_or(1.0).max(1e-3);
            let db = &s["database"];
            let per_beat = if db.is_object() {
                format!(
                    "{} / {}",
                    db["commits_per_heartbeat"], db["rows_written_per_heartbeat"]
                )
            } else {
                "–".into()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {} | {} | {} | {:.1} | {:.0} | {:.1} | {} |",
                name(r),
                r["agents"],
                s["offered_rate"],
                s["achieved_rate"].as_f64().unwrap_or(0.0),
                ms(&s["heartbeat_p50_ms"]),
                ms(&s["heartbeat_p99_ms"]),
                s["errors"],
                pct,
                mem,
                100.0 * simulator(&s["processes"]) / window,
                per_beat,
            );
        }
    }
    if reports
        .iter()
        .any(|r| r["lists"].as_array().is_some_and(|l| !l.is_empty()))
    {
        let _ = writeln!(
            out,
            "\n**Listing** (after enrollment, before the storm; ms, p50 / max)\n"
        );
        let _ = writeln!(
            out,
            "| configuration | N | query | nodes returned | p50 / max |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        for r in reports {
            for l in r["lists"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "| {} | {} | `{}` | {} | {} / {} |",
                    name(r),
                    r["agents"],
                    l["query"].as_str().unwrap_or("?"),
                    l["nodes_returned"],
                    ms(&l["p50_ms"]),
                    ms(&l["max_ms"]),
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "\n**Held** (highest offered rate with heartbeat p99 < target and 0 errors)\n"
    );
    let _ = writeln!(out, "| configuration | N | held/s | p99 target ms |");
    let _ = writeln!(out, "|---|---|---|---|");
    for r in reports {
        let held = r["held_rate"]
            .as_f64()
            .map_or("none".into(), |v| format!("{v}"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            name(r),
            r["agents"],
            held,
            r["p99_target_ms"]
        );
    }
    out
}
