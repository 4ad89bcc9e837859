//! `burnin_network` between two real agents on one host: each listens on
//! its own loopback address (127.0.0.2, 127.0.0.3), paired statically or
//! through the conductor, for a runtime of a couple of seconds.

use std::path::Path;
use std::time::{Duration, Instant};

use ferrite_tests::{agent_client, free_port, Agent, AgentApi, Conductor, Pair};
use serde_json::{json, Value};

/// A node of `conductor` with an agent on `ip`, ready for commands.
struct Node {
    agent: Agent,
    api: AgentApi,
}

async fn node_on(conductor: &Conductor, name: &str, mac: &str, ip: &str) -> Node {
    let node = conductor
        .create_node(json!({"driver": "fake-hardware", "name": name}))
        .await;
    let uuid = node["uuid"].as_str().expect("uuid").to_string();
    conductor.create_port(&uuid, mac).await;
    let advertise = format!("ipa-advertise-host={ip}");
    let listen = format!("ipa-listen-host={ip}");
    let agent = Agent::start(&conductor.url, &[mac], &[&advertise, &listen]);
    let pem = conductor
        .wait_agent_certificate(&uuid, Duration::from_secs(60))
        .await;
    // As `Pair::start`: let the conductor's first get_clean_steps finish.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let node = conductor.node(&uuid).await;
        if node["driver_internal_info"]
            .get("agent_cached_clean_steps_refreshed")
            .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let api = AgentApi {
        client: agent_client(Some(&pem)).expect("agent client"),
        base: format!("https://{ip}:{}", agent.port),
        token: conductor.agent_token(&uuid).expect("token"),
    };
    Node { agent, api }
}

fn step(driver_info: Value) -> Value {
    json!({
    "step": {"step": "burnin_network", "interface": "deploy", "priority": 0},
    "node": {"driver_info": driver_info}, "ports": [],
    "clean_version": {"generic_hardware_manager": "1.2"}})
}

async fn run(api: &AgentApi, driver_info: Value) -> Value {
    api.run("clean.execute_clean_step", step(driver_info)).await
}

fn report(path: &Path, suffix: &str) -> Value {
    let file = format!("{}.{suffix}", path.display());
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_json::from_str(&text).expect("report JSON")
}

fn assert_moved(writer: &Value, reader: &Value) {
    assert!(writer["bytes"].as_u64().unwrap() > 0, "{writer}");
    assert_eq!(writer["bytes"], reader["bytes"], "{writer}\n{reader}");
    assert_eq!(writer["per_stream_bytes"], reader["per_stream_bytes"]);
    assert_eq!(writer["streams"], 16, "{writer}");
    assert!(writer["seconds"].as_f64().unwrap() >= 2.0, "{writer}");
    assert!(reader["mib_per_s"].as_f64().unwrap() > 0.0, "{reader}");
}

