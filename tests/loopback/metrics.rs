//! `/metrics` follows a real deploy: an agent writes a qcow2 image to a
//! loop device while the test scrapes, and the exposition is read with
//! the Prometheus project's own OpenMetrics parser (`prometheus_client`
//! in build/ironic-venv), not searched as text.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrite_tests::deploy_fixture::DeployFixture;
use ferrite_tests::images::same_prefix;
use ferrite_tests::ironic::venv_bin;
use ferrite_tests::{free_port, wait_for, Conductor};
use serde_json::{json, Value};

const IMAGE_SIZE: u64 = 24 << 20;

/// One sample of a parsed exposition.
#[derive(Debug)]
pub(crate) struct Sample {
    name: String,
    labels: serde_json::Map<String, Value>,
    value: f64,
}

/// Parse with `prometheus_client.openmetrics.parser`, which refuses what
/// is not valid OpenMetrics (no `# EOF`, a histogram whose buckets do not
/// add up, a counter sample without `_total`, ...).
fn parse(text: &str) -> Vec<Sample> {
    const SCRIPT: &str = "import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({'name': s.name, 'labels': s.labels, 'value': s.value, 'type': family.type})
print(json.dumps(out))
";
    let mut child = Command::new(venv_bin("ironic-venv", "python"))
        .arg("-c")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the OpenMetrics parser");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("writing the exposition");
    let out = child.wait_with_output().expect("the parser's output");
    assert!(
        out.status.success(),
        "the exposition does not parse: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<Value> = serde_json::from_slice(&out.stdout).expect("the parser's JSON");
    samples
        .into_iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap_or_default().to_string(),
            labels: s["labels"].as_object().cloned().unwrap_or_default(),
            value: s["value"].as_f64().unwrap_or(f64::NAN),
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels`.
pub(crate) fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).and_then(Value::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// `GET /metrics` on the API, with the test user's credentials.
pub(crate) async fn scrape(c: &Conductor) -> Vec<Sample> {
    let resp = c
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .expect("scraping /metrics");
    assert_eq!(resp.status().as_u16(), 200);
    let kind = resp.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    parse(&resp.text().await.expect("the exposition"))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_follow_a_loopback_deploy() {
    // The qcow2 holds ~6 MiB: ~12 s of writing, heartbeats (every 1-2 s) see it run.
    let f = DeployFixture::new(IMAGE_SIZE, 512 << 10, false).await;
    let open = format!("127.0.0.1:{}", free_port());
    let c = Conductor::start(&[
        "--fast-track",
        "true",
        "--heartbeat-timeout",
        "4",
        "--metrics-listen",
        &open,
    ])
    .await;

    // Authenticated like the rest of the API: no credentials, no metrics.
    let anonymous = reqwest::Client::new();
    let refused = anonymous
        .get(format!("{}/metrics", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    assert!(refused.headers().contains_key("www-authenticate"));

    let uuid = c.available_node(json!({"name": "metrics-node"})).await;
    let _agent = c
        .start_agent_for(&uuid, "52:54:00:fa:18:01", &[&f.disks_param()])
        .await;
    c.set_instance_info(&uuid, f.instance_info()).await;
    assert_eq!(c.act(&uuid, json!({"target": "active"})).await.0, 202);

    // Scrapes during the write: the node's gauges show it moving.
    let node = [("node_uuid", uuid.as_str()), ("node_name", "metrics-node")];
    let during = wait_for(
        "the image write in /metrics",
        Duration::from_secs(60),
        || {
            let scraped = scrape(&c);
            async move {
                let s = scraped.await;
                let written = value(&s, "baremetal_image_written_bytes", &node)?;
                (written > 0.0).then_some(s)
            }
        },
    )
    .await;
    assert!(value(&during, "baremetal_image_received_bytes", &node).unwrap_or(0.0) > 0.0);
    assert!(value(&during, "baremetal_image_rate_bytes_per_second", &node).unwrap_or(0.0) > 0.0);
    assert_eq!(
        value(
            &during,
            "ferrite_conductor_nodes_provision_state",
            &[("provision_state", "wait call-back")]
        ),
        Some(1.0)
    );

    let done = c
        .wait_state(&uuid, "active", Duration::from_secs(120))
        .await;
    assert_eq!(done["last_error"], Value::Null);
    same_prefix(&f.raw, &f.disk.path, IMAGE_SIZE).expect("the image is on the disk");

    // Lookups the conductor turns down: an unknown MAC, and the node's own
    // in `active`, which allows none; both answered with the same 404.
    for mac in ["52:54:00:fa:18:99", "52:54:00:fa:18:01"] {
        let r = c
            .request(reqwest::Method::GET, &format!("/v1/lookup?addresses={mac}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{mac}");
    }

    // After: the open listener, no credentials.
    let text = anonymous
        .get(format!("http://{open}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let after = parse(&text);
    let get = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
    };
    assert_eq!(
        get(
            "ferrite_conductor_nodes_provision_state",
            &[("provision_state", "active")]
        ),
        1.0
    );
    assert_eq!(
        get(
            "ferrite_conductor_nodes_power_state",
            &[("power_state", "power on")]
        ),
        1.0
    );
    assert_eq!(get("ferrite_conductor_nodes_maintenance", &[]), 0.0);
    // One deploy, from `deploying` to `active`; and the verify at manage.
    let deploy = [("flow", "deploy"), ("result", "success")];
    assert_eq!(
        get("ferrite_conductor_flow_duration_seconds_count", &deploy),
        1.0
    );
    let took = get("ferrite_conductor_flow_duration_seconds_sum", &deploy);
    assert!(took > 2.0 && took < 120.0, "deploy took {took} s");
    assert_eq!(
        get(
            "ferrite_conductor_flow_duration_seconds_count",
            &[("flow", "verify"), ("result", "success")]
        ),
        1.0
    );
    assert!(
        get(
            "ferrite_conductor_heartbeats_total",
            &[("result", "accepted")]
        ) > 0.0
    );
    assert!(get("ferrite_conductor_lookups_total", &[("result", "found")]) >= 1.0);
    assert_eq!(
        get(
            "ferrite_conductor_lookups_total",
            &[("result", "not_found")]
        ),
        1.0
    );
    assert!(get("ferrite_conductor_lookups_total", &[("result", "refused")]) >= 1.0);
    let step = [("command", "deploy.execute_deploy_step")];
    assert!(
        get(
            "ferrite_conductor_agent_command_duration_seconds_count",
            &step
        ) >= 1.0
    );
    assert!(
        get(
            "ferrite_conductor_agent_command_duration_seconds_sum",
            &step
        ) > 0.0
    );
    assert!(
        get(
            "ferrite_conductor_agent_command_duration_seconds_count",
            &[("command", "commands.list")]
        ) >= 1.0
    );
    assert_eq!(
        value(
            &after,
            "ferrite_conductor_agent_command_failures_total",
            &[]
        ),
        None,
        "no agent request failed"
    );
    let written = get("ferrite_conductor_image_written_bytes_total", &[]);
    assert!(
        written > 0.0 && written <= IMAGE_SIZE as f64,
        "{written} bytes counted"
    );
    // The write is over: its per-node gauges are gone.
    assert_eq!(value(&after, "baremetal_image_written_bytes", &node), None);
    assert!(
        get(
            "ferrite_conductor_db_operation_duration_seconds_count",
            &[("operation", "update_node")]
        ) > 0.0
    );
    assert_eq!(
        value(&after, "ferrite_conductor_db_operation_errors_total", &[]),
        None,
        "no database operation failed"
    );
    assert!(
        get(
            "ferrite_conductor_http_request_duration_seconds_count",
            &[("route", "/v1/heartbeat/{node}"), ("status", "202")]
        ) > 0.0
    );
    assert!(
        get(
            "ferrite_conductor_http_request_duration_seconds_count",
            &[("route", "/metrics"), ("status", "401")]
        ) >= 1.0
    );
}
