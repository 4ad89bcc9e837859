//! Issue 14, the conductor's API: what a caller may read and change (JSON
//! Patch bounds, secret masking, stored records that do not parse), the
//! agent token's life (lookup, heartbeat, wipe), BMC answers kept out of
//! errors, file:// image sources and the data dir's permissions. The real
//! ferrite-conductor on 127.0.0.1; the operator API only through the
//! harness's `Conductor` (which carries credentials), the ramdisk routes
//! with a plain client as a ramdisk would.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use ferrite_tests::{free_port, wait_for, Conductor};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn send(c: &Conductor, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = c.request(method, path);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

async fn patch(c: &Conductor, uuid: &str, ops: Value) -> (u16, Value) {
    send(c, Method::PATCH, &format!("/v1/nodes/{uuid}"), Some(ops)).await
}

/// `{"x": {"x": ... {}}}`, `levels` objects deep.
fn nested(levels: usize) -> Value {
    (0..levels).fold(json!({}), |inner, _| json!({ "x": inner }))
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_can_not_read_secrets_touch_internals_or_build_unreadable_nodes() {
    let c = Conductor::start(&[]).await;
    let node = c
        .create_node(json!({"driver": "fake-hardware", "name": "patchy",
                            "driver_info": {"ipmi_password": "hunter2"}, "extra": {}}))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();

    // `from` follows the path's rules, and no operation reads a secret.
    for ops in [
        json!([{"op": "copy", "from": "/driver_info/ipmi_password", "path": "/extra/leak"}]),
        json!([{"op": "copy", "from": "/driver_info", "path": "/extra/leak"}]),
        json!([{"op": "test", "path": "/driver_info/ipmi_password", "value": "hunter2"}]),
        json!([{"op": "copy", "from": "/driver_internal_info", "path": "/extra/leak"}]),
        json!([{"op": "move", "from": "/provision_state", "path": "/extra/leak"}]),
        json!([{"op": "copy", "from": "/uuid", "path": "/extra/leak"}]),
    ] {
        let (code, body) = patch(&c, &uuid, ops.clone()).await;
        assert_eq!(code, 400, "{ops} answered {body}");
    }
    let shown = c.node(&uuid).await;
    assert_eq!(shown["extra"], json!({}), "{shown}");
    assert_eq!(shown["provision_state"], "enroll");
    assert!(!shown.to_string().contains("hunter2"));

    // Two PATCHes that would nest the node past what can be read back.
    let (first, _) = patch(
        &c,
        &uuid,
        json!([{"op": "add", "path": "/extra/d", "value": nested(120)}]),
    )
    .await;
    let deep_path = format!("/extra/d{}", "/x".repeat(100));
    let (second, _) = patch(
        &c,
        &uuid,
        json!([{"op": "copy", "from": "/extra/d", "path": deep_path}]),
    )
    .await;
    assert!(first == 400 || second == 400, "both PATCHes accepted");
    // Doubling by copy runs into the bound too.
    let mut refused = false;
    for _ in 0..40 {
        let (code, body) = patch(
            &c,
            &uuid,
            json!([{"op": "copy", "from": "/extra", "path": "/extra/again"}]),
        )
        .await;
        if code == 400 {
            assert!(body.to_string().contains("nested deeper"), "{body}");
            refused = true;
            break;
        }
    }
    assert!(refused, "40 nesting copies accepted");
    let (code, list) = send(&c, Method::GET, "/v1/nodes/detail", None).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["nodes"][0]["uuid"], uuid.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_record_is_listed_degraded_and_can_be_deleted() {
    let mut c = Conductor::start(&[]).await;
    let good = c
        .create_node(json!({"driver": "fake-hardware", "name": "good"}))
        .await;
    let bad = c
        .create_node(json!({"driver": "fake-hardware", "name": "bad"}))
        .await;
    let deep = c
        .create_node(json!({"driver": "fake-hardware", "name": "deep"}))
        .await;
    c.db.set_node(
        bad["uuid"].as_str().unwrap(),
        Some("{not json"),
        Some("deploying"),
    );
    let too_deep = format!(
        "{{\"uuid\": \"{}\", \"driver\": \"fake-hardware\", \"extra\": {}}}",
        deep["uuid"].as_str().unwrap(),
        nested(200)
    );
    c.db.set_node(deep["uuid"].as_str().unwrap(), Some(&too_deep), None);
    // Start-up reads every node (interrupted flows): it must survive them.
    c.kill_and_restart().await;
    let (code, list) = send(&c, Method::GET, "/v1/nodes/detail", None).await;
    assert_eq!(code, 200, "{list}");
    let nodes = list["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{list}");
    let shown = |name: &str| {
        nodes
            .iter()
            .find(|n| n["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(shown("good")["maintenance"], false);
    for name in ["bad", "deep"] {
        let n = shown(name);
        assert_eq!(n["maintenance"], true, "{n}");
        assert!(
            n["maintenance_reason"]
                .as_str()
                .unwrap_or_default()
                .contains("corrupt"),
            "{n}"
        );
        let (code, body) = send(
            &c,
            Method::DELETE,
            &format!("/v1/nodes/{}", n["uuid"].as_str().unwrap()),
            None,
        )
        .await;
        assert_eq!(code, 204, "delete {name}: {body}");
    }
    assert_eq!(c.node(good["uuid"].as_str().unwrap()).await["name"], "good");
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_masked_in_every_view() {
    let c = Conductor::start(&["--automated-clean", "false"]).await;
    let node = c
        .create_node(json!({
            "driver": "fake-hardware", "name": "masked",
            "driver_info": {"ipmi_password": "IPMI-SECRET", "redfish_password": "RF-SECRET",
                            "some_private_key": "KEY-SECRET"},
            "instance_info": {"image_source": "http://bob:URL-SECRET@127.0.0.1:1/disk.qcow2",
                              "image_checksum": "abc", "configdrive": "CONFIGDRIVE-SECRET",
                              "luks_passphrase": "PASSPHRASE-SECRET"},
        }))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    assert_eq!(c.act(&uuid, json!({"target": "manage"})).await.0, 202);
    c.wait_state(&uuid, "manageable", Duration::from_secs(30))
        .await;
    // A manual clean keeps its steps, args included, in driver_internal_info.
    let steps = json!([{"interface": "deploy", "step": "erase_devices",
                        "args": {"admin_password": "STEP-SECRET"}}]);
    assert_eq!(
        c.act(&uuid, json!({"target": "clean", "clean_steps": steps}))
            .await
            .0,
        202
    );
    c.wait_state(&uuid, "clean wait", Duration::from_secs(30))
        .await;
    let views = [
        format!("/v1/nodes/{uuid}"),
        "/v1/nodes/detail".to_string(),
        format!("/v1/nodes/{uuid}?fields=driver_info,instance_info,driver_internal_info,clean_step,deploy_step"),
    ];
    for view in views {
        let (code, body) = send(&c, Method::GET, &view, None).await;
        assert_eq!(code, 200);
        let text = body.to_string();
        for secret in [
            "IPMI-SECRET",
            "RF-SECRET",
            "KEY-SECRET",
            "URL-SECRET",
            "bob:",
            "CONFIGDRIVE-SECRET",
            "PASSPHRASE-SECRET",
            "STEP-SECRET",
        ] {
            assert!(!text.contains(secret), "{secret} shown by {view}: {text}");
        }
    }
    let shown = c.node(&uuid).await;
    assert_eq!(
        shown["instance_info"]["image_source"],
        "http://******@127.0.0.1:1/disk.qcow2"
    );
}

/// Lookup as a ramdisk does (no credentials), at the token microversion.
async fn lookup(c: &Conductor, query: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/lookup?{query}", c.url))
        .header("X-OpenStack-Ironic-API-Version", "1.68")
        .send()
        .await
        .expect("lookup");
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

async fn heartbeat(c: &Conductor, uuid: &str, token: &str, callback: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/v1/heartbeat/{uuid}", c.url))
        .header("X-OpenStack-Ironic-API-Version", "1.68")
        .json(&json!({"callback_url": callback, "agent_token": token, "agent_version": "10.0.0"}))
        .send()
        .await
        .expect("heartbeat")
        .status()
        .as_u16()
}

/// A node in `clean wait` (fake power, no agent yet) with one port.
async fn cleaning_node(c: &Conductor, name: &str, mac: &str) -> String {
    let node = c
        .create_node(json!({"driver": "fake-hardware", "name": name}))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    c.create_port(&uuid, mac).await;
    assert_eq!(c.act(&uuid, json!({"target": "manage"})).await.0, 202);
    c.wait_state(&uuid, "manageable", Duration::from_secs(30))
        .await;
    assert_eq!(c.act(&uuid, json!({"target": "provide"})).await.0, 202);
    c.wait_state(&uuid, "clean wait", Duration::from_secs(30))
        .await;
    // The flow shows `clean wait` before it lets go of the node, as Ironic
    // does; a lookup meanwhile is a 409, which is not what these tests ask.
    c.wait_unlocked(&uuid, Duration::from_secs(10)).await;
    uuid
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_go_only_to_the_nodes_ramdisk_and_die_with_the_flow() {
    let c = Conductor::start(&["--require-tls", "false"]).await;
    let mac = "52:54:00:5e:c0:01";
    let uuid = cleaning_node(&c, "tok", mac).await;

    // Knowing the UUID is not enough for a token; a name is not a UUID.
    let (code, body) = lookup(&c, &format!("node_uuid={uuid}")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["config"]["agent_token"], Value::Null, "{body}");
    assert_eq!(c.agent_token(&uuid), None);
    assert_eq!(lookup(&c, "node_uuid=tok").await.0, 400);
    // The node's MAC is.
    let (code, body) = lookup(&c, &format!("addresses={mac}&node_uuid={uuid}")).await;
    assert_eq!(code, 200, "{body}");
    let token = body["config"]["agent_token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 43);

    // Power off ends the ramdisk: its token and URL are gone.
    let (code, _) = send(
        &c,
        Method::PUT,
        &format!("/v1/nodes/{uuid}/states/power"),
        Some(json!({"target": "power off"})),
    )
    .await;
    assert_eq!(code, 202);
    wait_for(
        "the token wiped on power off",
        Duration::from_secs(10),
        || {
            let gone = c.agent_token(&uuid).is_none();
            async move { gone.then_some(()) }
        },
    )
    .await;
    c.wait_unlocked(&uuid, Duration::from_secs(10)).await;
    assert_eq!(
        heartbeat(&c, &uuid, &token, "http://127.0.0.1:9/").await,
        400
    );

    // A new token, then abort: the failed flow wipes it too, and a later
    // beat with it is refused and records nothing.
    let (_, body) = lookup(&c, &format!("addresses={mac}")).await;
    let token = body["config"]["agent_token"].as_str().unwrap().to_string();
    assert_eq!(c.act(&uuid, json!({"target": "abort"})).await.0, 202);
    let node = c
        .wait_state(&uuid, "clean failed", Duration::from_secs(30))
        .await;
    assert_eq!(c.agent_token(&uuid), None, "{node}");
    // The state shows before the failed flow has powered off and let go.
    c.wait_unlocked(&uuid, Duration::from_secs(10)).await;
    assert_eq!(
        heartbeat(&c, &uuid, &token, "http://127.0.0.1:9/").await,
        400
    );
    let dii = &c.node(&uuid).await["driver_internal_info"];
    assert_eq!(dii["agent_url"], Value::Null, "{dii}");
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_in_states_that_expect_none_change_nothing() {
    let c = Conductor::start(&["--require-tls", "false"]).await;
    let node = c
        .create_node(json!({"driver": "fake-hardware", "name": "idle"}))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    // A token left behind (as before the wipe existed), on an enrolled node.
    let data = c.db.node_data(&uuid).unwrap();
    let mut doc: Value = serde_json::from_str(&data).unwrap();
    doc["driver_internal_info"]["agent_secret_token"] = json!("stale-token");
    assert_eq!(c.db.set_node(&uuid, Some(&doc.to_string()), None), 1);
    assert_eq!(
        heartbeat(&c, &uuid, "stale-token", "http://127.0.0.1:9/").await,
        202
    );
    let dii = &c.node(&uuid).await["driver_internal_info"];
    assert_eq!(dii["agent_url"], Value::Null, "{dii}");
    assert_eq!(dii["agent_last_heartbeat"], Value::Null, "{dii}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_token_never_reaches_the_log_or_the_node() {
    let c = Conductor::start(&[
        "--require-tls",
        "false",
        "--agent-max-command-attempts",
        "2",
    ])
    .await;
    let mac = "52:54:00:5e:c0:02";
    let uuid = cleaning_node(&c, "logs", mac).await;
    let (_, body) = lookup(&c, &format!("addresses={mac}")).await;
    let token = body["config"]["agent_token"].as_str().unwrap().to_string();
    // An agent URL where nothing listens: every command to it fails.
    let dead = format!("http://127.0.0.1:{}/", free_port());
    assert_eq!(heartbeat(&c, &uuid, &token, &dead).await, 202);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(heartbeat(&c, &uuid, &token, &dead).await, 202);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = c.proc.log_text();
    assert!(log.contains("127.0.0.1"), "the failures are logged: {log}");
    assert!(!log.contains(&token), "token in the conductor log");
    let node = c.node(&uuid).await;
    let (_, history) = send(&c, Method::GET, &format!("/v1/nodes/{uuid}/history"), None).await;
    assert!(!node.to_string().contains(&token));
    assert!(!history.to_string().contains(&token));
}

/// A BMC on 127.0.0.1 answering every request with `head` and then `body`
/// bytes of `fill` (`None`: a body that never ends).
async fn fake_bmc(head: &'static str, body: Option<usize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let chunk = "SECRET-BMC-BODY root:x:0:0 ".repeat(512);
                let header = match body {
                    Some(n) => format!("{head}\r\nContent-Length: {n}\r\n\r\n"),
                    None => format!("{head}\r\n\r\n"),
                };
                if sock.write_all(header.as_bytes()).await.is_err() {
                    return;
                }
                let mut left = body.unwrap_or(usize::MAX);
                while left > 0 {
                    let n = left.min(chunk.len());
                    if sock.write_all(&chunk.as_bytes()[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
    url
}

async fn redfish_verify_error(c: &Conductor, name: &str, bmc: &str) -> String {
    let node = c
        .create_node(json!({"driver": "redfish", "name": name, "driver_info": {
            "redfish_address": bmc, "redfish_system_id": "/redfish/v1/Systems/1",
            "redfish_username": "u", "redfish_password": "p"}}))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    assert_eq!(c.act(&uuid, json!({"target": "manage"})).await.0, 202);
    wait_for("verify to fail", Duration::from_secs(90), || {
        let n = c.node(&uuid);
        async move {
            let n = n.await;
            n["last_error"].as_str().map(str::to_string)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn bmc_answers_stay_out_of_errors_and_are_bounded() {
    let c = Conductor::start(&[]).await;
    let err_bmc = fake_bmc("HTTP/1.1 500 Internal Server Error", Some(64 << 10)).await;
    let error = redfish_verify_error(&c, "bmc-500", &err_bmc).await;
    assert!(error.contains("500"), "{error}");
    assert!(!error.contains("SECRET-BMC-BODY"), "{error}");
    assert!(error.len() < 1000, "{error}");

    let started = Instant::now();
    let endless = fake_bmc("HTTP/1.1 200 OK\r\nContent-Type: application/json", None).await;
    let error = redfish_verify_error(&c, "bmc-endless", &endless).await;
    assert!(error.contains("larger than"), "{error}");
    assert!(!error.contains("SECRET-BMC-BODY"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

async fn deploy_validation(c: &Conductor, uuid: &str) -> Value {
    let (code, body) = send(c, Method::GET, &format!("/v1/nodes/{uuid}/validate"), None).await;
    assert_eq!(code, 200, "{body}");
    body["deploy"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn file_image_sources_need_the_allow_list() {
    let allowed = tempfile::tempdir().unwrap();
    let allowed_dir = allowed.path().display().to_string();
    let c = Conductor::start(&["--file-url-allowed-paths", &allowed_dir]).await;
    let make = |name: &'static str, source: String| {
        let c = &c;
        async move {
            let node = c
                .create_node(json!({"driver": "fake-hardware", "name": name,
                                    "instance_info": {"image_source": source, "image_checksum": "abc"}}))
                .await;
            node["uuid"].as_str().unwrap().to_string()
        }
    };
    let etc = make("etc", "file:///etc/shadow".into()).await;
    let outside = make("outside", "file:///var/tmp/disk.img".into()).await;
    let inside = make("inside", format!("file://{allowed_dir}/disk.img")).await;
    for uuid in [&etc, &outside] {
        let v = deploy_validation(&c, uuid).await;
        assert_eq!(v["result"], false, "{v}");
        assert!(
            v["reason"].as_str().unwrap_or_default().contains("refused"),
            "{v}"
        );
    }
    assert_eq!(deploy_validation(&c, &inside).await["result"], true);

    // Without the flag, no file:// source at all.
    let c = Conductor::start(&[]).await;
    let node = c
        .create_node(json!({"driver": "fake-hardware", "name": "nofile",
                            "instance_info": {"image_source": format!("file://{allowed_dir}/disk.img"),
                                              "image_checksum": "abc"}}))
        .await;
    let v = deploy_validation(&c, node["uuid"].as_str().unwrap()).await;
    assert_eq!(v["result"], false, "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("disabled"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_data_dir_and_database_are_private() {
    if ferrite_tests::TestDb::postgres_selected() {
        eprintln!(
            "skipped on PostgreSQL: the database files are the server's, not in the data dir"
        );
        return;
    }
    let mut c = Conductor::start(&[]).await;
    c.create_node(json!({"driver": "fake-hardware", "name": "perm"}))
        .await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = c.data_dir().to_path_buf();
    let db = dir.join("ferrite.sqlite");
    // As an operator's permissive umask or an older version left them.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    c.kill_and_restart().await;
    c.create_node(json!({"driver": "fake-hardware", "name": "perm2"}))
        .await;
    assert_eq!(mode(&dir), 0o700);
    for name in ["ferrite.sqlite", "ferrite.sqlite-wal", "ferrite.sqlite-shm"] {
        let path = dir.join(name);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{name}");
        }
    }
    assert_eq!(mode(&db), 0o600);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_deploy_step_shows_no_image_credentials_or_config_drive() {
    use ferrite_tests::image_server::ImageServer;
    use ferrite_tests::images::{make_raw, sha256_file, LoopDevice};
    use ferrite_tests::Agent;

    let dir = tempfile::tempdir().unwrap();
    let raw = make_raw(&dir.path().join("disk.raw"), 16 << 20);
    let sum = sha256_file(&raw);
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    server.faults().rate = 1 << 20; // a write that runs long enough to look at
    let disk = LoopDevice::new(dir.path(), "target.loop", 1 << 30, true);
    let c = Conductor::start(&["--fast-track", "true"]).await;
    let node = c
        .create_node(
            json!({"driver": "fake-hardware", "name": "step-args", "automated_clean": false}),
        )
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    assert_eq!(c.act(&uuid, json!({"target": "manage"})).await.0, 202);
    c.wait_state(&uuid, "manageable", Duration::from_secs(30))
        .await;
    assert_eq!(c.act(&uuid, json!({"target": "provide"})).await.0, 202);
    c.wait_state(&uuid, "available", Duration::from_secs(30))
        .await;
    let mac = "52:54:00:5e:c0:03";
    c.create_port(&uuid, mac).await;
    let disks = format!("ferrite-disks={}", disk.path.display());
    let _agent = Agent::start(&c.url, &[mac], &[&disks]);
    c.wait_agent(&uuid).await;
    let source = server
        .url_of("disk.raw")
        .replacen("http://", "http://bob:URL-SECRET@", 1);
    c.patch_node(
        &uuid,
        json!([{"op": "add", "path": "/instance_info", "value": {
            "image_source": source, "image_checksum": sum, "image_disk_format": "raw"}}]),
    )
    .await;
    let deploy = json!({"target": "active",
                        "configdrive": {"meta_data": {"hostname": "CD-HOSTNAME"}}});
    assert_eq!(c.act(&uuid, deploy).await.0, 202);
    let running = wait_for("write_image running", Duration::from_secs(60), || {
        let n = c.node(&uuid);
        async move {
            let n = n.await;
            (n["deploy_step"]["step"] == "write_image").then_some(n)
        }
    })
    .await;
    let text = running.to_string();
    assert!(!text.contains("URL-SECRET"), "{}", running["deploy_step"]);
    assert!(!text.contains("bob:"), "{}", running["deploy_step"]);
    assert!(!text.contains("CD-HOSTNAME"), "{}", running["deploy_step"]);
    let args = &running["deploy_step"]["args"];
    assert!(args.is_object(), "{running}");
    if !args["configdrive"].is_null() {
        assert_eq!(args["configdrive"], "******", "{args}");
    }
}

async fn continue_inspection(c: &Conductor, query: &str, body: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/continue_inspection{query}", c.url))
        .header("X-OpenStack-Ironic-API-Version", "1.84")
        .json(body)
        .send()
        .await
        .expect("continue_inspection");
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn continue_inspection_hands_out_no_token_for_a_uuid_and_changes_nothing_outside_inspection()
{
    let c = Conductor::start(&[]).await;
    let inventory = |mac: &str| {
        json!({"inventory": {"interfaces": [{"name": "eth0", "mac_address": mac,
                                             "ipv4_address": "192.0.2.10"}],
                             "cpu": {"count": 8, "architecture": "x86_64"},
                             "memory": {"physical_mb": 4096}}})
    };

    // Waiting for inspection, but the caller only names the UUID.
    let waiting = c
        .create_node(json!({"driver": "fake-hardware", "name": "insp-wait"}))
        .await;
    let waiting = waiting["uuid"].as_str().unwrap().to_string();
    c.force_state(&waiting, "inspect wait");
    let (code, body) = continue_inspection(
        &c,
        &format!("?node_uuid={waiting}"),
        &inventory("52:54:00:5e:c0:10"),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["config"]["agent_token"], Value::Null, "{body}");
    assert_eq!(c.agent_token(&waiting), None);

    // Not inspecting: refused, no token, no port, no property.
    let idle = c
        .create_node(json!({"driver": "fake-hardware", "name": "insp-idle"}))
        .await;
    let idle = idle["uuid"].as_str().unwrap().to_string();
    c.create_port(&idle, "52:54:00:5e:c0:11").await;
    let (code, body) = continue_inspection(&c, "", &inventory("52:54:00:5e:c0:11")).await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(c.agent_token(&idle), None);
    let node = c.node(&idle).await;
    assert_eq!(node["properties"], json!({}), "{node}");
    let (_, ports) = send(&c, Method::GET, &format!("/v1/nodes/{idle}/ports"), None).await;
    assert_eq!(ports["ports"].as_array().map(Vec::len), Some(1), "{ports}");
}
