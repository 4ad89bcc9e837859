//! Lookup, token, heartbeats, TLS verification and lockdown between the
//! real binaries.

use std::time::{Duration, Instant};

use ferrite_tests::{agent_client, parse_internal_time, wait_exit, wait_for, Agent, Conductor};
use serde_json::json;

use crate::{deployed_pair, dii};

#[tokio::test]
async fn lookup_gives_node_and_token_and_conductor_caches_clean_steps_over_verified_tls() {
    let (conductor, agent, uuid, pem) = deployed_pair(&[], "52:54:00:aa:00:01").await;

    let token = conductor
        .agent_token(&uuid)
        .expect("token issued at lookup");
    assert_eq!(token.len(), 43, "token_urlsafe(32) length");

    // The conductor fetched get_clean_steps over HTTPS, trusting only the PEM.
    let info = wait_for("cached clean steps", Duration::from_secs(60), || async {
        let info = dii(&conductor, &uuid).await;
        info.get("agent_cached_clean_steps")
            .is_some()
            .then_some(info)
    })
    .await;
    assert_eq!(info["agent_url"], agent.url("https"));
    assert_eq!(info["agent_secret_token"], "******", "API masks the token");
    assert_eq!(
        info["hardware_manager_version"],
        json!({"generic_hardware_manager": "1.2"})
    );
    let steps = info["agent_cached_clean_steps"]["deploy"]
        .as_array()
        .expect("deploy steps");
    assert!(steps
        .iter()
        .any(|s| s["step"] == "burnin_cpu" && s["requires_ramdisk"] == true));
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));

    // The PEM really is what the agent serves: a client trusting it connects...
    let trusting = agent_client(Some(&pem)).unwrap();
    let status = trusting
        .get(format!("{}/v1/status", agent.url("https")))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    // ...and a client trusting only the public roots does not.
    let public = reqwest::Client::builder().use_rustls_tls().build().unwrap();
    assert!(public
        .get(format!("{}/v1/status", agent.url("https")))
        .send()
        .await
        .is_err());
    // Plain HTTP to the TLS port fails too.
    let plain = reqwest::get(format!("{}/v1/status", agent.url("http"))).await;
    assert!(!plain.is_ok_and(|r| r.status().is_success()));
}

