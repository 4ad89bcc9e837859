//! The console in a real headless Chromium (tests/harness/browser.rs):
//! an operator logs in, starts a deploy from the node page, watches the
//! bar move on the fleet view while a real agent writes to a loop
//! device, reads the timeline once the node is active, undeploys it and
//! sees `available` arrive without a reload, then watches a deploy with a
//! wrong checksum fail. The screenshots of the fleet, the node and the
//! failed deploy are saved under target/test-artifacts/console/.

use std::time::Duration;

use fantoccini::Locator;
use ferrite_tests::browser::Browser;
use ferrite_tests::deploy_fixture::DeployFixture;
use ferrite_tests::images::same_prefix;
use ferrite_tests::{wait_for, Agent, Conductor, API_PASSWORD, API_USER};
use serde_json::json;

const MAC: &str = "52:54:00:b0:0e:01";
/// A name no API call accepts, written straight into the database: the
/// browser must show it as text and run nothing.
const PROBE: &str = "<img src=x onerror=\"document.title='owned'\">";

async fn log_in(b: &Browser, c: &Conductor, password: &str) {
    b.client
        .goto(&format!("{}/console/", c.url))
        .await
        .expect("opening the console");
    assert_eq!(b.path().await, "/console/login", "sent to the login form");
    let form = b
        .client
        .form(Locator::Css("#login"))
        .await
        .expect("the form");
    form.set_by_name("username", API_USER)
        .await
        .expect("typing the user");
    form.set_by_name("password", password)
        .await
        .expect("typing the password");
    form.submit().await.expect("submitting");
}

/// The fleet row's progress: (percent from the bar, the text beside it).
async fn progress(b: &Browser, uuid: &str) -> Option<(f64, String)> {
    let v = b
        .eval(
            "const tr = document.querySelector('tr[data-uuid=\"' + arguments[0] + '\"]');
             const bar = tr && tr.querySelector('progress');
             return bar ? [bar.value, tr.querySelector('.ptext').textContent] : null;",
            vec![json!(uuid)],
        )
        .await;
    Some((v[0].as_f64()?, v[1].as_str()?.to_string()))
}

async fn cell(b: &Browser, uuid: &str, field: &str) -> Option<String> {
    b.text(&format!("tr[data-uuid=\"{uuid}\"] [data-f=\"{field}\"]"))
        .await
}

