//! Provisioning flows under faults: illegal verbs, maintenance and locks,
//! a ramdisk that never calls back, abort, and a conductor killed in the
//! middle of a deploy.

use std::time::Duration;

use ferrite_tests::deploy_fixture::DeployFixture;
use ferrite_tests::images::same_prefix;
use ferrite_tests::{wait_for, Agent, Conductor};
use serde_json::{json, Value};

/// Ironic's error text inside `{"error_message": "<json>"}`.
fn faultstring(body: &Value) -> String {
    let inner: Value =
        serde_json::from_str(body["error_message"].as_str().unwrap_or("{}")).unwrap_or_default();
    inner["faultstring"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn set_maintenance(c: &Conductor, uuid: &str, on: bool) {
    let path = format!("/v1/nodes/{uuid}/maintenance");
    let req = if on {
        c.request(reqwest::Method::PUT, &path)
            .json(&json!({"reason": "disk swap"}))
    } else {
        c.request(reqwest::Method::DELETE, &path)
    };
    assert_eq!(req.send().await.unwrap().status().as_u16(), 202);
    let n = c.node(uuid).await;
    assert_eq!(n["maintenance"], on);
    assert_eq!(
        n["maintenance_reason"],
        if on { json!("disk swap") } else { Value::Null }
    );
}

/// A node taken to `available` without cleaning.
async fn available_node(c: &Conductor, name: &str) -> String {
    c.available_node(json!({"name": name})).await
}

#[tokio::test(flavor = "multi_thread")]
async fn illegal_verbs_maintenance_and_locks() {
    let c = Conductor::start(&[]).await;
    let node = c.create_node(json!({"driver": "fake-hardware"})).await;
    let uuid = node["uuid"].as_str().unwrap().to_string();

    // Every verb that enroll does not allow: 400 and Ironic's sentence.
    for target in [
        "provide", "inspect", "active", "deploy", "rebuild", "deleted", "undeploy", "abort",
    ] {
        let (code, body) = c.act(&uuid, json!({"target": target})).await;
        assert_eq!(code, 400, "{target}: {body}");
        assert!(
            faultstring(&body).contains("while it is in state \"enroll\""),
            "{target}: {body}"
        );
    }
    let (code, body) = c.act(&uuid, json!({"target": "fly"})).await;
    assert_eq!(code, 400);
    assert!(faultstring(&body).contains("Value: 'fly'"), "{body}");
    let (code, body) = c.act(&uuid, json!({"target": "clean"})).await;
    assert_eq!(code, 400);
    assert!(
        faultstring(&body).contains("\"clean_steps\" is required"),
        "{body}"
    );
    let (code, body) = c
        .provision(
            &uuid,
            json!({"target": "manage", "clean_steps": [{"interface": "deploy", "step": "x"}]}),
        )
        .await;
    assert_eq!(code, 400);
    assert!(faultstring(&body).contains("only valid when"), "{body}");

    assert_eq!(c.act(&uuid, json!({"target": "manage"})).await.0, 202);
    c.wait_state(&uuid, "manageable", Duration::from_secs(30))
        .await;
    for target in ["active", "deleted", "abort", "rebuild"] {
        let (code, body) = c.act(&uuid, json!({"target": target})).await;
        assert_eq!(code, 400, "{target}: {body}");
        assert!(faultstring(&body).contains("\"manageable\""), "{body}");
    }
    let (code, body) = c
        .provision(
            &uuid,
            json!({"target": "clean", "clean_steps": [{"interface": "teleport", "step": "x"}]}),
        )
        .await;
    assert_eq!(code, 400);
    assert!(
        faultstring(&body).contains("'interface' must be one of"),
        "{body}"
    );

    // Maintenance blocks provide; the node does not move.
    set_maintenance(&c, &uuid, true).await;
    let (code, body) = c.act(&uuid, json!({"target": "provide"})).await;
    assert_eq!(code, 400);
    assert!(faultstring(&body).contains("maintenance mode"), "{body}");
    set_maintenance(&c, &uuid, false).await;

    // A node locked by another conductor: 409 NodeLocked.
    assert_eq!(c.db.set_reservation(&uuid, Some("other-host")), 1);
    let (code, body) = c.provision(&uuid, json!({"target": "provide"})).await;
    assert_eq!(code, 409, "{body}");
    assert!(
        faultstring(&body).contains("locked by host other-host"),
        "{body}"
    );
    assert_eq!(c.db.set_reservation(&uuid, None), 1);
    let n = c.node(&uuid).await;
    assert_eq!(n["provision_state"], "manageable");
}

/// Ironic's `node_locked_retry_attempts` (3) and `_interval` (1 s): a
/// request that finds the node held tries again, so a lock let go within
/// the retries is no 409. A flow shows its new state a moment before it
/// lets go of the node; an agent or operator acting on that state must
/// not be refused for it.
#[tokio::test(flavor = "multi_thread")]
async fn requests_wait_for_a_lock_let_go_within_the_retries() {
    let c = Conductor::start(&["--require-tls", "false"]).await;
    let mac = "52:54:00:10:c4:01";
    let node = c.create_node(json!({"driver": "fake-hardware"})).await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    c.create_port(&uuid, mac).await;
    assert_eq!(c.act(&uuid, json!({"target": "manage"})).await.0, 202);
    c.wait_state(&uuid, "manageable", Duration::from_secs(30))
        .await;
    c.wait_unlocked(&uuid, Duration::from_secs(10)).await;

    // Held by another conductor, let go 0.3 s into the request.
    let let_go = || async {
        assert_eq!(c.db.set_reservation(&uuid, Some("other-host")), 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(c.db.set_reservation(&uuid, None), 1);
    };

    // A node update.
    let patch = async {
        let resp = c
            .request(reqwest::Method::PATCH, &format!("/v1/nodes/{uuid}"))
            .json(&json!([{"op": "add", "path": "/extra/rack", "value": "r7"}]))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    };
    let ((code, body), ()) = tokio::join!(patch, let_go());
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["extra"]["rack"], "r7");

    // A provision verb.
    let ((code, body), ()) =
        tokio::join!(c.provision(&uuid, json!({"target": "provide"})), let_go());
    assert_eq!(code, 202, "{body}");
    c.wait_state(&uuid, "clean wait", Duration::from_secs(30))
        .await;
    c.wait_unlocked(&uuid, Duration::from_secs(10)).await;

    // The ramdisk's lookup: the token comes once the node is free.
    let lookup = async {
        let resp = c
            .http
            .get(format!("{}/v1/lookup?addresses={mac}", c.url))
            .header("X-OpenStack-Ironic-API-Version", "1.68")
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    };
    let ((code, body), ()) = tokio::join!(lookup, let_go());
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["config"]["agent_token"].as_str().map(str::len),
        Some(43),
        "{body}"
    );

    // A lock that stays is NodeLocked once the retries are spent.
    assert_eq!(c.db.set_reservation(&uuid, Some("other-host")), 1);
    let (code, body) = c.provision(&uuid, json!({"target": "abort"})).await;
    assert_eq!(code, 409, "{body}");
    assert!(
        faultstring(&body).contains("locked by host other-host"),
        "{body}"
    );
    assert_eq!(c.node(&uuid).await["provision_state"], "clean wait");
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_ramdisk_times_out_and_abort_stops_cleaning() {
    let c = Conductor::start(&[
        "--deploy-callback-timeout",
        "3",
        "--clean-callback-timeout",
        "600",
        "--periodic-interval",
        "1",
    ])
    .await;
    let uuid = available_node(&c, "silent").await;
    c.patch_node(
        &uuid,
        json!([{"op": "add", "path": "/instance_info", "value": {
            "image_source": "http://127.0.0.1:9/none.qcow2", "image_checksum": "0".repeat(64)}}]),
    )
    .await;
    assert_eq!(c.act(&uuid, json!({"target": "active"})).await.0, 202);
    let waiting = c
        .wait_state(&uuid, "wait call-back", Duration::from_secs(30))
        .await;
    assert_eq!(waiting["target_provision_state"], "active");
    for target in ["manage", "provide", "inspect", "active", "rebuild", "abort"] {
        let (code, body) = c.act(&uuid, json!({"target": target})).await;
        assert_eq!(code, 400, "{target} in wait call-back: {body}");
        assert!(faultstring(&body).contains("\"wait call-back\""), "{body}");
    }
    // No ramdisk ever calls back.
    let failed = c
        .wait_state(&uuid, "deploy failed", Duration::from_secs(30))
        .await;
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("Timeout reached while waiting for callback"),
        "{failed}"
    );
    // The failure powers the node off right after the state changes.
    wait_for(
        "the failed node powered off",
        Duration::from_secs(10),
        || {
            let n = c.node(&uuid);
            async move { (n.await["power_state"] == "power off").then_some(()) }
        },
    )
    .await;
    for target in ["manage", "provide", "inspect", "abort"] {
        let (code, body) = c.act(&uuid, json!({"target": target})).await;
        assert_eq!(code, 400, "{target} in deploy failed: {body}");
        assert!(faultstring(&body).contains("\"deploy failed\""), "{body}");
    }

    // A deploy without an image source is refused up front.
    let other = available_node(&c, "no-image").await;
    for target in ["provide", "inspect", "abort", "deleted", "rebuild"] {
        let (code, body) = c.act(&other, json!({"target": target})).await;
        assert_eq!(code, 400, "{target} in available: {body}");
        assert!(faultstring(&body).contains("\"available\""), "{body}");
    }
    let (code, body) = c.act(&other, json!({"target": "active"})).await;
    assert_eq!(code, 400);
    assert!(
        faultstring(&body).contains("Missing are: [\"image_source\"]"),
        "{body}"
    );

    // Manual cleaning waits for a ramdisk; abort ends it.
    assert_eq!(c.act(&other, json!({"target": "manage"})).await.0, 202);
    c.wait_state(&other, "manageable", Duration::from_secs(30))
        .await;
    let steps = json!([{"interface": "deploy", "step": "erase_devices_metadata"}]);
    assert_eq!(
        c.act(&other, json!({"target": "clean", "clean_steps": steps}))
            .await
            .0,
        202
    );
    let waiting = c
        .wait_state(&other, "clean wait", Duration::from_secs(30))
        .await;
    assert_eq!(waiting["target_provision_state"], "manageable");
    assert_eq!(c.act(&other, json!({"target": "abort"})).await.0, 202);
    for target in ["provide", "active", "inspect"] {
        let (code, body) = c.act(&other, json!({"target": target})).await;
        assert_eq!(code, 400, "{target} in clean wait: {body}");
    }
    let aborted = c
        .wait_state(&other, "clean failed", Duration::from_secs(30))
        .await;
    assert_eq!(
        aborted["last_error"],
        "By request, the clean operation was aborted"
    );
    // From clean failed, manage is the way back.
    assert_eq!(c.act(&other, json!({"target": "manage"})).await.0, 202);
    c.wait_state(&other, "manageable", Duration::from_secs(30))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conductor_killed_mid_deploy_finishes_after_restart() {
    // ~10 s of writing: time to kill the conductor.
    let f = DeployFixture::new(24 << 20, 2 << 20, true).await;
    let mut c = Conductor::start(&[
        "--fast-track",
        "true",
        "--heartbeat-timeout",
        "4",
        "--periodic-interval",
        "1",
    ])
    .await;
    let uuid = available_node(&c, "restart").await;
    let _agent = c
        .start_agent_for(&uuid, "52:54:00:fa:17:01", &[&f.disks_param()])
        .await;
    c.set_instance_info(&uuid, f.instance_info()).await;
    assert_eq!(c.act(&uuid, json!({"target": "active"})).await.0, 202);
    // Progress of the running write is visible on the node.
    let progress = wait_for(
        "write progress on the node",
        Duration::from_secs(60),
        || {
            let n = c.node(&uuid);
            async move {
                let n = n.await;
                n["driver_internal_info"]["deploy_progress"]["bytes_received"]
                    .as_u64()
                    .filter(|b| *b > 0)
                    .map(|_| n)
            }
        },
    )
    .await;
    assert_eq!(progress["provision_state"], "wait call-back");
    assert_eq!(progress["deploy_step"]["step"], "write_image");

    c.kill_and_restart().await;
    let done = c
        .wait_state(&uuid, "active", Duration::from_secs(120))
        .await;
    assert_eq!(done["last_error"], Value::Null);
    same_prefix(&f.raw, &f.disk.path, 24 << 20).expect("the image is on the disk");
}

#[tokio::test(flavor = "multi_thread")]
async fn conductor_killed_mid_clean_finishes_after_restart() {
    let mut c = Conductor::start(&[
        "--fast-track",
        "true",
        "--heartbeat-timeout",
        "4",
        "--periodic-interval",
        "1",
    ])
    .await;
    let node = c
        .create_node(json!({"driver": "fake-hardware", "name": "clean-restart"}))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    c.create_port(&uuid, "52:54:00:fa:17:02").await;
    assert_eq!(c.act(&uuid, json!({"target": "manage"})).await.0, 202);
    c.wait_state(&uuid, "manageable", Duration::from_secs(30))
        .await;
    let _agent = Agent::start(&c.url, &["52:54:00:fa:17:02"], &[]);
    c.wait_agent(&uuid).await;
    // A step that runs long enough (8 s of CPU burn-in) to kill the conductor under it.
    let steps = json!([{"interface": "deploy", "step": "burnin_cpu",
                        "args": {"agent_burnin_cpu_timeout": 8, "agent_burnin_cpu_cpu": 1}}]);
    assert_eq!(
        c.act(&uuid, json!({"target": "clean", "clean_steps": steps}))
            .await
            .0,
        202
    );
    wait_for("the burn-in running", Duration::from_secs(60), || {
        let n = c.node(&uuid);
        async move { (n.await["clean_step"]["step"] == "burnin_cpu").then_some(()) }
    })
    .await;
    c.kill_and_restart().await;
    let done = c
        .wait_state(&uuid, "manageable", Duration::from_secs(120))
        .await;
    assert_eq!(done["last_error"], Value::Null, "{done}");
    assert_eq!(done["clean_step"], json!({}));
}
