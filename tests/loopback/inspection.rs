//! In-band inspection between the real binaries: the agent posts its
//! inventory to `/v1/continue_inspection` before lookup, the conductor
//! stores it, adds ports and properties, and lookup follows with the UUID.

use std::time::Duration;

use ferrite_tests::{wait_for, Agent, Conductor};
use serde_json::{json, Value};

async fn post(
    conductor: &Conductor,
    query: &str,
    version: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut req = conductor
        .http
        .post(format!("{}/v1/continue_inspection{query}", conductor.url))
        .json(body);
    if let Some(v) = version {
        req = req.header("X-OpenStack-Ironic-API-Version", v);
    }
    let resp = req.send().await.expect("POST continue_inspection");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn fault(body: &Value) -> String {
    let raw = body["error_message"].as_str().unwrap_or_default();
    serde_json::from_str::<Value>(raw).unwrap_or_default()["faultstring"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn node_waiting_for_inspection(conductor: &Conductor, mac: &str, props: Value) -> String {
    let node = conductor
        .create_node(json!({"driver": "fake-hardware", "properties": props}))
        .await;
    let uuid = node["uuid"].as_str().expect("uuid").to_string();
    conductor.create_port(&uuid, mac).await;
    conductor.force_state(&uuid, "inspect wait");
    uuid
}

async fn wait_state(conductor: &Conductor, uuid: &str, want: &str) -> Value {
    wait_for(
        &format!("{uuid} in {want}"),
        Duration::from_secs(30),
        || async {
            let n = conductor.node(uuid).await;
            (n["provision_state"] == want).then_some(n)
        },
    )
    .await
}

async fn ports(conductor: &Conductor, uuid: &str) -> Vec<(String, bool)> {
    let resp = conductor
        .request(
            reqwest::Method::GET,
            &format!("/v1/nodes/{uuid}/ports?detail=true"),
        )
        .send()
        .await
        .expect("GET ports");
    let body: Value = resp.json().await.expect("ports json");
    let mut out: Vec<(String, bool)> = body["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["address"].as_str().unwrap_or_default().to_string(),
                p["pxe_enabled"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn agent_inspects_then_looks_up_and_conductor_stores_inventory_ports_and_properties() {
    // Fast track: the ramdisk stays up after inspection (the node is then
    // manageable) and looks itself up; without it the node powers off.
    let conductor =
        Conductor::start(&["--inspector-add-ports", "all", "--fast-track", "true"]).await;
    let (pxe, other) = ("52:54:00:1e:00:01", "52:54:00:1e:00:02");
    // The operator set local_gb: inspection must not overwrite it.
    let uuid = node_waiting_for_inspection(&conductor, pxe, json!({"local_gb": 7})).await;
    let callback = format!("{}/v1/continue_inspection", conductor.url);
    let agent = Agent::start(
        &conductor.url,
        &[pxe, other],
        &[
            &format!("ipa-inspection-callback-url={callback}"),
            "BOOTIF=01-52-54-00-1e-00-01",
            "ipa-inspection-dhcp-wait-timeout=0",
        ],
    );

    // Lookup follows inspection: the agent heartbeats with the token it got there.
    wait_for("the agent's heartbeat", Duration::from_secs(90), || async {
        conductor.agent_certificate(&uuid)
    })
    .await;
    let log = agent.proc.log_text();
    let inspected = log.find("inspection finished successfully").expect(&log);
    let looked_up = log.find("lookup succeeded").expect(&log);
    assert!(inspected < looked_up, "inspection runs before lookup");

    let resp = conductor
        .request(reqwest::Method::GET, &format!("/v1/nodes/{uuid}/inventory"))
        .send()
        .await
        .expect("GET inventory");
    assert_eq!(resp.status(), 200);
    let stored: Value = resp.json().await.expect("inventory json");
    let inv = &stored["inventory"];
    let macs: Vec<&str> = inv["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .filter_map(|i| i["mac_address"].as_str())
        .collect();
    assert_eq!(macs, [pxe, other]);
    assert_eq!(inv["boot"]["pxe_interface"], "01-52-54-00-1e-00-01");
    let plugin = &stored["plugin_data"];
    assert_eq!(plugin["boot_interface"], "01-52-54-00-1e-00-01");
    assert_eq!(plugin["error"], Value::Null);
    assert_eq!(
        plugin["configuration"]["collectors"],
        json!(["default", "logs"])
    );
    assert_eq!(
        plugin["configuration"]["managers"],
        json!([{"name": "generic_hardware_manager", "version": "1.2"}])
    );
    assert!(
        plugin.get("logs").is_none(),
        "logs are not kept in the database"
    );

    // The new NIC got a port, not PXE-enabled; the PXE one stays PXE.
    assert_eq!(
        ports(&conductor, &uuid).await,
        [(pxe.to_string(), true), (other.to_string(), false)]
    );
    let node = conductor.node(&uuid).await;
    let props = &node["properties"];
    assert_eq!(props["cpus"], inv["cpu"]["count"]);
    assert!(props["cpus"].as_u64().unwrap_or(0) >= 1);
    assert_eq!(props["cpu_arch"], std::env::consts::ARCH);
    assert_eq!(props["local_gb"], 7, "operator value kept");
    drop(agent);
}

#[tokio::test]
async fn inspection_without_a_known_node_still_proceeds_to_lookup() {
    // The conductor answers 404 (no port for this MAC): IPA logs it and
    // goes on to lookup, which here fails too; the agent keeps trying.
    let conductor = Conductor::start(&[]).await;
    let callback = format!("{}/v1/continue_inspection", conductor.url);
    let agent = Agent::start(
        &conductor.url,
        &["52:54:00:1e:00:09"],
        &[
            &format!("ipa-inspection-callback-url={callback}"),
            "ipa-inspection-dhcp-wait-timeout=0",
            "ipa-lookup-timeout=300",
        ],
    );
    let log = wait_for(
        "lookup attempts after inspection",
        Duration::from_secs(60),
        || {
            let log = agent.proc.log_text();
            async move { log.contains("lookup: no node").then_some(log) }
        },
    )
    .await;
    assert!(
        log.contains("inspector error, proceeding with lookup"),
        "{log}"
    );
    assert!(log.contains("404"), "{log}");
}

fn body(macs: &[&str]) -> Value {
    json!({
        "inventory": {
            "interfaces": macs.iter().map(|m| json!({"name": "eth0", "mac_address": m})).collect::<Vec<_>>(),
            "cpu": {"count": 4, "architecture": "aarch64"},
            "memory": {"physical_mb": 8192, "total": 8 << 30},
            "bmc_address": null,
            "boot": {"pxe_interface": macs.first().copied()},
        },
        "root_disk": {"name": "/dev/sda", "size": 20u64 << 30},
        "error": null,
    })
}

#[tokio::test]
async fn continue_inspection_rejects_bad_input_like_ironic() {
    let conductor = Conductor::start(&[]).await;
    let mac = "52:54:00:1e:00:11";
    let uuid = node_waiting_for_inspection(&conductor, mac, json!({})).await;

    let (status, b) = post(&conductor, "", None, &json!({"root_disk": null})).await;
    assert_eq!(
        (status, fault(&b).as_str()),
        (
            400,
            "Schema error for data: 'inventory' is a required property"
        )
    );
    let (status, b) = post(
        &conductor,
        "",
        None,
        &json!({"inventory": {"interfaces": []}}),
    )
    .await;
    assert_eq!(
        (status, fault(&b).as_str()),
        (400, "Schema error for data: [] should be non-empty")
    );
    let (status, b) = post(&conductor, "", None, &json!({"inventory": {"cpu": {}}})).await;
    assert_eq!(
        (status, fault(&b).as_str()),
        (
            400,
            "Schema error for data: 'interfaces' is a required property"
        )
    );
    let mut bad_bmc = body(&[mac]);
    bad_bmc["inventory"]["bmc_address"] = json!(17);
    let (status, b) = post(&conductor, "", None, &bad_bmc).await;
    assert_eq!(
        (status, fault(&b).as_str()),
        (
            400,
            "Schema error for data: 17 is not of type 'string', 'null'"
        )
    );
    let (status, b) = post(&conductor, "", None, &body(&["not-a-mac"])).await;
    assert_eq!(
        (status, fault(&b).as_str()),
        (400, "No lookup information provided")
    );
    let resp = conductor
        .http
        .post(format!("{}/v1/continue_inspection", conductor.url))
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 400);

    // Unknown MACs: a bare 404, nothing created.
    let (status, _) = post(&conductor, "", None, &body(&["52:54:00:1e:00:99"])).await;
    assert_eq!(status, 404);
    // Versions between 1.1 and 1.84 do not have the endpoint; node_uuid needs 1.84.
    let (status, b) = post(&conductor, "", Some("1.83"), &body(&[mac])).await;
    assert_eq!(
        (status, fault(&b).as_str()),
        (404, "API version 1.84 or newer is required")
    );
    let (status, _) = post(
        &conductor,
        &format!("?node_uuid={uuid}"),
        None,
        &body(&[mac]),
    )
    .await;
    assert_eq!(status, 404);
    // The node must be waiting for inspection.
    conductor.force_state(&uuid, "manageable");
    let (status, _) = post(&conductor, "", None, &body(&[mac])).await;
    assert_eq!(status, 404);
    let resp = conductor
        .request(reqwest::Method::GET, &format!("/v1/nodes/{uuid}/inventory"))
        .send()
        .await
        .expect("GET inventory");
    assert_eq!(resp.status(), 404, "nothing was stored");
    let resp = conductor
        .http
        .get(format!("{}/v1/nodes/{uuid}/inventory", conductor.url))
        .header("X-OpenStack-Ironic-API-Version", "1.80")
        .send()
        .await
        .expect("GET inventory");
    assert_eq!(resp.status(), 404, "no inventory endpoint before 1.81");
    assert_eq!(ports(&conductor, &uuid).await.len(), 1);
}

#[tokio::test]
async fn continue_inspection_answers_per_version_and_records_ramdisk_errors() {
    let conductor = Conductor::start(&[]).await;
    let mac = "52:54:00:1e:00:21";
    let uuid = node_waiting_for_inspection(&conductor, mac, json!({})).await;

    // 1.1 (no header, as IPA sends): {"uuid"}.
    let (status, b) = post(&conductor, "", None, &body(&[mac])).await;
    assert_eq!((status, b.clone()), (202, json!({"uuid": uuid})));
    // Inspection done: the node leaves `inspect wait` for `manageable`.
    let node = wait_state(&conductor, &uuid, "manageable").await;
    assert_eq!(node["power_state"], "power off");
    // Data is accepted only in `inspect wait`: now a bare 404, as Ironic.
    let (status, _) = post(&conductor, "", None, &body(&[mac])).await;
    assert_eq!(status, 404);
    conductor.force_state(&uuid, "inspect wait");
    assert_eq!(
        (&node["properties"]["cpus"], &node["properties"]["cpu_arch"]),
        (&json!(4), &json!("aarch64"))
    );
    assert_eq!(node["properties"]["memory_mb"], 8192);
    assert_eq!(node["properties"]["local_gb"], 19);

    // ≥ 1.84 with node_uuid: lookup-shaped, with a fresh agent token.
    let (status, b) = post(
        &conductor,
        &format!("?node_uuid={uuid}"),
        Some("1.84"),
        &body(&[mac]),
    )
    .await;
    assert_eq!(status, 202, "{b}");
    assert_eq!(b["node"]["uuid"], uuid);
    assert_eq!(b["config"]["agent_token"].as_str().map(str::len), Some(43));
    // The token lives only as long as the flow: inspection ends by powering
    // the node off, which wipes it, as Ironic's node_power_action does.
    // (Reading it before that point would race the inspection hook.)
    wait_state(&conductor, &uuid, "manageable").await;
    assert_eq!(conductor.agent_token(&uuid), None);
    conductor.force_state(&uuid, "inspect wait");

    // A ramdisk error fails inspection: recorded, the inventory not replaced.
    let mut failed = body(&[mac]);
    failed["inventory"]["cpu"]["count"] = json!(99);
    failed["error"] = json!("The following errors were encountered:\n* collector x failed");
    let (status, _) = post(&conductor, "", None, &failed).await;
    assert_eq!(status, 202);
    let node = wait_state(&conductor, &uuid, "inspect failed").await;
    assert_eq!(
        node["last_error"],
        "Ramdisk reported error: The following errors were encountered:\n* collector x failed"
    );
    let stored: Value = conductor
        .request(reqwest::Method::GET, &format!("/v1/nodes/{uuid}/inventory"))
        .send()
        .await
        .expect("GET inventory")
        .json()
        .await
        .expect("json");
    assert_eq!(stored["inventory"]["cpu"]["count"], 4);
}

#[test]
fn inventory_subcommand_prints_the_inventory_of_a_fixture_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nic = dir.path().join("sys/class/net/eth7");
    std::fs::create_dir_all(nic.join("device")).expect("fixture");
    std::fs::write(nic.join("address"), "52:54:00:1e:00:77\n").expect("address");
    std::fs::write(nic.join("carrier"), "1\n").expect("carrier");
    let out = std::process::Command::new(ferrite_tests::bin("ferrite-agent"))
        .arg("--sysfs-root")
        .arg(dir.path().join("sys"))
        .args(["inventory", "--skip-bmc"])
        .output()
        .expect("run ferrite-agent inventory");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inv: Value = serde_json::from_slice(&out.stdout).expect("inventory JSON");
    assert_eq!(
        (
            &inv["interfaces"][0]["name"],
            &inv["interfaces"][0]["mac_address"]
        ),
        (&json!("eth7"), &json!("52:54:00:1e:00:77"))
    );
    assert_eq!(inv["interfaces"][0]["has_carrier"], true);
    assert_eq!(inv["bmc_address"], Value::Null);
    assert_eq!(inv["cpu"]["architecture"], std::env::consts::ARCH);
    let bad = std::process::Command::new(ferrite_tests::bin("ferrite-agent"))
        .args(["inventory", "--lldp=-1"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--lldp"));
}

fn set_reservation(conductor: &Conductor, uuid: &str, holder: Option<&str>) {
    conductor.db.set_reservation(uuid, holder);
}

#[tokio::test]
async fn agent_retries_a_locked_node_then_inspects() {
    let conductor = Conductor::start(&[]).await;
    let mac = "52:54:00:1e:00:31";
    let uuid = node_waiting_for_inspection(&conductor, mac, json!({})).await;
    // Another conductor holds the node: Ironic answers 409, which IPA retries.
    set_reservation(&conductor, &uuid, Some("other-conductor"));
    let agent = Agent::start(
        &conductor.url,
        &[mac],
        &[
            "ipa-inspection-collectors=default",
            "ipa-inspection-dhcp-wait-timeout=0",
            "ferrite-inspection-retry-wait=1",
        ],
    );
    wait_for("a retried inspection post", Duration::from_secs(30), || {
        let log = agent.proc.log_text();
        async move {
            log.contains("posting inspection data failed; retrying")
                .then_some(())
        }
    })
    .await;
    set_reservation(&conductor, &uuid, None);
    wait_for("the inventory", Duration::from_secs(30), || async {
        let resp = conductor
            .request(reqwest::Method::GET, &format!("/v1/nodes/{uuid}/inventory"))
            .send()
            .await
            .ok()?;
        (resp.status() == 200).then_some(())
    })
    .await;
    let log = agent.proc.log_text();
    assert!(log.contains("409"), "{log}");
    let url = format!("{}/v1/continue_inspection", conductor.url);
    assert!(
        log.contains(&url),
        "ipa-api-url + /v1/continue_inspection: {log}"
    );
}

#[tokio::test]
async fn agent_gives_up_after_five_attempts_and_looks_up_without_a_uuid() {
    let conductor = Conductor::start(&[]).await;
    let mac = "52:54:00:1e:00:41";
    let uuid = node_waiting_for_inspection(&conductor, mac, json!({})).await;
    set_reservation(&conductor, &uuid, Some("other-conductor"));
    let agent = Agent::start(
        &conductor.url,
        &[mac],
        &[
            "ipa-inspection-collectors=default",
            "ipa-inspection-dhcp-wait-timeout=0",
            "ferrite-inspection-retry-wait=0.1",
        ],
    );
    let log = wait_for("inspection to give up", Duration::from_secs(30), || {
        let log = agent.proc.log_text();
        async move { log.contains("Failed to perform inspection").then_some(log) }
    })
    .await;
    assert!(log.contains("gave up after 5 attempts"), "{log}");
    assert_eq!(
        log.matches("posting inspection data failed; retrying")
            .count(),
        4,
        "{log}"
    );
    // Lookup follows; the node is still locked, so it too is told 409.
    wait_for(
        "lookup after the failed inspection",
        Duration::from_secs(30),
        || {
            let log = agent.proc.log_text();
            async move { log.contains("lookup: node is locked").then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn unknown_macs_are_matched_by_the_bmc_address() {
    let conductor = Conductor::start(&[]).await;
    let make = |name: &'static str, bmc: &'static str| {
        let conductor = &conductor;
        async move {
            let node = conductor
                .create_node(json!({"driver": "fake-hardware", "name": name,
                                    "driver_info": {"ipmi_address": bmc}}))
                .await;
            let uuid = node["uuid"].as_str().expect("uuid").to_string();
            conductor.force_state(&uuid, "inspect wait");
            uuid
        }
    };
    let a = make("bmc-a", "192.0.2.50").await;
    let mut data = body(&["52:54:00:1e:00:51"]);
    data["inventory"]["bmc_address"] = json!("192.0.2.50");
    data["inventory"]["boot"] = json!({"pxe_interface": null});
    let (status, b) = post(&conductor, "", None, &data).await;
    assert_eq!((status, b), (202, json!({"uuid": a})));
    // No PXE NIC known: every NIC gets a port (Ironic's add_ports=pxe
    // fallback), none PXE-enabled, as Ironic creates them.
    assert_eq!(
        ports(&conductor, &a).await,
        [("52:54:00:1e:00:51".to_string(), false)]
    );

    // Two nodes behind one BMC address and no port to tell them apart: 404.
    let b_uuid = make("bmc-b", "192.0.2.60").await;
    let _c = make("bmc-c", "https://192.0.2.60/redfish/v1").await;
    let mut data = body(&["52:54:00:1e:00:61"]);
    data["inventory"]["bmc_address"] = json!("192.0.2.60");
    let (status, _) = post(&conductor, "", None, &data).await;
    assert_eq!(status, 404);
    assert!(ports(&conductor, &b_uuid).await.is_empty());
}
