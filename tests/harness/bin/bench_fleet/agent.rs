//! One simulated ironic-python-agent 13, as it behaves on the wire after
//! boot (ironic_python_agent/agent.py, ironic_api_client.py):
//! - `GET /` for the API version (`default_version.version`), then
//!   `GET /v1/lookup?addresses=<mac>` at `min(version, 1.62)`, retried
//!   after a uniform wait in 1..min(60, 2^(n-1)) s, with a 5/10/30 s pause
//!   after a 409, for at most 600 s (`lookup_timeout`);
//! - `POST /v1/heartbeat/<uuid>` at `min(version, 1.68)` with
//!   `callback_url`, `agent_token` and `agent_version`, at once and then
//!   every `heartbeat_timeout × U(0.3, 0.6)`; 5–10 s after a failed one
//!   (anything but 202);
//! - every request with a 30 s timeout (`http_request_timeout`).
//!
//! Differences, on purpose: the schedule is open-loop (the next beat is due
//! an interval after the previous one was *due*, and its latency counts from
//! then), so a slow server cannot lower the load it is offered; a failed
//! version probe is a failed lookup attempt (IPA would go on at 1.31 and get
//! no token); no TLS towards the agent (`callback_url` is http, no
//! `agent_verify_ca`), as with `ipa-enable-auto-tls=0`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::conn::{Conn, Endpoint};
use crate::histogram::Histogram;

pub const VERSION: &str = "version";
pub const LOOKUP: &str = "lookup";
pub const HEARTBEAT: &str = "heartbeat";

const AGENT_VERSION: &str = "13.0.0";
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(600);
const LOCK_PAUSES: [u64; 3] = [5, 10, 30];

/// Results of one request type within a phase.
#[derive(Default, Clone)]
pub struct KindStats {
    /// Every completed attempt, failed ones too (until they failed).
    pub latency: Histogram,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
}

/// What the fleet did during one phase.
#[derive(Default)]
pub struct Stats {
    kinds: Mutex<BTreeMap<&'static str, KindStats>>,
    in_flight: AtomicI64,
}

