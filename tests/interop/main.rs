//! Interop with the real thing, on 127.0.0.1:
//! - `ironic_drives_ferrite_agent`: the real Ironic 39 conductor deploys,
//!   cleans and inspects through the real ferrite-agent (loop-device disk);
//! - `ipa_works_with_ferrite_conductor`: the real ironic-python-agent 13
//!   (confined: see `ipa.rs`) looks up, heartbeats, answers commands and is
//!   inspected by ferrite-conductor.
//!
//! A recording proxy sits between the two sides; the recordings are the
//! protocol fixtures in tests/fixtures/interop (refreshed when the test runs
//! with FERRITE_UPDATE_FIXTURES=1, else written under target/tmp/interop).

mod ipa;
use ferrite_tests::ironic;
mod ironic_inspection;
mod ironic_to_ferrite;

use std::path::{Path, PathBuf};

use ferrite_tests::recorder::{Exchange, Recorder};
use serde_json::Value;

/// Where a recording goes: the checked-in fixtures when asked, else scratch.
pub fn save_recording(recorder: &Recorder, name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = if std::env::var_os("FERRITE_UPDATE_FIXTURES").is_some() {
        root.join("fixtures/interop")
    } else {
        root.join("../target/tmp/interop")
    };
    let path = dir.join(format!("{name}.json"));
    recorder.save(&path);
    path
}

/// The commands a conductor sent, in order, as `name -> status`: one line
/// per `POST /v1/commands/`, for the notes and for assertions.
pub fn command_table(exchanges: &[Exchange]) -> Vec<(String, String)> {
    exchanges
        .iter()
        .filter(|e| e.from == "conductor" && e.method == "POST")
        .map(|e| {
            let name = e.body["name"].as_str().unwrap_or("?").to_string();
            let step = e.body["params"]["step"]["step"]
                .as_str()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            let status = match &e.response {
                Value::Object(r) => format!(
                    "{} {}",
                    e.status,
                    r.get("command_status")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                ),
                _ => e.status.to_string(),
            };
            (format!("{name}{step}"), status)
        })
        .collect()
}

pub fn print_table(title: &str, exchanges: &[Exchange]) {
    eprintln!("---- {title} ----");
    for e in exchanges {
        let summary = match e.from {
            "conductor" if e.method == "POST" => {
                e.body["name"].as_str().unwrap_or_default().to_string()
            }
            _ => String::new(),
        };
        eprintln!(
            "{:7.2} {:9} {:5} {}{} {} -> {} {}",
            e.t,
            e.from,
            e.method,
            e.path,
            e.query
                .as_deref()
                .map(|q| format!("?{}", redact(q)))
                .unwrap_or_default(),
            summary,
            e.status,
            e.response
                .get("command_status")
                .and_then(Value::as_str)
                .unwrap_or_default()
        );
    }
}

fn redact(query: &str) -> String {
    query
        .split('&')
        .map(|kv| {
            if kv.starts_with("agent_token=") {
                "agent_token=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}