/// Submits the node page's form for `action`, answering its confirmation.
async fn act(b: &Browser, action: &str, fields: &[(&str, &str)]) {
    let t = std::time::Instant::now();
    let css = format!("form.action:has(input[name=\"action\"][value=\"{action}\"])");
    let form = b.client.form(Locator::Css(&css)).await.expect("the form");
    for (name, value) in fields {
        form.set_by_name(name, value)
            .await
            .expect("filling the form");
    }
    let button = b
        .client
        .find(Locator::Css(&format!("{css} button[type=\"submit\"]")))
        .await
        .expect("its button");
    eprintln!("act {action}: form filled after {:?}", t.elapsed());
    button.click().await.expect("clicking");
    // Destructive actions ask first, in the page.
    wait_for("the confirmation", Duration::from_secs(10), || async {
        b.client.get_alert_text().await.ok()
    })
    .await;
    eprintln!("act {action}: confirmation after {:?}", t.elapsed());
    b.client.accept_alert().await.expect("confirming");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_deploys_watches_and_undeploys_in_chromium() {
    // ~6 MiB at 512 KiB/s: ~12 s of writing, several heartbeats see it.
    let f = DeployFixture::new(24 << 20, 512 << 10, false).await;
    let c = Conductor::start(&["--fast-track", "true", "--heartbeat-timeout", "4"]).await;
    let uuid = c.available_node(json!({"name": "browser-deploy"})).await;
    // The operator's image format is on the node already; the page sends
    // the URL and checksum.
    c.set_instance_info(&uuid, json!({"image_disk_format": "qcow2"}))
        .await;
    let disks = f.disks_param();
    let agent = c.start_agent_for(&uuid, MAC, &[&disks]).await;
    // A second node whose name is an XSS probe.
    let probe = c
        .create_node(json!({"driver": "fake-hardware", "name": "probe"}))
        .await;
    let probe_uuid = probe["uuid"].as_str().expect("uuid").to_string();
    let mut doc: serde_json::Value =
        serde_json::from_str(&c.db.node_data(&probe_uuid).expect("stored")).expect("json");
    doc["name"] = json!(PROBE);
    assert_eq!(c.db.set_node(&probe_uuid, Some(&doc.to_string()), None), 1);

    let b = Browser::start(1280, 900).await;

    // A wrong password is refused: the form again, with the error.
    log_in(&b, &c, "not-the-password").await;
    let refused = b
        .wait_text(
            "the refusal",
            "#login-error",
            Duration::from_secs(10),
            |_| true,
        )
        .await;
    assert_eq!(refused, "Incorrect username or password.");
    assert_eq!(b.path().await, "/console/login");
    // The right one opens the fleet.
    log_in(&b, &c, API_PASSWORD).await;
    wait_for("the fleet page", Duration::from_secs(10), || async {
        (b.path().await == "/console/").then_some(())
    })
    .await;
    let name = cell(&b, &uuid, "name").await;
    assert_eq!(name.as_deref(), Some("browser-deploy"));
    // The probe is text: its row shows the markup, and nothing ran.
    let shown = cell(&b, &probe_uuid, "name").await;
    assert_eq!(shown.as_deref(), Some(PROBE));
    assert_eq!(b.client.title().await.unwrap(), "Fleet · Ferrite console");

    // Deploy from the node page: the URL and checksum, confirmed.
    b.client
        .goto(&format!("{}/console/nodes/{uuid}", c.url))
        .await
        .unwrap();
    act(
        &b,
        "deploy",
        &[("image_url", &f.image_url()), ("image_checksum", &f.sha256)],
    )
    .await;
    b.wait_text(
        "the accepted deploy",
        ".flash",
        Duration::from_secs(10),
        |t| t.contains("deploy"),
    )
    .await;

    // The fleet view: the bar moves while the agent writes.
    b.client.goto(&format!("{}/console/", c.url)).await.unwrap();
    let mut seen: Vec<(f64, String)> = Vec::new();
    let mut shot = None;
    let mut states = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let state = cell(&b, &uuid, "provision_state").await.unwrap_or_default();
        if states.last() != Some(&state) {
            states.push(state.clone());
        }
        assert_ne!(state, "deploy failed");
        if let Some(p) = progress(&b, &uuid).await {
            if seen.last().map(|s| s.0) != Some(p.0) {
                seen.push(p);
                // The fleet mid-write, once the bar has moved.
                if seen.len() == 2 && shot.is_none() {
                    shot = Some(b.screenshot("fleet-deploying").await);
                }
            }
        }
        if state == "active" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not active in 120 s: {states:?}, bar {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("states {states:?}; bar {seen:?}");
    assert!(
        seen.len() >= 2 && seen.windows(2).all(|w| w[0].0 < w[1].0),
        "the bar advanced in the page: {seen:?}"
    );
    assert!(seen
        .iter()
        .any(|(_, t)| t.contains("MiB/s") || t.contains("KiB/s")));
    assert!(states.iter().any(|s| s == "wait call-back"), "{states:?}");
    assert!(shot.is_some(), "a screenshot while writing");
    assert!(progress(&b, &uuid).await.is_none(), "no bar once active");
    same_prefix(&f.raw, &f.disk.path, f.image_len()).expect("the disk holds the image");

    // The node's timeline after active.
    b.client
        .find(Locator::Css(&format!("tr[data-uuid=\"{uuid}\"] a")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let timeline = b
        .wait_text("the timeline", "#history", Duration::from_secs(10), |t| {
            t.contains("active")
        })
        .await;
    assert!(timeline.contains("wait call-back"), "{timeline}");
    b.screenshot("node").await;
    b.eval(
        "document.getElementById('history').scrollIntoView(); return null;",
        vec![],
    )
    .await;
    b.screenshot("node-timeline").await;
    eprintln!("phase: undeploy at {:?}", std::time::SystemTime::now());

    // Undeploy from the page; `available` arrives on the same page.
    act(&b, "undeploy", &[]).await;
    b.wait_text(
        "the accepted undeploy",
        ".flash",
        Duration::from_secs(10),
        |t| t.contains("undeploy"),
    )
    .await;
    // A mark in this document: gone if the page were loaded again.
    b.eval("window.ferriteMark = 'still here'; return null;", vec![])
        .await;
    let state_css = format!("tr[data-uuid=\"{uuid}\"] [data-f=\"provision_state\"]");
    b.wait_text("available", &state_css, Duration::from_secs(60), |t| {
        t == "available"
    })
    .await;
    assert_eq!(
        b.eval("return window.ferriteMark || null;", vec![]).await,
        json!("still here"),
        "the state changed without a reload"
    );

    // A deploy with a wrong checksum fails; the page shows why. (The
    // first agent powered its machine off at the end of the deploy: a
    // new one boots, as fast track would find it.)
    eprintln!("phase: failed deploy at {:?}", std::time::SystemTime::now());
    drop(agent);
    // One download, not IPA's ten retries of a bad checksum.
    let _agent = Agent::start(
        &c.url,
        &[MAC],
        &[&disks, "ipa-image-download-connection-retries=0"],
    );
    c.wait_agent(&uuid).await;
    eprintln!("phase: agent back at {:?}", std::time::SystemTime::now());
    act(
        &b,
        "deploy",
        &[
            ("image_url", &f.image_url()),
            ("image_checksum", &"0".repeat(64)),
        ],
    )
    .await;
    b.wait_text("deploy failed", &state_css, Duration::from_secs(120), |t| {
        t == "deploy failed"
    })
    .await;
    let error = b
        .wait_text(
            "last_error in the page",
            "#last-error-box",
            Duration::from_secs(20),
            |t| t.contains("checksum"),
        )
        .await;
    eprintln!("last_error shown: {error}");
    assert!(progress(&b, &uuid).await.is_none(), "no bar once failed");
    b.eval("window.scrollTo(0, 0); return null;", vec![]).await;
    b.screenshot("node-deploy-failed").await;

    // A phone-sized window: the fleet fits its width.
    b.client.set_window_size(390, 844).await.unwrap();
    b.client.goto(&format!("{}/console/", c.url)).await.unwrap();
    let overflow = b
        .eval(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            vec![],
        )
        .await;
    if overflow.as_i64().is_none_or(|o| o > 0) {
        let wide = b
            .eval(
                "return Array.from(document.querySelectorAll('body *'))
                   .filter(e => e.getBoundingClientRect().right > window.innerWidth)
                   .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right));",
                vec![],
            )
            .await;
        panic!("the fleet scrolls sideways on a phone by {overflow} px: {wide}");
    }
    b.screenshot("fleet-phone").await;
    b.close().await;
}
