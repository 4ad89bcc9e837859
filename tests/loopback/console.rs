//! The web console at `/console/`: behind the API's http_basic (a browser
//! is prompted by `WWW-Authenticate`), node data rendered as escaped text,
//! secrets masked as the REST API masks them, and the live SSE stream
//! that follows a change without a reload.

use std::time::Duration;

use ferrite_tests::{Conductor, API_USER};
use serde_json::{json, Value};

const PROBE: &str = "<script>alert(1)</script>";
const PROBE_ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";

/// Reads server-sent events from a streaming response.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    /// The next `(event, data)`, or `None` when the stream ends.
    async fn next(&mut self, within: Duration) -> Option<(String, String)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                // Keep-alive comments have neither.
                if !event.is_empty() || !data.is_empty() {
                    return Some((event, data));
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .expect("an event in time")
                .expect("reading the stream")?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

async fn get(c: &Conductor, path: &str) -> (u16, String) {
    let r = c
        .http
        .get(format!("{}{path}", c.url))
        .send()
        .await
        .expect("GET");
    (r.status().as_u16(), r.text().await.expect("body"))
}

async fn stream(c: &Conductor, path: &str) -> Events {
    let resp = c
        .http
        .get(format!("{}{path}", c.url))
        .send()
        .await
        .expect("GET events");
    assert_eq!(resp.status(), 200, "{path}");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    Events {
        resp,
        buf: String::new(),
    }
}

fn row<'a>(rows: &'a Value, uuid: &str) -> Option<&'a Value> {
    rows.as_array()?.iter().find(|r| r["uuid"] == uuid)
}

