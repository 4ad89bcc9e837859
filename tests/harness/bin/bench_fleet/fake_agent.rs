//! The one command API every simulated agent's `callback_url` names: IPA's
//! `/v1/commands/`, answering `get_clean_steps` and `get_deploy_steps` with
//! what IPA 13 answered in the recorded interop run, and SUCCEEDED with no
//! result to any other command. Which agent is asked is told by the
//! `agent_token` in the query.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

/// The recorded IPA 13 exchanges (tests/interop refreshes them).
const RECORDING: &str = include_str!("../../../fixtures/interop/ipa-13-to-ferrite-conductor.json");

/// At most this many agents' last commands are kept for `GET`.
const MAX_REMEMBERED: usize = 100_000;

pub struct FakeAgent {
    /// `command_result` by command name, from the recording.
    results: HashMap<String, Value>,
    last: Mutex<HashMap<String, Value>>,
    calls: Mutex<BTreeMap<String, u64>>,
    ids: AtomicU64,
}

impl FakeAgent {
    fn from_recording() -> anyhow::Result<Self> {
        let exchanges: Vec<Value> =
            serde_json::from_str(RECORDING).context("the IPA 13 recording")?;
        let mut results = HashMap::new();
        for e in &exchanges {
            if e["from"] == "conductor" && e["method"] == "POST" {
                if let (Some(name), Some(result)) = (
                    e["response"]["command_name"].as_str(),
                    e["response"].get("command_result"),
                ) {
                    if ["get_clean_steps", "get_deploy_steps"].contains(&name) {
                        results.insert(name.to_string(), result.clone());
                    }
                }
            }
        }
        anyhow::ensure!(
            results.len() == 2,
            "the recording lacks get_clean_steps or get_deploy_steps"
        );
        Ok(Self {
            results,
            last: Mutex::new(HashMap::new()),
            calls: Mutex::new(BTreeMap::new()),
            ids: AtomicU64::new(1),
        })
    }

    /// Commands received so far, by name (with `GET /v1/commands/` as `list`).
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn count(&self, name: &str) {
        if let Ok(mut calls) = self.calls.lock() {
            *calls.entry(name.to_string()).or_default() += 1;
        }
    }
}

async fn post_command(
    State(fake): State<Arc<FakeAgent>>,
    Query(query): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let full = body["name"].as_str().unwrap_or_default();
    fake.count(full);
    // IPA names a command by its method, without the extension.
    let name = full.rsplit('.').next().unwrap_or(full);
    let id = fake.ids.fetch_add(1, Ordering::Relaxed);
    let result = json!({
        "id": format!("00000000-0000-4000-8000-{id:012x}"),
        "command_name": name,
        "command_status": "SUCCEEDED",
        "command_error": null,
        "command_result": fake.results.get(name).cloned().unwrap_or(Value::Null),
    });
    if let (Some(token), Ok(mut last)) = (query.get("agent_token"), fake.last.lock()) {
        if last.len() < MAX_REMEMBERED || last.contains_key(token) {
            last.insert(token.clone(), result.clone());
        }
    }
    Json(result)
}

async fn list_commands(
    State(fake): State<Arc<FakeAgent>>,
    Query(query): Query<HashMap<String, String>>,
) -> Json<Value> {
    fake.count("list");
    let last = query
        .get("agent_token")
        .and_then(|t| fake.last.lock().ok()?.get(t).cloned());
    Json(json!({ "commands": last.into_iter().collect::<Vec<_>>() }))
}

async fn status() -> Json<Value> {
    Json(json!({"started_at": 0.0, "version": "13.0.0"}))
}

/// Serve on 127.0.0.1; the URL to put in `callback_url`.
pub async fn start() -> anyhow::Result<(String, Arc<FakeAgent>)> {
    let fake = Arc::new(FakeAgent::from_recording()?);
    let app = Router::new()
        .route("/v1/commands/", get(list_commands).post(post_command))
        .route("/v1/commands", get(list_commands).post(post_command))
        .route("/v1/status", get(status))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the fake agent")?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("fake agent endpoint stopped: {e}");
        }
    });
    Ok((url, fake))
}
