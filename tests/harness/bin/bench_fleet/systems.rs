//! The configurations under test, each started as the tests start it, and
//! the enrollment of the fleet through their API.

use std::any::Any;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ferrite_tests::ironic::Ironic;
use ferrite_tests::Conductor;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde_json::{json, Value};

use crate::procstat::{Scope, Watched};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// One ferrite-conductor on SQLite.
    Ferrite,
    /// Three ferrite-conductors sharing one PostgreSQL.
    FerritePg3,
    /// The real Ironic 39, all-in-one, from build/ironic-venv.
    Ironic,
    /// Servers someone else started: `--api-url` (and `--watch-pid`).
    External,
}

/// A running configuration: where its API is, and what to measure.
pub struct System {
    pub name: String,
    /// Agents are spread over these round-robin; enrollment uses the first.
    pub api_urls: Vec<String>,
    /// `Authorization` for the admin API, if it has auth.
    pub authorization: Option<String>,
    pub watched: Vec<Watched>,
    /// Where the servers log, for the report.
    pub logs: Vec<String>,
    /// The shared PostgreSQL database, whose statistics the steady phases
    /// read (writes per heartbeat).
    pub database: Option<String>,
    /// Keeps the servers running; they stop when the system is dropped.
    _guards: Vec<Box<dyn Any>>,
}

pub struct Options {
    pub external_urls: Vec<String>,
    pub external_pids: Vec<(String, u32)>,
    pub external_authorization: Option<String>,
}

pub async fn start(kind: Kind, opts: &Options) -> anyhow::Result<System> {
    match kind {
        Kind::Ferrite => Ok(ferrite().await),
        Kind::FerritePg3 => ferrite_pg3().await,
        Kind::Ironic => Ok(ironic().await),
        Kind::External => external(opts),
    }
}

/// The conductor as the loopback tests run it (http_basic auth, fast
/// track), plain HTTP callbacks allowed, logging at `info`.
async fn ferrite() -> System {
    let conductor = Conductor::start_logging(
        "127.0.0.1",
        &["--fast-track", "true", "--require-tls", "false"],
        "info",
    )
    .await;
    System {
        name: "ferrite-conductor (SQLite)".into(),
        api_urls: vec![conductor.url.clone()],
        authorization: Some(ferrite_tests::api_authorization()),
        watched: vec![Watched {
            label: "ferrite-conductor".into(),
            scope: Scope::Pid(conductor.proc.child.id()),
        }],
        logs: vec![conductor.proc.log.display().to_string()],
        database: None,
        _guards: vec![Box::new(conductor)],
    }
}

/// Three conductors on one PostgreSQL (a private cluster of the harness,
/// as the tests run it), with the flags of [`ferrite`]; the agents are
/// spread over the three APIs round-robin. Watched: each conductor, and
/// the postmaster with its server processes.
async fn ferrite_pg3() -> anyhow::Result<System> {
    let cluster = ferrite_tests::pg::PgCluster::private();
    let url = cluster.create_database();
    let mut conductors = Vec::new();
    for host in ["conductor-1", "conductor-2", "conductor-3"] {
        conductors.push(
            Conductor::start_with(
                "127.0.0.1",
                Some(ferrite_tests::TestDb::Postgres(url.clone())),
                &[
                    "--host",
                    host,
                    "--fast-track",
                    "true",
                    "--require-tls",
                    "false",
                ],
                "info",
            )
            .await,
        );
    }
    let postmaster = cluster
        .postmaster_pid()
        .context("the PostgreSQL postmaster's pid")?;
    let mut watched: Vec<Watched> = conductors
        .iter()
        .zip(1..)
        .map(|(c, i)| Watched {
            label: format!("ferrite-conductor-{i}"),
            scope: Scope::Pid(c.proc.child.id()),
        })
        .collect();
    watched.push(Watched {
        label: "postgresql".into(),
        scope: Scope::Tree(postmaster),
    });
    let mut guards: Vec<Box<dyn Any>> = Vec::new();
    let api_urls = conductors.iter().map(|c| c.url.clone()).collect();
    let logs = conductors
        .iter()
        .map(|c| c.proc.log.display().to_string())
        .collect();
    // Conductors first, so they stop before their database.
    for c in conductors {
        guards.push(Box::new(c));
    }
    guards.push(Box::new(cluster));
    Ok(System {
        name: "3 ferrite-conductors (PostgreSQL)".into(),
        api_urls,
        authorization: Some(ferrite_tests::api_authorization()),
        watched,
        logs,
        database: Some(url),
        _guards: guards,
    })
}

/// Ironic as tests/interop starts it, tuned as the plan says: fast track,
/// no agent TLS, Ironic's default API workers, and no debug logging (its
/// cost is not what is measured; ferrite runs at `info` too).
async fn ironic() -> System {
    let ironic = Ironic::start(|c| {
        c.set("deploy", "fast_track", "True".into());
        c.set("agent", "require_tls", "False".into());
        c.set("DEFAULT", "debug", "False".into());
        c.unset("api", "api_workers");
    })
    .await;
    let pid = ironic.pid();
    System {
        name: "Ironic 39 (all-in-one, SQLite)".into(),
        api_urls: vec![ironic.url.clone()],
        authorization: None,
        watched: vec![Watched {
            label: "ironic".into(),
            scope: Scope::Group(pid),
        }],
        logs: vec![ironic
            .dir
            .path()
            .join("state/log/ironic.log")
            .display()
            .to_string()],
        database: None,
        _guards: vec![Box::new(ironic)],
    }
}

