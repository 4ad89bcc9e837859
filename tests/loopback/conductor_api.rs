//! The conductor's Ironic API under bad input: clear errors in Ironic's
//! shape, and nothing in the store changes.

use ferrite_protocol::IronicErrorBody;
use ferrite_tests::Conductor;
use reqwest::Method;
use serde_json::{json, Value};

async fn send(c: &Conductor, method: Method, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut req = c
        .request(method, path)
        .header("Content-Type", "application/json");
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

fn fault(body: &Value) -> String {
    serde_json::from_value::<IronicErrorBody>(body.clone())
        .map(|b| b.faultstring())
        .unwrap_or_else(|_| panic!("not an Ironic error body: {body}"))
}

async fn snapshot(c: &Conductor) -> (Value, Value) {
    let nodes = send(c, Method::GET, "/v1/nodes/detail", None).await.1;
    let ports = send(c, Method::GET, "/v1/ports/detail", None).await.1;
    (nodes, ports)
}

#[tokio::test]
async fn bad_node_and_port_requests_fail_clearly_and_change_nothing() {
    let c = Conductor::start(&[]).await;
    let node = c
        .create_node(json!({"driver": "fake-hardware", "name": "good"}))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    assert_eq!(node["provision_state"], "enroll");
    c.create_port(&uuid, "52:54:00:cc:00:01").await;
    let before = snapshot(&c).await;
    let bad_mac = format!(r#"{{"node_uuid": "{uuid}", "address": "zz:zz"}}"#);
    let dup_mac = format!(r#"{{"node_uuid": "{uuid}", "address": "52-54-00-CC-00-01"}}"#);

    let cases: Vec<(Method, String, &str, u16, &str)> = vec![
        (
            Method::POST,
            "/v1/nodes".into(),
            "{oops",
            400,
            "Invalid JSON body",
        ),
        (
            Method::POST,
            "/v1/nodes".into(),
            r#"{"name": "x"}"#,
            400,
            "Mandatory field missing: driver",
        ),
        (
            Method::POST,
            "/v1/nodes".into(),
            r#"{"driver": "nonsense"}"#,
            400,
            "supports driver nonsense",
        ),
        (
            Method::POST,
            "/v1/nodes".into(),
            r#"{"driver": "ipmi", "colour": "red"}"#,
            400,
            "Unknown attribute for argument node: colour",
        ),
        (
            Method::POST,
            "/v1/nodes".into(),
            r#"{"driver": "ipmi", "name": "bad name"}"#,
            400,
            "invalid name",
        ),
        (
            Method::POST,
            "/v1/nodes".into(),
            r#"{"driver": "ipmi", "name": "good"}"#,
            409,
            "already exists",
        ),
        (
            Method::POST,
            "/v1/nodes".into(),
            r#"{"driver": "ipmi", "uuid": "not-a-uuid"}"#,
            400,
            "Expected a UUID",
        ),
        (
            Method::GET,
            "/v1/nodes/missing".into(),
            "",
            404,
            "Node missing could not be found.",
        ),
        (
            Method::PATCH,
            format!("/v1/nodes/{uuid}"),
            r#"[{"op": "replace", "path": "/provision_state", "value": "active"}]"#,
            400,
            "internal attribute",
        ),
        (
            Method::PATCH,
            format!("/v1/nodes/{uuid}"),
            r#"[{"op": "add", "path": "/colour", "value": "red"}]"#,
            400,
            "not allowed",
        ),
        (
            Method::PATCH,
            format!("/v1/nodes/{uuid}"),
            r#"[{"op": "replace", "path": "/driver", "value": "nonsense"}]"#,
            400,
            "supports driver nonsense",
        ),
        (
            Method::PATCH,
            format!("/v1/nodes/{uuid}"),
            r#"[{"op": "remove", "path": "/properties/absent"}]"#,
            400,
            "Invalid patch",
        ),
        (
            Method::PATCH,
            format!("/v1/nodes/{uuid}"),
            r#"{"op": "add"}"#,
            400,
            "Invalid JSON body",
        ),
        (
            Method::GET,
            "/v1/nodes?fields=uuid,colour".into(),
            "",
            400,
            "colour",
        ),
        (Method::GET, "/v1/nodes?limit=0".into(), "", 400, "Limit"),
        (
            Method::POST,
            "/v1/ports".into(),
            &bad_mac,
            400,
            "Expected a MAC address",
        ),
        (
            Method::POST,
            "/v1/ports".into(),
            r#"{"node_uuid": "missing", "address": "52:54:00:cc:00:02"}"#,
            400,
            "Node missing could not be found.",
        ),
        (
            Method::POST,
            "/v1/ports".into(),
            &dup_mac,
            409,
            "already exists",
        ),
        (
            Method::GET,
            "/v1/lookup".into(),
            "",
            400,
            "Incomplete lookup request",
        ),
        (
            Method::GET,
            "/v1/nowhere".into(),
            "",
            404,
            "could not be found",
        ),
    ];
    for (method, path, body, status, text) in cases {
        let (code, resp) = send(
            &c,
            method.clone(),
            &path,
            (!body.is_empty()).then_some(body),
        )
        .await;
        assert_eq!(code, status, "{method} {path} {body}: {resp}");
        let message = fault(&resp);
        assert!(
            message.contains(text),
            "{method} {path}: {message:?} lacks {text:?}"
        );
    }
    assert_eq!(
        snapshot(&c).await,
        before,
        "failed requests changed the store"
    );
}

#[tokio::test]
async fn node_lifecycle_and_microversions() {
    let c = Conductor::start(&[]).await;
    let resp = c
        .http
        .get(format!("{}/v1/nodes", c.url))
        .header("X-OpenStack-Ironic-API-Version", "1.999")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 406);
    assert_eq!(
        resp.headers()["X-OpenStack-Ironic-API-Maximum-Version"],
        "1.115"
    );
    assert!(fault(&resp.json().await.unwrap()).contains("supported version range is: [1.1, 1.115]"));
    let resp = c
        .http
        .get(format!("{}/v1/nodes", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["X-OpenStack-Ironic-API-Version"],
        "1.1",
        "no header means the minimum"
    );
    // Before 1.11 new nodes start available, as in Ironic.
    let old: Value = c
        .http
        .post(format!("{}/v1/nodes", c.url))
        .header("X-OpenStack-Ironic-API-Version", "1.10")
        .json(&json!({"driver": "ipmi"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(old["provision_state"], "available");

    let node = c.create_node(json!({"driver": "ipmi", "name": "n1", "driver_info": {"ipmi_address": "192.0.2.1", "ipmi_password": "secret"}})).await;
    assert_eq!(
        node["driver_info"]["ipmi_password"], "******",
        "secrets are masked"
    );
    assert_eq!(node["power_interface"], "ipmitool");
    let uuid = node["uuid"].as_str().unwrap();
    let (code, patched) = send(&c, Method::PATCH, "/v1/nodes/n1", Some(r#"[{"op": "add", "path": "/properties/cpus", "value": "4"}, {"op": "replace", "path": "/name", "value": "n2"}]"#)).await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["properties"]["cpus"], "4");
    assert_eq!(c.node("n2").await["uuid"], uuid);
    let (_, list) = send(&c, Method::GET, "/v1/nodes?limit=1", None).await;
    assert_eq!(list["nodes"].as_array().unwrap().len(), 1);
    assert!(list["next"].as_str().unwrap().contains("marker="));
    assert_eq!(
        list["nodes"][0].as_object().unwrap().len(),
        7,
        "default list fields + links"
    );
    let (code, _) = send(&c, Method::DELETE, &format!("/v1/nodes/{uuid}"), None).await;
    assert_eq!(code, 204);
    let (code, _) = send(&c, Method::GET, &format!("/v1/nodes/{uuid}"), None).await;
    assert_eq!(code, 404);
}

/// Ironic's paging: `[api]max_limit` caps and defaults the page, a full
/// page links to the next with the same filters and order, the pages join
/// up to the whole sorted list, an unknown marker is a 404, and a JSON
/// field cannot be a sort key. Sorting by a field without a column works
/// too (in memory).
#[tokio::test]
async fn node_lists_page_as_ironic_does() {
    let c = Conductor::start(&["--api-max-limit", "4"]).await;
    let mut names = Vec::new();
    for i in 0..10 {
        let name = format!("n-{}", (i * 3) % 10);
        let driver = if i % 2 == 0 { "ipmi" } else { "fake-hardware" };
        c.create_node(
            json!({"driver": driver, "name": name, "driver_info": {"ipmi_address": "192.0.2.1"}}),
        )
        .await;
        names.push((name, driver));
    }
    // No limit: max_limit items and a next link; more than max_limit is capped.
    for path in ["/v1/nodes", "/v1/nodes?limit=50"] {
        let (code, page) = send(&c, Method::GET, path, None).await;
        assert_eq!(code, 200, "{page}");
        assert_eq!(page["nodes"].as_array().unwrap().len(), 4, "{path}");
        assert!(page["next"].as_str().unwrap().contains("limit=4"), "{page}");
    }
    // Descending by name among ipmi nodes, 2 at a time, following `next`.
    let mut want: Vec<String> = names
        .iter()
        .filter(|(_, d)| *d == "ipmi")
        .map(|(n, _)| n.clone())
        .collect();
    want.sort();
    want.reverse();
    let mut seen = Vec::new();
    let mut path = "/v1/nodes?driver=ipmi&sort_key=name&sort_dir=desc&limit=2".to_string();
    loop {
        let (code, page) = send(&c, Method::GET, &path, None).await;
        assert_eq!(code, 200, "{page}");
        for n in page["nodes"].as_array().unwrap() {
            seen.push(n["name"].as_str().unwrap().to_string());
        }
        let Some(next) = page["next"].as_str() else {
            break;
        };
        for carried in ["driver=ipmi", "sort_key=name", "sort_dir=desc", "limit=2"] {
            assert!(next.contains(carried), "{next}");
        }
        path = next.strip_prefix(&c.url).unwrap().to_string();
    }
    assert_eq!(seen, want);

    let (code, body) = send(
        &c,
        Method::GET,
        "/v1/nodes?marker=1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
        None,
    )
    .await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(
        fault(&body),
        "Node 1be26c0b-03f2-4d2e-ae87-c02d7f33c123 could not be found."
    );
    let (code, body) = send(&c, Method::GET, "/v1/nodes?sort_key=driver_info", None).await;
    assert_eq!(code, 400, "{body}");
    assert!(fault(&body).contains("invalid field for sorting"), "{body}");
    let (code, body) = send(&c, Method::GET, "/v1/nodes?limit=0", None).await;
    assert_eq!(code, 400, "{body}");
    // No column for power_interface: sorted in memory, still paged.
    let (code, page) = send(
        &c,
        Method::GET,
        "/v1/nodes?sort_key=power_interface&fields=uuid,power_interface&limit=3",
        None,
    )
    .await;
    assert_eq!(code, 200, "{page}");
    let ifaces: Vec<&str> = page["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["power_interface"].as_str().unwrap())
        .collect();
    assert_eq!(ifaces, ["fake", "fake", "fake"], "{page}");
    assert!(page["next"].is_string());
}

#[tokio::test]
async fn heartbeat_validation_follows_ironic() {
    let c = Conductor::start(&["--fast-track", "true"]).await;
    let node = c.create_node(json!({"driver": "fake-hardware"})).await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    c.create_port(&uuid, "52:54:00:cc:00:09").await;

    // Acting as a ramdisk: lookup at 1.62 gives the token once.
    let lookup = |c: &Conductor| {
        c.http
            .get(format!("{}/v1/lookup?addresses=52:54:00:cc:00:09", c.url))
            .header("X-OpenStack-Ironic-API-Version", "1.62")
            .send()
    };
    let first: Value = lookup(&c).await.unwrap().json().await.unwrap();
    let token = first["config"]["agent_token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 43);
    assert_eq!(first["node"]["uuid"], uuid);
    assert_eq!(first["config"]["heartbeat_timeout"], 300.0);
    let again: Value = lookup(&c).await.unwrap().json().await.unwrap();
    assert_eq!(again["config"]["agent_token"], "******");
    let old = c
        .http
        .get(format!("{}/v1/lookup?addresses=52:54:00:cc:00:09", c.url))
        .header("X-OpenStack-Ironic-API-Version", "1.21")
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 404, "ramdisk endpoints need 1.22");

    let beat = |body: Value| {
        c.http
            .post(format!("{}/v1/heartbeat/{uuid}", c.url))
            .header("X-OpenStack-Ironic-API-Version", "1.68")
            .json(&body)
            .send()
    };
    let before = c.node(&uuid).await;
    for (body, text) in [
        (
            json!({"callback_url": "https://127.0.0.1:9999", "agent_version": "1", "agent_token": "wrong"}),
            "Invalid or missing agent token",
        ),
        (
            json!({"callback_url": "https://127.0.0.1:9999", "agent_version": "1"}),
            "Invalid or missing agent token",
        ),
        (
            json!({"callback_url": "http://127.0.0.1:9999", "agent_version": "1", "agent_token": token}),
            "TLS is required by configuration",
        ),
        (
            json!({"callback_url": "https://127.0.0.1:9999", "agent_token": token}),
            "did not transmit a version",
        ),
        (
            json!({"callback_url": "ftp://127.0.0.1:9999", "agent_version": "1", "agent_token": token}),
            "callback_url",
        ),
        (
            json!({"agent_version": "1", "agent_token": token}),
            "Invalid JSON body",
        ),
    ] {
        let resp = beat(body.clone()).await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let message = fault(&resp.json().await.unwrap());
        assert!(message.contains(text), "{message:?} lacks {text:?}");
    }
    assert_eq!(
        c.node(&uuid).await["driver_internal_info"],
        before["driver_internal_info"],
        "rejected heartbeats record nothing"
    );

    let ok = beat(json!({"callback_url": "https://127.0.0.1:9999", "agent_version": "1", "agent_token": token, "agent_verify_ca": "PEM-1"})).await.unwrap();
    assert_eq!(ok.status(), 202);
    let moved = beat(json!({"callback_url": "https://127.0.0.1:9998", "agent_version": "1", "agent_token": token})).await.unwrap();
    assert_eq!(moved.status(), 400);
    assert!(fault(&moved.json().await.unwrap()).contains("change in ramdisk provided callback_url"));
    let new_ca = beat(json!({"callback_url": "https://127.0.0.1:9999", "agent_version": "1", "agent_token": token, "agent_verify_ca": "PEM-2"})).await.unwrap();
    assert_eq!(new_ca.status(), 400);
    assert!(fault(&new_ca.json().await.unwrap()).contains("agent_verify_ca"));
    assert_eq!(c.agent_certificate(&uuid).as_deref(), Some("PEM-1"));
}

/// Operator power and boot-device changes take the node's lock, as
/// Ironic's conductor does: against a node another conductor (or a flow)
/// holds they are NodeLocked and change nothing; once it is free they run,
/// and the lock is given back when the action is done.
#[tokio::test]
async fn power_and_boot_device_changes_take_the_nodes_lock() {
    let c = Conductor::start(&[]).await;
    let node = c
        .create_node(json!({"driver": "fake-hardware", "name": "locked-power"}))
        .await;
    let uuid = node["uuid"].as_str().expect("uuid").to_string();
    assert_eq!(c.db.set_reservation(&uuid, Some("other-conductor")), 1);
    let before = c.node(&uuid).await;
    for (path, body) in [
        ("states/power", r#"{"target": "power on"}"#),
        ("management/boot_device", r#"{"boot_device": "pxe"}"#),
    ] {
        let (code, err) = send(
            &c,
            Method::PUT,
            &format!("/v1/nodes/{uuid}/{path}"),
            Some(body),
        )
        .await;
        assert_eq!(code, 409, "{path}: {err}");
        let err: IronicErrorBody = serde_json::from_value(err).expect("Ironic's error body");
        assert!(
            err.faultstring()
                .contains("is locked by host other-conductor"),
            "{path}: {}",
            err.faultstring()
        );
    }
    let after = c.node(&uuid).await;
    for field in ["power_state", "target_power_state", "driver_internal_info"] {
        assert_eq!(before[field], after[field], "{field} changed");
    }

    assert_eq!(c.db.set_reservation(&uuid, None), 1);
    assert_eq!(c.set_power(&uuid, "power on").await, 202);
    ferrite_tests::wait_for("power on", std::time::Duration::from_secs(30), || {
        let n = c.node(&uuid);
        async move {
            let n = n.await;
            (n["power_state"] == "power on" && n["target_power_state"].is_null()).then_some(())
        }
    })
    .await;
    c.wait_unlocked(&uuid, std::time::Duration::from_secs(10))
        .await;
    assert_eq!(c.set_boot_device(&uuid, "pxe", false).await, 204);
    let shown = c.node(&uuid).await;
    assert_eq!(
        shown["driver_internal_info"]["boot_device"]["boot_device"],
        "pxe"
    );
    assert!(shown["reservation"].is_null(), "the lock is given back");
}