impl Stats {
    fn record(&self, kind: &'static str, latency: Duration, error: Option<String>) {
        if let Ok(mut kinds) = self.kinds.lock() {
            let k = kinds.entry(kind).or_default();
            k.latency.record(latency);
            match error {
                None => k.ok += 1,
                Some(e) => *k.errors.entry(e).or_default() += 1,
            }
        }
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, KindStats> {
        self.kinds.lock().map(|k| k.clone()).unwrap_or_default()
    }

    /// Requests sent in this phase that have not completed yet.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// What every agent does now; the orchestrator publishes a new one per phase.
pub struct Phase {
    /// `heartbeat_timeout` to use instead of the lookup's (a steady rate).
    pub heartbeat_timeout: Option<f64>,
    pub stats: Arc<Stats>,
    pub stop: bool,
}

/// Counters over the whole run.
pub struct Fleet {
    pub t0: std::time::Instant,
    pub looked_up: AtomicUsize,
    pub first_beats: AtomicUsize,
    /// Microseconds after `t0` of the latest first heartbeat.
    pub last_first_beat_us: AtomicU64,
    /// Agents that stopped: lookup timed out, or the token was gone.
    pub gave_up: AtomicUsize,
    pub connections: AtomicU64,
}

impl Fleet {
    pub fn new() -> Self {
        Self {
            t0: std::time::Instant::now(),
            looked_up: AtomicUsize::new(0),
            first_beats: AtomicUsize::new(0),
            last_first_beat_us: AtomicU64::new(0),
            gave_up: AtomicUsize::new(0),
            connections: AtomicU64::new(0),
        }
    }
}

pub struct Spec {
    pub mac: String,
    pub api: Arc<Endpoint>,
    pub callback_url: String,
    /// After the start of the storm.
    pub start_after: Duration,
    /// `heartbeat_timeout` instead of the lookup's, outside steady phases.
    pub heartbeat_timeout: Option<f64>,
    pub request_timeout: Duration,
}

enum Wake {
    Due,
    Changed,
    Stop,
}

/// Sleep until `due`, unless the phase changes first.
async fn sleep_until(rx: &mut watch::Receiver<Arc<Phase>>, due: Instant) -> Wake {
    if rx.borrow().stop {
        return Wake::Stop;
    }
    tokio::select! {
        _ = tokio::time::sleep_until(due) => Wake::Due,
        changed = rx.changed() => match changed {
            Ok(()) if !rx.borrow().stop => Wake::Changed,
            _ => Wake::Stop,
        },
    }
}

/// Sleep `d` through phase changes; false when told to stop.
async fn pause(rx: &mut watch::Receiver<Arc<Phase>>, d: Duration) -> bool {
    let due = Instant::now() + d;
    loop {
        match sleep_until(rx, due).await {
            Wake::Due => return true,
            Wake::Changed => continue,
            Wake::Stop => return false,
        }
    }
}

fn uniform(lo: f64, hi: f64) -> f64 {
    if hi > lo {
        rand::random_range(lo..hi)
    } else {
        lo
    }
}

/// `heartbeat_timeout × U(0.3, 0.6)`, IPA's jittered interval.
fn interval(timeout: f64) -> Duration {
    Duration::from_secs_f64(timeout * uniform(0.3, 0.6))
}

/// The node as the lookup gave it.
struct Booted {
    uuid: String,
    token: String,
    heartbeat_timeout: f64,
}

enum Lookup {
    Found(Booted),
    Retry,
    Locked,
    Fatal,
}

struct Agent {
    spec: Spec,
    conn: Conn,
    /// From the version probe: (major, minor).
    version: Option<(u32, u32)>,
}

fn header_version(detected: (u32, u32), cap: (u32, u32)) -> String {
    let (major, minor) = detected.min(cap);
    format!("{major}.{minor}")
}

/// One request of an agent; latency counts from `due`.
struct Req<'a> {
    kind: &'static str,
    method: Method,
    path: &'a str,
    headers: &'a [(&'a str, &'a str)],
    body: Option<Bytes>,
    due: Instant,
}

impl Agent {
    /// One request, timed and counted in the phase it was sent in. The
    /// body of an answer with status `ok`; else the status, if any came.
    async fn call(
        &mut self,
        rx: &watch::Receiver<Arc<Phase>>,
        req: Req<'_>,
        ok: u16,
    ) -> Result<Bytes, Option<u16>> {
        let stats = rx.borrow().stats.clone();
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let reply = self
            .conn
            .send(
                &self.spec.api,
                req.method,
                req.path,
                req.headers,
                req.body,
                self.spec.request_timeout,
            )
            .await;
        let latency = Instant::now().saturating_duration_since(req.due);
        let (result, error) = match reply {
            Ok(r) if r.status == ok => (Ok(r.body), None),
            Ok(r) => (Err(Some(r.status)), Some(format!("status {}", r.status))),
            Err(f) => (Err(None), Some(f.key())),
        };
        stats.record(req.kind, latency, error);
        stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        result
    }

    async fn probe_version(&mut self, rx: &watch::Receiver<Arc<Phase>>) -> Option<(u32, u32)> {
        if let Some(v) = self.version {
            return Some(v);
        }
        let req = Req {
            kind: VERSION,
            method: Method::GET,
            path: "/",
            headers: &[],
            body: None,
            due: Instant::now(),
        };
        let body = self.call(rx, req, 200).await.ok()?;
        let root: Value = serde_json::from_slice(&body).ok()?;
        let text = root["default_version"]["version"].as_str()?;
        let (major, minor) = text.split_once('.')?;
        let v = (major.parse().ok()?, minor.parse().ok()?);
        self.version = Some(v);
        Some(v)
    }

    async fn lookup_once(&mut self, rx: &watch::Receiver<Arc<Phase>>) -> Lookup {
        let Some(detected) = self.probe_version(rx).await else {
            return Lookup::Retry;
        };
        let path = format!("/v1/lookup?addresses={}", self.spec.mac.replace(':', "%3A"));
        let version = header_version(detected, (1, 62));
        let req = Req {
            kind: LOOKUP,
            method: Method::GET,
            path: &path,
            headers: &[("x-openstack-ironic-api-version", &version)],
            body: None,
            due: Instant::now(),
        };
        let body = match self.call(rx, req, 200).await {
            Ok(body) => body,
            Err(Some(409)) => return Lookup::Locked,
            Err(_) => return Lookup::Retry,
        };
        let Ok(reply) = serde_json::from_slice::<Value>(&body) else {
            return Lookup::Retry;
        };
        let Some(uuid) = reply["node"]["uuid"].as_str() else {
            return Lookup::Retry;
        };
        let config = &reply["config"];
        let heartbeat_timeout = config["heartbeat_timeout"]
            .as_f64()
            .or(reply["heartbeat_timeout"].as_f64())
            .unwrap_or(300.0);
        match config["agent_token"].as_str() {
            // Handed out already (an earlier reply was lost): IPA locks down.
            Some("******") | None => {
                rx.borrow().stats.record(
                    LOOKUP,
                    Duration::ZERO,
                    Some("no agent_token in the reply".into()),
                );
                Lookup::Fatal
            }
            Some(token) => Lookup::Found(Booted {
                uuid: uuid.to_string(),
                token: token.to_string(),
                heartbeat_timeout,
            }),
        }
    }