#[tokio::test]
async fn console_is_authenticated_escaped_masked_and_live() {
    let c = Conductor::start(&[]).await;
    let node = c
        .create_node(json!({
            "driver": "fake-hardware",
            "name": "console-node-1",
            "driver_info": {"ipmi_password": "s3cret-pw", "ipmi_address": "10.0.0.9"},
            "properties": {"probe": PROBE},
        }))
        .await;
    let uuid = node["uuid"].as_str().expect("uuid").to_string();
    c.create_port(&uuid, "52:54:00:c0:01:01").await;
    // A name and an error no API call would accept, written behind the
    // conductor's back: the console must show them as text.
    let mut doc: Value =
        serde_json::from_str(&c.db.node_data(&uuid).expect("stored node")).expect("json");
    doc["name"] = json!(PROBE);
    doc["last_error"] = json!("deploy failed: <img src=x onerror=alert(2)>");
    assert_eq!(c.db.set_node(&uuid, Some(&doc.to_string()), None), 1);

    // Without credentials: a browser's page request goes to the login
    // form; the script's requests get a bare 401 (a challenge there would
    // pop the browser's own dialog). Basic credentials: a wrong password
    // is a 401 with Ironic's challenge, as on the API.
    let anon = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/console/", &format!("/console/nodes/{uuid}")] {
        let r = anon
            .get(format!("{}{path}", c.url))
            .header("Accept", "text/html,*/*")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{path} without credentials");
        assert_eq!(r.headers()["location"], "/console/login");
    }
    for path in ["/console/events", "/console/static/console.js"] {
        let r = anon.get(format!("{}{path}", c.url)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without credentials");
        assert!(r.headers().get("www-authenticate").is_none(), "{path}");
    }
    let r = anon
        .post(format!("{}/console/nodes/{uuid}/actions", c.url))
        .form(&[("action", "maintenance-on")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "an action without credentials");
    let r = anon
        .get(format!("{}/console/", c.url))
        .basic_auth(API_USER, Some("wrong-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a wrong password is refused");
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"Baremetal API\""
    );

    // The login form: a wrong password gets the form again and no
    // cookie; the right one a session cookie that opens the console
    // alone, until logout.
    let login = |password: &'static str| {
        anon.post(format!("{}/console/login", c.url))
            .form(&[("username", API_USER), ("password", password)])
            .send()
    };
    let r = login("wrong-password").await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("Incorrect username or password."));
    let r = login(ferrite_tests::API_PASSWORD).await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let with_session = |path: String| {
        anon.get(format!("{}{path}", c.url))
            .header("Accept", "text/html")
            .header("Cookie", session.clone())
            .send()
    };
    let r = with_session("/console/".into()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains(&uuid));
    let r = with_session("/v1/nodes".into()).await.unwrap();
    assert_eq!(
        r.status(),
        401,
        "the session is the console's, not the API's"
    );
    let r = anon
        .post(format!("{}/console/logout", c.url))
        .header("Cookie", session.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let r = with_session("/console/".into()).await.unwrap();
    assert_eq!(r.status(), 303, "the session ended at logout");

    // The fleet: the node listed, its name escaped.
    let r = c
        .http
        .get(format!("{}/console/", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let fleet = r.text().await.unwrap();
    assert!(fleet.contains(&uuid), "{fleet}");
    assert!(fleet.contains(PROBE_ESCAPED), "{fleet}");
    assert!(!fleet.contains(PROBE), "the raw name reached the page");
    // Filters: by state in SQL, by search on name or UUID.
    assert!(get(&c, "/console/?state=enroll").await.1.contains(&uuid));
    assert!(!get(&c, "/console/?state=available").await.1.contains(&uuid));
    assert!(
        get(&c, &format!("/console/?q={}", &uuid[..8].to_uppercase()))
            .await
            .1
            .contains(&uuid)
    );
    assert!(!get(&c, "/console/?q=no-such-node").await.1.contains(&uuid));

    // The node page: masked secrets, escaped data, the port, last_error.
    let (status, page) = get(&c, &format!("/console/nodes/{uuid}")).await;
    assert_eq!(status, 200);
    assert!(!page.contains("s3cret-pw"), "driver_info secret shown");
    assert!(page.contains("******"));
    assert!(page.contains("10.0.0.9"));
    assert!(page.contains("52:54:00:c0:01:01"));
    assert!(
        page.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{page}"
    );
    assert!(!page.contains("<img src=x"));
    assert!(!page.contains(PROBE));
    assert!(page.contains("Last error"));
    let (status, _) = get(&c, "/console/nodes/no-such-node").await;
    assert_eq!(status, 404);

    // Ramdisk logs: listed and downloaded; only the node's own archives.
    let logs = c.data_dir().join("ramdisk-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let archive = format!("{uuid}_console-node-1_2026-01-02-03-04-05.tar.gz");
    std::fs::write(logs.join(&archive), b"\x1f\x8b archive bytes").unwrap();
    std::fs::write(logs.join("secret.tar.gz"), b"not this").unwrap();
    let (_, page) = get(&c, &format!("/console/nodes/{uuid}")).await;
    assert!(page.contains(&archive), "{page}");
    let r = c
        .http
        .get(format!("{}/console/nodes/{uuid}/logs/{archive}", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    assert_eq!(&r.bytes().await.unwrap()[..], b"\x1f\x8b archive bytes");
    for other in ["secret.tar.gz", "..%2Fhtpasswd", "..%2F..%2Fetc%2Fpasswd"] {
        let (status, _) = get(&c, &format!("/console/nodes/{uuid}/logs/{other}")).await;
        assert_eq!(status, 404, "{other}");
    }

    // The embedded assets.
    let r = c
        .http
        .get(format!("{}/console/static/console.js", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("EventSource"));

    // Live: the first event is the fleet now; a change made through the
    // REST API arrives as the next one, without a new request.
    let mut events = stream(&c, "/console/events").await;
    let (event, data) = events.next(Duration::from_secs(10)).await.expect("event");
    assert_eq!(event, "fleet");
    let rows: Value = serde_json::from_str(&data).expect("rows are JSON");
    let first = row(&rows, &uuid).expect("the node in the stream");
    assert_eq!(first["name"], PROBE, "JSON carries the name as data");
    assert_eq!(first["maintenance"], false);
    assert_eq!(first["provision_state"], "enroll");
    let r = c
        .request(
            reqwest::Method::PUT,
            &format!("/v1/nodes/{uuid}/maintenance"),
        )
        .json(&json!({"reason": "console test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let (event, data) = events.next(Duration::from_secs(10)).await.expect("event");
    assert_eq!(event, "fleet");
    let rows: Value = serde_json::from_str(&data).expect("rows are JSON");
    assert_eq!(row(&rows, &uuid).expect("the node")["maintenance"], true);

    // One node's stream ends when the node is gone.
    let mut one = stream(&c, "/console/events?uuid=no-such-node").await;
    let (event, _) = one.next(Duration::from_secs(10)).await.expect("event");
    assert_eq!(event, "gone");
    assert!(one.next(Duration::from_secs(10)).await.is_none());
}

/// A real agent writes a qcow2 image to a loop device; the console's
/// stream shows the bar move (received bytes rising, with a rate and a
/// size) and the node reach `active`, and the node page then has the
/// deploy in its timeline.
#[tokio::test(flavor = "multi_thread")]
async fn console_stream_follows_a_loopback_deploy() {
    use ferrite_tests::deploy_fixture::DeployFixture;

    // ~6 MiB at 512 KiB/s: ~12 s of writing, several heartbeats see it.
    let f = DeployFixture::new(24 << 20, 512 << 10, false).await;
    let c = Conductor::start(&["--fast-track", "true", "--heartbeat-timeout", "4"]).await;
    let uuid = c.available_node(json!({"name": "console-deploy"})).await;
    let _agent = c
        .start_agent_for(&uuid, "52:54:00:c0:02:01", &[&f.disks_param()])
        .await;
    c.set_instance_info(&uuid, f.instance_info()).await;

    let mut events = stream(&c, &format!("/console/events?uuid={uuid}")).await;
    assert_eq!(c.act(&uuid, json!({"target": "active"})).await.0, 202);
    let mut received: Vec<u64> = Vec::new();
    let mut states: Vec<String> = Vec::new();
    let mut steps: Vec<String> = Vec::new();
    let mut rates: Vec<u64> = Vec::new();
    loop {
        let (event, data) = events
            .next(Duration::from_secs(60))
            .await
            .expect("the stream stays open");
        assert_eq!(event, "fleet");
        let rows: Value = serde_json::from_str(&data).expect("rows are JSON");
        let r = row(&rows, &uuid).expect("the node");
        let state = r["provision_state"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if states.last() != Some(&state) {
            states.push(state.clone());
        }
        if let Some(step) = r["step"].as_str() {
            steps.push(step.to_string());
        }
        if let Some(p) = r["progress"].as_object() {
            let got = p["received"].as_u64().expect("received bytes");
            // The total is the image's length, unknown until the server's
            // answer: a beat at the command's start shows none.
            if got > 0 {
                assert!(p["total"].as_u64().is_some_and(|t| t >= got), "{p:?}");
                rates.push(p["rate"].as_u64().expect("a rate"));
            }
            if received.last() != Some(&got) {
                received.push(got);
            }
        }
        if state == "active" {
            assert!(r["progress"].is_null(), "no bar once active");
            break;
        }
        assert_ne!(state, "deploy failed", "{r}");
    }
    assert!(
        received.len() >= 2 && received.windows(2).all(|w| w[0] < w[1]),
        "the bar moved: {received:?}"
    );
    assert!(
        rates.iter().any(|r| *r > 0),
        "a rate while writing: {rates:?}"
    );
    assert!(states.iter().any(|s| s == "wait call-back"), "{states:?}");
    assert!(steps.iter().any(|s| s == "deploy.write_image"), "{steps:?}");

    let (status, page) = get(&c, &format!("/console/nodes/{uuid}")).await;
    assert_eq!(status, 200);
    assert!(page.contains("class=\"timeline\""), "{page}");
    assert!(page.contains("console-deploy"));
    // The clean step picker lists the agent's cached steps.
    assert!(
        page.contains("name=\"clean_step\" value=\"deploy.erase_devices_metadata\""),
        "{page}"
    );
    assert!(
        page.contains("<span class=\"etype\">provisioning</span>"),
        "{page}"
    );
}

/// What the template engine makes of text.
fn escaped(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn post_action(c: &Conductor, uuid: &str, form: &[(&str, &str)]) -> (u16, String) {
    let r = c
        .http
        .post(format!("{}/console/nodes/{uuid}/actions", c.url))
        .form(form)
        .send()
        .await
        .expect("POST action");
    (r.status().as_u16(), r.text().await.expect("body"))
}

/// Actions go through the REST API's code: accepted ones move the node,
/// destructive ones are asked again first, and refused ones (wrong state,
/// locked) show the API's own error and change nothing.
#[tokio::test]
async fn console_actions_use_the_api_path() {
    let c = Conductor::start(&[]).await;
    let node = c
        .create_node(
            json!({"driver": "fake-hardware", "name": "console-actions", "automated_clean": false}),
        )
        .await;
    let uuid = node["uuid"].as_str().expect("uuid").to_string();

    // manage: accepted, redirected back to the node page.
    let (status, page) = post_action(&c, &uuid, &[("action", "manage")]).await;
    assert_eq!(status, 200);
    assert!(page.contains("Requested: manage."), "{page}");
    c.wait_state(&uuid, "manageable", Duration::from_secs(30))
        .await;

    // provide may erase disks: without confirmation, a question only.
    let (status, page) = post_action(&c, &uuid, &[("action", "provide")]).await;
    assert_eq!(status, 200);
    assert!(page.contains("Confirm provide"), "{page}");
    assert_eq!(c.node(&uuid).await["provision_state"], "manageable");

    // A verb the state does not allow: the REST API's error, verbatim.
    let rest = c
        .request(
            reqwest::Method::PUT,
            &format!("/v1/nodes/{uuid}/states/provision"),
        )
        .json(&json!({"target": "deleted"}))
        .send()
        .await
        .unwrap();
    let rest_status = rest.status().as_u16();
    let body: ferrite_protocol::IronicErrorBody = rest.json().await.unwrap();
    let (status, page) =
        post_action(&c, &uuid, &[("action", "undeploy"), ("confirm", "yes")]).await;
    assert_eq!(status, rest_status);
    assert!(page.contains("Refused: "), "{page}");
    assert!(page.contains(&escaped(&body.faultstring())), "{page}");
    assert_eq!(c.node(&uuid).await["provision_state"], "manageable");

    // A node locked by another conductor: Ironic's NodeLocked, unchanged.
    assert_eq!(c.db.set_reservation(&uuid, Some("other-conductor")), 1);
    let (status, page) = post_action(&c, &uuid, &[("action", "provide"), ("confirm", "yes")]).await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("is locked by host other-conductor"), "{page}");
    assert_eq!(c.node(&uuid).await["provision_state"], "manageable");
    assert_eq!(c.db.set_reservation(&uuid, None), 1);

    // A form posted from another site is refused before anything runs.
    let r = c
        .http
        .post(format!("{}/console/nodes/{uuid}/actions", c.url))
        .header("Origin", "https://elsewhere.example")
        .form(&[("action", "maintenance-on"), ("reason", "csrf")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(c.node(&uuid).await["maintenance"], false);

    // A clean step the API's schema refuses: its error, nothing runs.
    let (status, page) = post_action(
        &c,
        &uuid,
        &[
            ("action", "clean"),
            ("clean_step", "bogus"),
            ("confirm", "yes"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("Invalid clean step"), "{page}");
    assert_eq!(c.node(&uuid).await["provision_state"], "manageable");

    // Maintenance with a reason; an unknown action is a 400.
    let (status, _) = post_action(
        &c,
        &uuid,
        &[("action", "maintenance-on"), ("reason", "disk swap")],
    )
    .await;
    assert_eq!(status, 200);
    let shown = c.node(&uuid).await;
    assert_eq!(shown["maintenance"], true);
    assert_eq!(shown["maintenance_reason"], "disk swap");
    let (status, _) = post_action(&c, &uuid, &[("action", "format-everything")]).await;
    assert_eq!(status, 400);

    // Confirmed provide: accepted, the node becomes available.
    post_action(&c, &uuid, &[("action", "maintenance-off")]).await;
    let (status, page) = post_action(&c, &uuid, &[("action", "provide"), ("confirm", "yes")]).await;
    assert_eq!(status, 200, "{page}");
    c.wait_state(&uuid, "available", Duration::from_secs(30))
        .await;
}

/// Live streams are bounded (64 at once, the 65th is refused with 503),
/// and a client that goes away frees its slot.
#[tokio::test(flavor = "multi_thread")]
async fn console_streams_are_bounded_and_freed() {
    let c = Conductor::start(&[]).await;
    let mut open = Vec::new();
    for _ in 0..64 {
        let mut s = stream(&c, "/console/events").await;
        let (event, _) = s.next(Duration::from_secs(10)).await.expect("event");
        assert_eq!(event, "fleet");
        open.push(s);
    }
    let refused = c
        .http
        .get(format!("{}/console/events", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    drop(open.pop());
    ferrite_tests::wait_for("a freed stream slot", Duration::from_secs(20), || async {
        let r = c
            .http
            .get(format!("{}/console/events", c.url))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
}