fn external(opts: &Options) -> anyhow::Result<System> {
    if opts.external_urls.is_empty() {
        bail!("--system external needs at least one --api-url");
    }
    Ok(System {
        name: "external".into(),
        api_urls: opts.external_urls.clone(),
        authorization: opts.external_authorization.clone(),
        watched: opts
            .external_pids
            .iter()
            .map(|(label, pid)| Watched {
                label: label.clone(),
                scope: Scope::Tree(*pid),
            })
            .collect(),
        logs: vec![],
        database: None,
        _guards: vec![],
    })
}

/// The MAC of agent `i`: locally administered, unique up to 2^32 agents.
pub fn mac(i: usize) -> String {
    let b = (i as u32).to_be_bytes();
    format!("02:fb:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

/// An admin API client; every request is bounded.
fn admin_client(authorization: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "x-openstack-ironic-api-version",
        reqwest::header::HeaderValue::from_static("latest"),
    );
    if let Some(auth) = authorization {
        let mut value = reqwest::header::HeaderValue::from_str(auth)?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_idle_timeout(Duration::from_secs(5))
        .default_headers(headers)
        .build()?)
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = http.request(method.clone(), url);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Node `i` in `manageable` with one port: create, add the port, `manage`
/// (retried while locked), then wait for the state.
async fn enroll_one(http: &reqwest::Client, api: &str, i: usize) -> anyhow::Result<()> {
    let (status, node) = call(
        http,
        reqwest::Method::POST,
        &format!("{api}/v1/nodes"),
        Some(json!({"driver": "fake-hardware", "name": format!("bench-{i:05}")})),
    )
    .await?;
    if status != 201 {
        bail!("creating node {i}: {status} {node}");
    }
    let uuid = node["uuid"]
        .as_str()
        .context("node without uuid")?
        .to_string();
    let (status, port) = call(
        http,
        reqwest::Method::POST,
        &format!("{api}/v1/ports"),
        Some(json!({"node_uuid": uuid, "address": mac(i)})),
    )
    .await?;
    if status != 201 {
        bail!("creating the port of node {i}: {status} {port}");
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (status, reply) = call(
            http,
            reqwest::Method::PUT,
            &format!("{api}/v1/nodes/{uuid}/states/provision"),
            Some(json!({"target": "manage"})),
        )
        .await?;
        match status {
            202 => break,
            409 if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            _ => bail!("manage {uuid}: {status} {reply}"),
        }
    }
    // The verb's flow runs after its 202: poll soon, then less often.
    let mut pause = Duration::from_millis(10);
    loop {
        let (status, node) = call(
            http,
            reqwest::Method::GET,
            &format!("{api}/v1/nodes/{uuid}"),
            None,
        )
        .await?;
        let state = node["provision_state"].as_str().unwrap_or_default();
        if status == 200 && state == "manageable" && node["target_provision_state"].is_null() {
            return Ok(());
        }
        if state.ends_with("failed") || Instant::now() > deadline {
            bail!("node {uuid} stuck in {state:?}: {}", node["last_error"]);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Enroll `n` nodes with `in_flight` at a time; seconds taken.
pub async fn enroll(system: &System, n: usize, in_flight: usize) -> anyhow::Result<f64> {
    let http = admin_client(system.authorization.as_deref())?;
    let api = system.api_urls[0].clone();
    let started = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let http = &http;
            let api = &api;
            async move { enroll_one(http, api, i).await }
        })
        .buffer_unordered(in_flight.max(1))
        .try_collect::<()>()
        .await?;
    Ok(started.elapsed().as_secs_f64())
}

/// The operator's listing queries, timed on a quiet system after
/// enrollment: a first page, a filtered page of UUIDs, a full detailed page.
pub const LIST_QUERIES: &[&str] = &[
    "/v1/nodes?limit=1",
    "/v1/nodes?provision_state=manageable&fields=uuid&limit=100",
    "/v1/nodes/detail?limit=1000",
];

/// Each of [`LIST_QUERIES`] `repeat` times in turn; its latencies (ms) and
/// the number of nodes its last answer held.
pub async fn time_lists(
    system: &System,
    repeat: usize,
) -> anyhow::Result<Vec<(String, Vec<f64>, usize)>> {
    let http = admin_client(system.authorization.as_deref())?;
    let api = &system.api_urls[0];
    let mut out = Vec::new();
    for query in LIST_QUERIES {
        let mut took = Vec::with_capacity(repeat);
        let mut items = 0;
        for _ in 0..repeat {
            let started = Instant::now();
            let (status, body) =
                call(&http, reqwest::Method::GET, &format!("{api}{query}"), None).await?;
            took.push(started.elapsed().as_secs_f64() * 1e3);
            if status != 200 {
                bail!("GET {query}: {status} {body}");
            }
            items = body["nodes"].as_array().map_or(0, Vec::len);
        }
        out.push((query.to_string(), took, items));
    }
    Ok(out)
}

/// PostgreSQL's own counters for one database (`pg_stat_database`).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct DbCounters {
    pub commits: i64,
    pub rows_written: i64,
    pub rows_read: i64,
}

impl DbCounters {
    pub fn since(&self, earlier: &DbCounters) -> DbCounters {
        DbCounters {
            commits: self.commits - earlier.commits,
            rows_written: self.rows_written - earlier.rows_written,
            rows_read: self.rows_read - earlier.rows_read,
        }
    }
}

/// Read the counters on a new connection (a session caches its snapshot).
/// PostgreSQL flushes them about once a second, which a window of many
/// seconds absorbs.
pub fn db_counters(url: &str) -> anyhow::Result<DbCounters> {
    let row = ferrite_tests::pg::blocking(url, |c| {
        Box::pin(async move {
            c.query_one(
                "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted, tup_fetched \
                 FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i64>(2)))
        })
    })
    .context("reading pg_stat_database")?;
    Ok(DbCounters {
        commits: row.0,
        rows_written: row.1,
        rows_read: row.2,
    })
}