    async fn lookup(&mut self, rx: &mut watch::Receiver<Arc<Phase>>) -> Option<Booted> {
        let started = Instant::now();
        let mut locked = 0;
        for attempt in 1u32.. {
            match self.lookup_once(rx).await {
                Lookup::Found(b) => return Some(b),
                Lookup::Fatal => return None,
                Lookup::Locked => {
                    let secs = LOCK_PAUSES[locked.min(LOCK_PAUSES.len() - 1)];
                    locked += 1;
                    if !pause(rx, Duration::from_secs(secs)).await {
                        return None;
                    }
                }
                Lookup::Retry => {}
            }
            if started.elapsed() > LOOKUP_TIMEOUT {
                return None;
            }
            let upper = 2f64.powi(attempt.min(7) as i32 - 1).clamp(1.0, 60.0);
            if !pause(rx, Duration::from_secs_f64(uniform(1.0, upper))).await {
                return None;
            }
        }
        None
    }

    async fn heartbeat(
        &mut self,
        rx: &watch::Receiver<Arc<Phase>>,
        node: &Booted,
        due: Instant,
    ) -> bool {
        let detected = self.version.unwrap_or((1, 31));
        let version = header_version(detected, (1, 68));
        // IPA's key order: callback_url, then the token, then the version.
        let body = format!(
            "{{\"callback_url\": {}, \"agent_token\": {}, \"agent_version\": {}}}",
            Value::from(self.spec.callback_url.as_str()),
            Value::from(node.token.as_str()),
            Value::from(AGENT_VERSION),
        );
        let path = format!("/v1/heartbeat/{}", node.uuid);
        let req = Req {
            kind: HEARTBEAT,
            method: Method::POST,
            path: &path,
            headers: &[("x-openstack-ironic-api-version", &version)],
            body: Some(Bytes::from(body)),
            due,
        };
        self.call(rx, req, 202).await.is_ok()
    }

    async fn beat_forever(
        &mut self,
        rx: &mut watch::Receiver<Arc<Phase>>,
        fleet: &Fleet,
        node: Booted,
    ) {
        let fixed = self.spec.heartbeat_timeout;
        let from_lookup = node.heartbeat_timeout;
        let effective = |rx: &watch::Receiver<Arc<Phase>>| {
            rx.borrow()
                .heartbeat_timeout
                .or(fixed)
                .unwrap_or(from_lookup)
        };
        let mut timeout = effective(rx);
        let mut due = Instant::now();
        let mut first = true;
        loop {
            match sleep_until(rx, due).await {
                Wake::Stop => return,
                Wake::Changed => {
                    let now = effective(rx);
                    if now != timeout {
                        // A new rate: spread this agent's next beat over one interval.
                        timeout = now;
                        due = Instant::now() + interval(timeout).mul_f64(uniform(0.0, 1.0));
                    }
                    continue;
                }
                Wake::Due => {}
            }
            if self.heartbeat(rx, &node, due).await {
                if first {
                    first = false;
                    fleet.first_beats.fetch_add(1, Ordering::Relaxed);
                    let us = fleet.t0.elapsed().as_micros() as u64;
                    fleet.last_first_beat_us.fetch_max(us, Ordering::Relaxed);
                }
                due += interval(timeout);
            } else {
                due = Instant::now() + Duration::from_secs_f64(uniform(5.0, 10.0));
            }
        }
    }
}

/// The life of one agent: boot (after `start_after`), lookup, heartbeats
/// until the phase says stop.
pub async fn run(spec: Spec, fleet: Arc<Fleet>, mut rx: watch::Receiver<Arc<Phase>>) {
    let start_after = spec.start_after;
    let mut agent = Agent {
        spec,
        conn: Conn::new(),
        version: None,
    };
    if pause(&mut rx, start_after).await {
        match agent.lookup(&mut rx).await {
            Some(node) => {
                fleet.looked_up.fetch_add(1, Ordering::Relaxed);
                agent.beat_forever(&mut rx, &fleet, node).await;
            }
            None if !rx.borrow().stop => {
                fleet.gave_up.fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
    }
    fleet
        .connections
        .fetch_add(agent.conn.opened, Ordering::Relaxed);
}
