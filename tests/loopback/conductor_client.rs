//! ferrite-conductor's agent client against the real agent: run, poll,
//! busy and failure reporting, over TLS verified with the heartbeat's PEM.

use std::sync::Arc;
use std::time::Duration;

use ferrite_conductor::agent_client::AgentClientError;
use ferrite_conductor::agent_clients::AgentClients;
use ferrite_conductor::config::ConductorConfig;
use serde_json::{json, Map, Value};

use crate::deployed_pair;

fn config() -> ConductorConfig {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: ConductorConfig,
    }
    let mut cfg = Cli::parse_from(["test"]).config;
    cfg.agent_command_wait_interval = 1;
    cfg
}

fn burnin(seconds: u64, step: &str) -> Map<String, Value> {
    json!({
        "step": {"step": step, "interface": "deploy", "priority": 0},
        "node": {"driver_info": {"agent_burnin_cpu_timeout": seconds, "agent_burnin_cpu_cpu": 1}},
        "ports": [],
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

#[tokio::test]
async fn conductor_client_runs_polls_and_reports_failures() {
    let (conductor, _agent, uuid, _pem) = deployed_pair(&[], "52:54:00:ee:00:01").await;
    // The client is built from what the heartbeat recorded (unmasked, from the DB).
    let mut dii = conductor.node(&uuid).await["driver_internal_info"]
        .as_object()
        .cloned()
        .unwrap();
    dii.insert(
        "agent_secret_token".into(),
        json!(conductor.agent_token(&uuid).unwrap()),
    );
    let cert = conductor
        .data_dir()
        .join("certificates")
        .join(format!("{uuid}.crt"));
    assert_eq!(dii["agent_verify_ca"], json!(cert.to_string_lossy()));
    // The client reads this conductor's copy of the agent's certificate.
    let mut cfg = config();
    cfg.data_dir = conductor.data_dir().to_path_buf();
    let agents = AgentClients::new(Arc::new(cfg)).unwrap();
    let client = agents.for_agent(&uuid, &dii).unwrap();

    let steps = client.get_clean_steps(json!({}), vec![]).await.unwrap();
    assert!(steps.clean_steps["GenericHardwareManager"]
        .iter()
        .any(|s| s.step == "burnin_cpu"));

    let started = tokio::time::Instant::now();
    let done = client
        .run_and_poll("clean.execute_clean_step", burnin(2, "burnin_cpu"))
        .await
        .unwrap();
    assert_eq!(
        done.command_result.unwrap()["clean_step"]["step"],
        "burnin_cpu"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "polled until the burn-in ended"
    );

    let running = client
        .run("clean.execute_clean_step", burnin(2, "burnin_cpu"), false)
        .await
        .unwrap();
    let busy = client
        .run("standby.sync", Map::new(), true)
        .await
        .unwrap_err();
    assert!(
        matches!(busy, AgentClientError::InProgress(ref m) if m.contains("executing command execute_clean_step")),
        "{busy}"
    );
    let listed = client.commands().await.unwrap();
    assert_eq!(listed.last().unwrap().id, running.id);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let failed = client
        .run_and_poll("clean.execute_clean_step", burnin(1, "erase_unicorns"))
        .await
        .unwrap_err();
    assert!(
        failed
            .to_string()
            .contains("Could not find method: erase_unicorns"),
        "{failed}"
    );

    // A wrong token is an API error, not a retry loop.
    dii.insert("agent_secret_token".into(), json!("x".repeat(43)));
    let wrong = agents.for_agent(&uuid, &dii).unwrap();
    let err = wrong.commands().await.unwrap_err();
    assert!(
        matches!(err, AgentClientError::Api { status, .. } if status == 401),
        "{err}"
    );
    // Every client for this agent shared one pinned HTTP client.
    assert_eq!(agents.pinned_count(), 1);
}