#[tokio::test]
async fn heartbeats_arrive_at_the_expected_cadence() {
    // heartbeat_timeout 2 s → an interval of 0.6–1.2 s.
    let (conductor, _agent, uuid, _pem) =
        deployed_pair(&["--heartbeat-timeout", "2"], "52:54:00:aa:00:02").await;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        if let Some(ts) = dii(&conductor, &uuid).await["agent_last_heartbeat"].as_str() {
            let t = parse_internal_time(ts).unwrap();
            if seen.last() != Some(&t) {
                seen.push(t);
            }
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert!(seen.len() >= 6, "only {} heartbeats in 8 s", seen.len());
    for pair in seen.windows(2) {
        let gap = (pair[1] - pair[0]).num_milliseconds();
        assert!(
            (550..=1300).contains(&gap),
            "heartbeat gap {gap} ms outside 0.6–1.2 s (+ polling slack)"
        );
    }
}

#[tokio::test]
async fn forced_heartbeat_follows_the_end_of_an_async_command() {
    // heartbeat_timeout 60 s: regular beats are 18–36 s apart, so a beat
    // within ~6 s of the command's end can only be the forced one.
    let (conductor, agent, uuid, pem) =
        deployed_pair(&["--heartbeat-timeout", "60"], "52:54:00:aa:00:03").await;
    let first = wait_for("first heartbeat", Duration::from_secs(30), || async {
        dii(&conductor, &uuid).await["agent_last_heartbeat"]
            .as_str()
            .map(str::to_string)
    })
    .await;
    let token = conductor.agent_token(&uuid).unwrap();
    let client = agent_client(Some(&pem)).unwrap();
    let started = Instant::now();
    let resp: serde_json::Value = client
        .post(format!(
            "{}/v1/commands/?agent_token={token}",
            agent.url("https")
        ))
        .json(&json!({"name": "clean.execute_clean_step", "params": {
            "step": {"step": "burnin_cpu", "interface": "deploy", "priority": 0},
            "node": {"driver_info": {"agent_burnin_cpu_timeout": 1, "agent_burnin_cpu_cpu": 1}},
            "ports": []}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["command_status"], "RUNNING");
    let second = wait_for("a forced heartbeat", Duration::from_secs(15), || async {
        dii(&conductor, &uuid).await["agent_last_heartbeat"]
            .as_str()
            .filter(|t| *t != first)
            .map(str::to_string)
    })
    .await;
    let gap = (parse_internal_time(&second).unwrap() - parse_internal_time(&first).unwrap())
        .num_milliseconds();
    assert!(
        gap >= 4_900,
        "forced beats keep 5 s from the previous one (gap {gap} ms)"
    );
    // Regular beats are at least 18 s apart at this timeout.
    assert!(started.elapsed() < Duration::from_secs(17));
}

#[tokio::test]
async fn second_agent_gets_masked_token_and_locks_down() {
    let (conductor, _first, _uuid, _pem) = deployed_pair(&[], "52:54:00:aa:00:04").await;
    let mut second = Agent::start(&conductor.url, &["52:54:00:aa:00:04"], &[]);
    wait_for(
        "lockdown in the second agent's log",
        Duration::from_secs(20),
        || {
            let log = second.proc.log_text();
            async move { log.contains("FATAL").then_some(()) }
        },
    )
    .await;
    // Locked down: alive, but not serving.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        second.proc.exited().is_none(),
        "lockdown sleeps, it does not exit"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", second.port)).is_err(),
        "API must not listen"
    );
    assert!(!second.proc.log_text().contains("heartbeat sent"));
}

#[tokio::test]
async fn lookup_is_refused_outside_lookup_states_and_agent_gives_up() {
    // No fast-track: a node in `enroll` must not be found.
    let conductor = Conductor::start(&[]).await;
    let node = conductor
        .create_node(json!({"driver": "fake-hardware"}))
        .await;
    let uuid = node["uuid"].as_str().unwrap();
    conductor.create_port(uuid, "52:54:00:aa:00:05").await;
    let resp = conductor
        .request(
            reqwest::Method::GET,
            "/v1/lookup?addresses=52:54:00:aa:00:05",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let mut agent = Agent::start(
        &conductor.url,
        &["52:54:00:aa:00:05"],
        &["ipa-lookup-timeout=3"],
    );
    let status = wait_exit(&mut agent.proc, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(!status.success());
    let log = agent.proc.log_text();
    assert!(log.contains("lookup of 52:54:00:aa:00:05 gave up"), "{log}");
    assert!(
        conductor.agent_token(uuid).is_none(),
        "no token for a refused lookup"
    );
}

#[tokio::test]
async fn dead_conductor_is_a_clear_error() {
    let port = ferrite_tests::free_port();
    let mut agent = Agent::start(
        &format!("http://127.0.0.1:{port}"),
        &["52:54:00:aa:00:06"],
        &["ipa-lookup-timeout=2"],
    );
    let status = wait_exit(&mut agent.proc, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(!status.success());
    let log = agent.proc.log_text();
    assert!(
        log.contains("cannot reach any Ironic API endpoint"),
        "{log}"
    );
}

#[tokio::test]
async fn malformed_kernel_parameter_names_the_parameter() {
    let mut agent = Agent::start(
        "http://127.0.0.1:1",
        &["52:54:00:aa:00:07"],
        &["BOOTIF=01-zz-zz"],
    );
    let status = wait_exit(&mut agent.proc, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(2));
    assert!(
        agent.proc.log_text().contains("BOOTIF"),
        "{}",
        agent.proc.log_text()
    );
}