fn assert_failed(result: &Value, kind: &str, details: &str) {
    assert_eq!(result["command_status"], "FAILED", "{result}");
    assert_eq!(result["command_error"]["type"], kind, "{result}");
    let got = result["command_error"]["details"].as_str().unwrap_or("");
    assert!(
        got.starts_with(details),
        "{got:?} does not start with {details:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn burnin_network_static_pairing_moves_bytes_both_ways() {
    let conductor = Conductor::start(&["--fast-track", "true"]).await;
    let a = node_on(&conductor, "net-a", "52:54:00:b2:00:01", "127.0.0.2").await;
    let b = node_on(&conductor, "net-b", "52:54:00:b2:00:02", "127.0.0.3").await;
    let out = tempfile::tempdir().unwrap();
    let (out_a, out_b) = (out.path().join("a.json"), out.path().join("b.json"));
    let port = free_port();
    let info = |role: &str, partner: &str, file: &Path| {
        json!({"agent_burnin_fio_network_runtime": 2,
               "agent_burnin_fio_network_port": port,
               "agent_burnin_fio_network_outputfile": file.display().to_string(),
               "agent_burnin_fio_network_config": {"role": role, "partner": partner}})
    };
    let (ra, rb) = tokio::join!(
        run(&a.api, info("writer", "127.0.0.3", &out_a)),
        run(&b.api, info("reader", "127.0.0.2", &out_b)),
    );
    assert_eq!(ra["command_status"], "SUCCEEDED", "{ra}");
    assert_eq!(rb["command_status"], "SUCCEEDED", "{rb}");
    let (a_w, a_r) = (report(&out_a, "writer"), report(&out_a, "reader"));
    let (b_w, b_r) = (report(&out_b, "writer"), report(&out_b, "reader"));
    // A wrote first, to B; then B wrote to A.
    assert_eq!(
        (a_w["direction"].as_u64(), b_r["direction"].as_u64()),
        (Some(1), Some(1))
    );
    // Each writer listened on its own address; each reader found it there.
    assert_eq!(a_w["local"], "127.0.0.2", "{a_w}");
    assert_eq!(b_r["partner"], "127.0.0.2", "{b_r}");
    assert_moved(&a_w, &b_r);
    assert_moved(&b_w, &a_r);
    assert_eq!(b_w["local"], "127.0.0.3", "{b_w}");
    assert_eq!(a_r["partner"], "127.0.0.3", "{a_r}");
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread")]
async fn burnin_network_pairs_two_nodes_through_the_conductor() {
    let conductor = Conductor::start(&["--fast-track", "true"]).await;
    let a = node_on(&conductor, "pair-a", "52:54:00:b2:00:11", "127.0.0.4").await;
    let b = node_on(&conductor, "pair-b", "52:54:00:b2:00:12", "127.0.0.5").await;
    let out = tempfile::tempdir().unwrap();
    let (out_a, out_b) = (out.path().join("a.json"), out.path().join("b.json"));
    let port = free_port();
    let backend = format!("ferrite+{}", conductor.url);
    let info = |file: &Path| {
        json!({"agent_burnin_fio_network_runtime": 2,
               "agent_burnin_fio_network_port": port,
               "agent_burnin_fio_network_outputfile": file.display().to_string(),
               "agent_burnin_fio_network_pairing_backend_url": backend,
               "agent_burnin_fio_network_pairing_group_name": "rack-7",
               "agent_burnin_fio_network_pairing_timeout": 20})
    };
    let (ra, rb) = tokio::join!(run(&a.api, info(&out_a)), run(&b.api, info(&out_b)));
    assert_eq!(ra["command_status"], "SUCCEEDED", "{ra}");
    assert_eq!(rb["command_status"], "SUCCEEDED", "{rb}");
    let (a_w, a_r) = (report(&out_a, "writer"), report(&out_a, "reader"));
    let (b_w, b_r) = (report(&out_b, "writer"), report(&out_b, "reader"));
    // Exactly one of them was the writer first.
    let a_first = a_w["direction"] == 1;
    assert_ne!(a_first, b_w["direction"] == 1, "{a_w}\n{b_w}");
    // The conductor told each the address the other heartbeats from.
    assert_eq!(a_r["partner"], "127.0.0.5", "{a_r}");
    assert_eq!(b_r["partner"], "127.0.0.4", "{b_r}");
    assert_eq!(a_w["local"], "127.0.0.4", "{a_w}");
    assert_eq!(b_w["local"], "127.0.0.5", "{b_w}");
    assert_moved(&a_w, &b_r);
    assert_moved(&b_w, &a_r);
    let log = conductor.proc.log_text();
    assert!(log.contains("network burn-in pair"), "{log}");
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread")]
async fn burnin_network_refuses_incomplete_pairing_as_ipa_does() {
    let pair = Pair::start(&[], "52:54:00:b2:00:21", &[]).await;
    let api = pair.api();
    let missing = run(&api, json!({"agent_burnin_fio_network_runtime": 1})).await;
    assert_failed(
        &missing,
        "CleaningError",
        "fio (network): dynamic pairing config is missing agent_burnin_fio_network_pairing_backend_url",
    );
    let unknown = run(
        &api,
        json!({"agent_burnin_fio_network_config": {"role": "sender", "partner": "127.0.0.9"}}),
    )
    .await;
    assert_failed(
        &unknown,
        "CleaningError",
        "fio (network) found an unknown role: sender",
    );
    let no_role = run(
        &api,
        json!({"agent_burnin_fio_network_config": {"partner": "h"}}),
    )
    .await;
    assert_failed(
        &no_role,
        "CleaningError",
        "fio (network) found an unknown role: None",
    );
    let no_partner = run(
        &api,
        json!({"agent_burnin_fio_network_config": "{\"role\": \"reader\"}"}),
    )
    .await;
    assert_failed(
        &no_partner,
        "CleaningError",
        "fio (network) failed to find partner",
    );
    let tooz = run(
        &api,
        json!({"agent_burnin_fio_network_pairing_backend_url": "etcd3+http://10.0.0.1:2379"}),
    )
    .await;
    assert_failed(
        &tooz,
        "CleaningError",
        "fio (network): pairing backend \"etcd3+http://10.0.0.1:2379\" is not supported",
    );

    // Nobody else in the group: IPA's timeout error, after the timeout.
    let started = Instant::now();
    let alone = run(
        &api,
        json!({"agent_burnin_fio_network_pairing_backend_url": "ferrite://",
               "agent_burnin_fio_network_pairing_timeout": 2}),
    )
    .await;
    assert_failed(
        &alone,
        "CleaningError",
        "fio (network) timed out to find partner",
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    // It left the group: the conductor logged its leaving.
    let log = pair.conductor.proc.log_text();
    assert!(log.contains("left the network burn-in group"), "{log}");

    // The endpoint needs no API user but the node's agent token.
    let http = reqwest::Client::new();
    let url = format!("{}/v1/ferrite/network-burnin/pair", pair.conductor.url);
    let ask = |uuid: &str, token: &str| {
        http.post(&url)
            .json(
                &json!({"node_uuid": uuid, "agent_token": token, "group": "g",
                          "address": "127.0.0.1", "wait": 1}),
            )
            .send()
    };
    let token = pair.conductor.agent_token(&pair.uuid).expect("token");
    let bad = ask(&pair.uuid, "not-the-token").await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad
        .text()
        .await
        .unwrap()
        .contains("Invalid or missing agent token"));
    let unknown = ask("9d3c4d57-1d0e-4bd4-a3e6-2f1c7f3e0a11", &token)
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let alone: Value = ask(&pair.uuid, &token).await.unwrap().json().await.unwrap();
    assert_eq!(alone, json!({"status": "waiting"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn burnin_network_fails_when_the_partner_dies_mid_run() {
    let conductor = Conductor::start(&["--fast-track", "true"]).await;
    let a = node_on(&conductor, "die-a", "52:54:00:b2:00:31", "127.0.0.6").await;
    let mut b = node_on(&conductor, "die-b", "52:54:00:b2:00:32", "127.0.0.7").await;
    let port = free_port();
    let info = |role: &str, partner: &str| {
        json!({"agent_burnin_fio_network_runtime": 8,
               "agent_burnin_fio_network_port": port,
               "agent_burnin_fio_network_config": {"role": role, "partner": partner}})
    };
    let b_api = b.api.clone();
    let b_info = info("reader", "127.0.0.6");
    // B's command never answers once B is killed; run it in the background.
    let b_run = tokio::spawn(async move {
        let url = format!(
            "{}/v1/commands/?agent_token={}&wait=true",
            b_api.base, b_api.token
        );
        let body = json!({"name": "clean.execute_clean_step", "params": step(b_info)});
        // Retried while busy (409), as `AgentApi::run` does; once B is
        // killed its connection dies with it: no answer to check.
        while let Ok(resp) = b_api.client.post(&url).json(&body).send().await {
            if resp.status() != 409 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let started = Instant::now();
    let killer = async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let _ = b.agent.proc.child.kill();
        let _ = b.agent.proc.child.wait();
    };
    let (ra, ()) = tokio::join!(run(&a.api, info("writer", "127.0.0.7")), killer);
    assert_failed(
        &ra,
        "CommandExecutionError",
        "fio (network) failed with error: writer (127.0.0.7): stream ",
    );
    let details = ra["command_error"]["details"].as_str().unwrap();
    assert!(details.contains("broke after"), "{details}");
    eprintln!("the survivor's error: {details}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the survivor waited out the runtime"
    );
    b_run.abort();
    drop(a);
}
