//! The agent's IPA API as a conductor sees it: shapes, token, errors, the
//! one-command-at-a-time rule, and real commands.

use std::io::Read;
use std::time::Duration;

use base64::Engine;
use ferrite_tests::{agent_client, wait_for};
use serde_json::{json, Value};

use crate::deployed_pair;

type Api = ferrite_tests::AgentApi;

fn burnin(seconds: u64) -> Value {
    json!({"name": "clean.execute_clean_step", "params": {
        "step": {"step": "burnin_cpu", "interface": "deploy", "priority": 0, "reboot_requested": false, "abortable": true},
        "node": {"driver_info": {"agent_burnin_cpu_timeout": seconds, "agent_burnin_cpu_cpu": 1}},
        "ports": [],
        "clean_version": {"generic_hardware_manager": "1.2"}}})
}

#[tokio::test]
async fn agent_api_round_trips_and_rejects_bad_requests() {
    let (conductor, agent, uuid, pem) = deployed_pair(&[], "52:54:00:bb:00:01").await;
    let token = conductor.agent_token(&uuid).unwrap();
    let api = Api {
        client: agent_client(Some(&pem)).unwrap(),
        base: agent.url("https"),
        token: token.clone(),
    };

    // Open documents.
    let (code, root) = api.get("/").await;
    assert_eq!(code, 200);
    assert_eq!(root["name"], "OpenStack Ironic Python Agent API");
    assert_eq!(root["default_version"]["id"], "v1");
    let (_, v1) = api.get("/v1/").await;
    assert_eq!(
        v1["media_types"][0]["type"],
        "application/vnd.openstack.ironic-python-agent.v1+json"
    );
    let (_, status) = api.get("/v1/status").await;
    assert!(status["started_at"].as_f64().unwrap() > 1.7e9);
    assert_eq!(status["version"], ferrite_protocol::AGENT_VERSION);

    // Token: required, query parameter only.
    for path in [
        "/v1/commands/",
        "/v1/commands",
        "/commands/",
        "/v1/commands/?agent_token=wrong",
    ] {
        let (code, body) = api.get(path).await;
        assert_eq!(code, 401, "{path}");
        assert_eq!(body["faultcode"], "Client");
        assert_eq!(body["faultstring"], "401 Unauthorized: Token invalid.");
    }
    let resp = api
        .client
        .post(format!("{}/v1/commands/", api.base))
        .header("X-Agent-Token", &token)
        .json(&json!({"name": "standby.sync", "params": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "a header is not a token");

    // Malformed requests: 400/404, nothing recorded.
    let (_, before) = api.get(&format!("/v1/commands/?agent_token={token}")).await;
    let raw = api
        .client
        .post(format!("{}/v1/commands/?agent_token={token}", api.base))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let fault: Value = raw.json().await.unwrap();
    assert!(fault["faultstring"]
        .as_str()
        .unwrap()
        .starts_with("400 Bad Request"));
    let (code, fault) = api.post("", json!({"name": "standby.sync"})).await;
    assert_eq!(
        (code, fault["faultstring"].as_str().unwrap()),
        (400, "400 Bad Request: Missing or invalid name or params")
    );
    let (code, _) = api
        .post("", json!({"name": "standby.sync", "params": []}))
        .await;
    assert_eq!(code, 400);
    let (code, fault) = api
        .post("", json!({"name": "nope.thing", "params": {}}))
        .await;
    assert_eq!(code, 404);
    assert_eq!(
        fault["faultstring"],
        "Not found: Extension with id nope not found."
    );
    let (code, fault) = api
        .post("", json!({"name": "clean.nope", "params": {}}))
        .await;
    assert_eq!(code, 400);
    assert_eq!(
        fault["faultstring"],
        "Invalid command: Unknown command: nope"
    );
    let (code, _) = api.post("", json!({"name": "clean", "params": {}})).await;
    assert_eq!(code, 400);
    let (code, fault) = api
        .post(
            "",
            json!({"name": "clean.execute_clean_step", "params": {"step": {}}}),
        )
        .await;
    assert_eq!(code, 400);
    assert!(fault["faultstring"]
        .as_str()
        .unwrap()
        .starts_with("Invalid command parameters"));
    let (_, after) = api.get(&format!("/v1/commands/?agent_token={token}")).await;
    assert_eq!(before, after, "rejected requests leave no record");
    let (code, fault) = api
        .get(&format!("/v1/commands/no-such-id?agent_token={token}"))
        .await;
    assert_eq!(code, 404);
    assert_eq!(
        fault["faultstring"],
        "Not found: Command Result with id no-such-id not found."
    );

    // Sync command: answered complete, short name, five keys.
    let (code, result) = api
        .post(
            "&wait=true",
            json!({"name": "clean.get_clean_steps", "params": {"node": {}, "ports": []}}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(result.as_object().unwrap().len(), 5);
    assert_eq!(result["command_name"], "get_clean_steps");
    assert_eq!(result["command_status"], "SUCCEEDED");
    assert_eq!(result["command_error"], Value::Null);
    assert_eq!(
        result["command_result"]["clean_steps"]["GenericHardwareManager"][0]["step"],
        "burnin_cpu"
    );

    // Async command: RUNNING at once; a second command is refused with 409.
    let (code, running) = api.post("&wait=false", burnin(2)).await;
    assert_eq!(code, 200);
    assert_eq!(running["command_status"], "RUNNING");
    assert_eq!(running["command_name"], "execute_clean_step");
    let id = running["id"].as_str().unwrap().to_string();
    let (code, busy) = api
        .post("", json!({"name": "standby.sync", "params": {}}))
        .await;
    assert_eq!(code, 409);
    assert_eq!(
        busy["faultstring"],
        "Agent is busy: executing command execute_clean_step"
    );
    let (_, listed) = api.get(&format!("/v1/commands?agent_token={token}")).await;
    assert_eq!(
        listed["commands"].as_array().unwrap().last().unwrap()["id"],
        id
    );
    let (_, done) = api
        .get(&format!("/v1/commands/{id}?wait=true&agent_token={token}"))
        .await;
    assert_eq!(done["command_status"], "SUCCEEDED");
    assert_eq!(done["command_result"]["clean_step"]["step"], "burnin_cpu");
    assert_eq!(done["command_result"]["clean_result"], Value::Null);

    // Unknown step: the async command fails with IPA's error shape.
    let mut unknown = burnin(1);
    unknown["params"]["step"]["step"] = json!("erase_unicorns");
    let (_, failed) = api.post("&wait=true", unknown).await;
    assert_eq!(failed["command_status"], "FAILED");
    assert_eq!(
        failed["command_error"]["type"],
        "HardwareManagerMethodNotFound"
    );
    assert_eq!(
        failed["command_error"]["details"],
        "Could not find method: erase_unicorns"
    );

    // Stale hardware-manager versions: CLEAN_VERSION_MISMATCH.
    let mut stale = burnin(1);
    stale["params"]["clean_version"] = json!({"generic_hardware_manager": "0.9"});
    let (_, mismatch) = api.post("&wait=true", stale).await;
    assert_eq!(mismatch["command_status"], "CLEAN_VERSION_MISMATCH");
    assert_eq!(mismatch["command_error"]["type"], "VersionMismatch");

    // Logs: a base64 tar.gz holding the agent's own log.
    let (_, logs) = api
        .post("", json!({"name": "log.collect_system_logs", "params": {}}))
        .await;
    assert_eq!(logs["command_status"], "SUCCEEDED");
    let b64 = logs["command_result"]["system_logs"].as_str().unwrap();
    let gz = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
    let mut agent_log = String::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("ferrite-agent.log") {
            entry.read_to_string(&mut agent_log).unwrap();
        }
    }
    assert!(
        agent_log.contains("lookup succeeded"),
        "log archive lacks the agent log"
    );

    // Lockdown: the API closes.
    let (code, _) = api
        .post("", json!({"name": "system.lockdown", "params": {}}))
        .await;
    assert_eq!(code, 200);
    wait_for("the agent API to close", Duration::from_secs(30), || {
        let port = agent.port;
        async move {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_err()
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn without_a_token_every_command_route_is_401() {
    // Pinned to 1.31 the agent gets no token at lookup (tokens came in 1.62)
    // and no auto-TLS (1.68): the API serves plain HTTP and refuses commands.
    let conductor = ferrite_tests::Conductor::start(&["--fast-track", "true"]).await;
    let node = conductor
        .create_node(json!({"driver": "fake-hardware"}))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    conductor.create_port(&uuid, "52:54:00:bb:00:02").await;
    let agent = ferrite_tests::Agent::start(
        &conductor.url,
        &["52:54:00:bb:00:02"],
        &["ipa-ironic-api-version=1.31"],
    );
    let http = reqwest::Client::new();
    let status_url = format!("{}/v1/status", agent.url("http"));
    wait_for("the agent API over http", Duration::from_secs(20), || {
        let http = http.clone();
        let url = status_url.clone();
        async move {
            http.get(&url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        }
    })
    .await;
    assert!(
        conductor.agent_token(&uuid).is_none(),
        "no token is issued below 1.62"
    );
    for token in ["", "anything", "******"] {
        let resp = http
            .post(format!(
                "{}/v1/commands/?agent_token={token}",
                agent.url("http")
            ))
            .json(&json!({"name": "standby.sync", "params": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
    // Its heartbeats carry no token, so the conductor refuses them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(agent
        .proc
        .log_text()
        .contains("Invalid or missing agent token received."));
    assert!(conductor.node(&uuid).await["driver_internal_info"]
        .get("agent_url")
        .is_none());
}

#[tokio::test]
async fn hardware_inventory_over_the_api() {
    let pair =
        ferrite_tests::Pair::start(&[], "52:54:00:bb:00:03", &["BOOTIF=01-52-54-00-bb-00-03"])
            .await;
    let api = pair.api();
    for name in ["system.get_hardware_info", "poll.get_hardware_info"] {
        let result = api.run(name, json!({})).await;
        assert_eq!(result["command_status"], "SUCCEEDED", "{result}");
        let inv = &result["command_result"];
        for key in [
            "interfaces",
            "cpu",
            "disks",
            "memory",
            "bmc_address",
            "bmc_v6address",
            "system_vendor",
            "boot",
            "hostname",
        ] {
            assert!(inv.get(key).is_some(), "{name}: inventory lacks {key}");
        }
        assert_eq!(inv["boot"]["pxe_interface"], "01-52-54-00-bb-00-03");
        assert!(
            inv["memory"]["total"].as_u64().unwrap() > 0,
            "procfs is the real one"
        );
        assert!(inv["cpu"]["count"].as_u64().unwrap() >= 1);
    }
}
