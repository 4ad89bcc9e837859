//! Three conductors on one PostgreSQL database, as peers: the hash ring
//! spreads the nodes exactly as Ironic's (tooz) does, a dead conductor's
//! nodes and reservations are taken over by the survivors, and a
//! conductor that comes back regains its share.

use std::collections::BTreeMap;
use std::time::Duration;

use ferrite_tests::pg::PgCluster;
use ferrite_tests::{wait_for, Conductor, TestDb};
use serde_json::{json, Value};

/// tests/fixtures/hash_ring.json, written by the real tooz (scripts/gen-ring-fixture).
struct Fixture {
    uuids: Vec<String>,
    owners: Vec<String>,
    removed: String,
    owners_without_removed: Vec<String>,
}

fn fixture(nodes: usize) -> Fixture {
    let doc: Value =
        serde_json::from_str(include_str!("../fixtures/hash_ring.json")).expect("fixture");
    let case = doc["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["hosts"].as_array().map(Vec::len) == Some(3) && c["exponent"] == 5)
        .expect("the 3-host, exponent-5 case");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("list")
            .iter()
            .take(nodes)
            .map(|s| s.as_str().expect("string").to_string())
            .collect()
    };
    Fixture {
        uuids: strings(&doc["uuids"]),
        owners: strings(&case["owners"]),
        removed: case["removed"].as_str().expect("removed").to_string(),
        owners_without_removed: strings(&case["owners_without_removed"]),
    }
}

/// Fast liveness so the test takes seconds: keepalive 1 s, dead after 4 s.
const FAST: [&str; 10] = [
    "--conductor-heartbeat-interval",
    "1",
    "--conductor-heartbeat-timeout",
    "4",
    "--hash-ring-reset-interval",
    "1",
    "--periodic-interval",
    "1",
    "--sync-power-state-interval",
    "0",
];

async fn start(url: &str, host: &str) -> Conductor {
    let mut flags = vec!["--host", host];
    flags.extend(FAST);
    Conductor::start_on_db(TestDb::Postgres(url.to_string()), &flags).await
}

async fn get(c: &Conductor, path: &str) -> Value {
    let resp = c
        .request(reqwest::Method::GET, path)
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200, "GET {path}");
    resp.json().await.expect("json")
}

/// Node UUID → the `conductor` the API shows.
async fn owners(c: &Conductor) -> BTreeMap<String, Value> {
    get(c, "/v1/nodes?fields=uuid,conductor").await["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["uuid"].as_str().unwrap_or_default().to_string(),
                n["conductor"].clone(),
            )
        })
        .collect()
}

fn expected(uuids: &[String], owners: &[String]) -> BTreeMap<String, Value> {
    uuids
        .iter()
        .zip(owners)
        .map(|(u, o)| (u.clone(), json!(o)))
        .collect()
}

async fn wait_owners(c: &Conductor, want: &BTreeMap<String, Value>, what: &str) {
    wait_for(what, Duration::from_secs(30), || async {
        (owners(c).await == *want).then_some(())
    })
    .await;
}

async fn alive(c: &Conductor) -> BTreeMap<String, bool> {
    get(c, "/v1/conductors").await["conductors"]
        .as_array()
        .expect("conductors")
        .iter()
        .map(|r| {
            (
                r["hostname"].as_str().unwrap_or_default().to_string(),
                r["alive"].as_bool().unwrap_or_default(),
            )
        })
        .collect()
}

/// An image served slowly (`rate` bytes/s, so a deploy is still writing
/// when the test acts) and the loop disk the agent writes it to.
struct DeployImage {
    raw: std::path::PathBuf,
    sum: String,
    server: ferrite_tests::image_server::ImageServer,
    disk: ferrite_tests::images::LoopDevice,
    _dir: tempfile::TempDir,
}

impl DeployImage {
    async fn new(rate: u64) -> Self {
        use ferrite_tests::images::{make_raw, sha256_file, to_qcow2, LoopDevice};
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = make_raw(&dir.path().join("disk.raw"), 24 << 20);
        let qcow = to_qcow2(&raw, &dir.path().join("disk.qcow2"), &[]);
        let sum = sha256_file(&qcow);
        let server =
            ferrite_tests::image_server::ImageServer::start(dir.path().to_path_buf()).await;
        server.faults().rate = rate;
        let disk = LoopDevice::new(dir.path(), "target.loop", 5 << 30, true);
        Self {
            raw,
            sum,
            server,
            disk,
            _dir: dir,
        }
    }

    /// The agent's `ferrite-disks` allow-list: this disk only.
    fn disks_param(&self) -> String {
        format!("ferrite-disks={}", self.disk.path.display())
    }

    async fn set_on(&self, c: &Conductor, uuid: &str) {
        c.patch_node(
            uuid,
            json!([{"op": "add", "path": "/instance_info", "value": {
                "image_source": self.server.url_of("disk.qcow2"), "image_checksum": self.sum,
                "image_disk_format": "qcow2"}}]),
        )
        .await;
    }

    fn assert_on_disk(&self) {
        ferrite_tests::images::same_prefix(&self.raw, &self.disk.path, 24 << 20)
            .expect("the image is on the disk");
    }
}

/// Wait (2 min) for `active`, through 503s while a database comes back;
/// on timeout, the logs of `logs_of`.
async fn wait_active(c: &Conductor, uuid: &str, logs_of: &[&Conductor]) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let resp = c
            .request(reqwest::Method::GET, &format!("/v1/nodes/{uuid}"))
            .send()
            .await
            .expect("GET");
        let node = if resp.status() == 200 {
            let n: Value = resp.json().await.expect("json");
            if n["provision_state"] == "active" {
                return n;
            }
            assert_ne!(n["provision_state"], "deploy failed", "{n}");
            n
        } else {
            Value::Null
        };
        if std::time::Instant::now() > deadline {
            for c in logs_of {
                let log = c.proc.log_text();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                eprintln!(
                    "---- {}\n{}",
                    c.url,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            panic!("not active: {node}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ring_spreads_nodes_and_survivors_take_over_a_dead_conductor() {
    let f = fixture(30);
    let url = PgCluster::shared().create_database();
    let c1 = start(&url, "conductor-1").await;
    let mut c2 = start(&url, "conductor-2").await;
    let c3 = start(&url, "conductor-3").await;
    assert_eq!(f.removed, "conductor-2");
    let all_alive: BTreeMap<String, bool> = ["conductor-1", "conductor-2", "conductor-3"]
        .iter()
        .map(|h| (h.to_string(), true))
        .collect();
    for c in [&c1, &c2, &c3] {
        wait_for("all three alive", Duration::from_secs(20), || async {
            (alive(c).await == all_alive).then_some(())
        })
        .await;
    }
    let detail = get(&c3, "/v1/conductors/conductor-1").await;
    assert_eq!(detail["conductor_group"], "");
    assert!(detail["drivers"]
        .as_array()
        .expect("drivers")
        .contains(&json!("fake-hardware")));

    for (i, uuid) in f.uuids.iter().enumerate() {
        c1.create_node(json!({"uuid": uuid, "name": format!("n{i}"), "driver": "fake-hardware"}))
            .await;
    }

    // 1. The spread is tooz's, seen through any conductor's API.
    let want = expected(&f.uuids, &f.owners);
    for c in [&c1, &c2, &c3] {
        wait_owners(c, &want, "the ring's owners").await;
    }
    for host in ["conductor-1", "conductor-2", "conductor-3"] {
        let n = f.owners.iter().filter(|o| *o == host).count();
        assert!(n >= 5, "{host} owns {n} of 30");
    }

    // A node of a group no conductor serves: Ironic's NoValidHost.
    let resp = c1
        .request(reqwest::Method::POST, "/v1/nodes")
        .json(&json!({"driver": "fake-hardware", "conductor_group": "g2"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 400);
    let body = resp.text().await.unwrap_or_default();
    assert!(body.contains("No valid host was found"), "{body}");

    // 2. conductor-2 dies (SIGKILL) holding a node's reservation.
    let held = f
        .uuids
        .iter()
        .zip(&f.owners)
        .find(|(_, o)| *o == "conductor-2")
        .map(|(u, _)| u.clone())
        .expect("a node of conductor-2");
    assert_eq!(c1.db.set_reservation(&held, Some("conductor-2")), 1);
    let _ = c2.proc.child.kill();
    let _ = c2.proc.child.wait();

    let want_after = expected(&f.uuids, &f.owners_without_removed);
    wait_owners(&c1, &want_after, "the survivors' owners").await;
    assert_eq!(alive(&c3).await.get("conductor-2"), Some(&false));
    // Its new owner freed the reservation and said so.
    let new_owner =
        f.owners_without_removed[f.uuids.iter().position(|u| *u == held).expect("held")].clone();
    let node = wait_for(
        "the orphaned reservation released",
        Duration::from_secs(20),
        || async {
            let n = get(&c1, &format!("/v1/nodes/{held}")).await;
            n["reservation"].is_null().then_some(n)
        },
    )
    .await;
    assert_eq!(node["conductor"], json!(new_owner));
    let history = get(&c1, &format!("/v1/nodes/{held}/history?detail=true")).await;
    let takeover: Vec<&Value> = history["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|e| e["event_type"] == "TAKEOVER")
        .collect();
    assert_eq!(takeover.len(), 1, "{history}");
    assert_eq!(
        takeover[0]["event"],
        format!("Forcibly removed reservation of conductor conductor-2 on node {held}")
    );
    assert_eq!(takeover[0]["conductor"], json!(new_owner));

    // 3. conductor-2 comes back under its name: the ring gives its share back.
    c2.kill_and_restart().await;
    wait_owners(&c3, &want, "conductor-2's nodes back").await;
    assert_eq!(alive(&c1).await, all_alive);
}

/// A deploy whose conductor dies mid-write: the agent's next heartbeat,
/// through the same address, reaches a survivor, which finishes the
/// deploy; the agent was sent no command twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_survives_the_death_of_its_conductor() {
    use ferrite_tests::failover_proxy::FailoverProxy;
    use ferrite_tests::Agent;

    let f = fixture(30);
    // ~10 s of writing: time to kill the conductor
    let image = DeployImage::new(2 << 20).await;

    let url = PgCluster::shared().create_database();
    let mut flags: Vec<&str> = vec!["--fast-track", "true", "--heartbeat-timeout", "4"];
    flags.extend(FAST);
    let mut conductors = Vec::new();
    for host in ["conductor-1", "conductor-2", "conductor-3"] {
        let mut with_host = vec!["--host", host];
        with_host.extend(&flags);
        conductors.push(Conductor::start_on_db(TestDb::Postgres(url.clone()), &with_host).await);
    }
    let [c1, mut c2, c3]: [Conductor; 3] = conductors.try_into().ok().expect("three");
    for c in [&c1, &c2, &c3] {
        wait_for(
            "three conductors alive",
            Duration::from_secs(20),
            || async { (alive(c).await.values().filter(|a| **a).count() == 3).then_some(()) },
        )
        .await;
    }
    // A node conductor-2 owns: its heartbeats go to conductor-2 first.
    let uuid = f
        .uuids
        .iter()
        .zip(&f.owners)
        .find(|(_, o)| *o == "conductor-2")
        .map(|(u, _)| u.clone())
        .expect("a node of conductor-2");
    let uuid = c1
        .available_node(json!({"uuid": uuid, "name": "takeover"}))
        .await;
    c1.create_port(&uuid, "52:54:00:fa:17:21").await;
    let proxy =
        FailoverProxy::start(vec![c2.listen_addr(), c1.listen_addr(), c3.listen_addr()]).await;
    let disks = image.disks_param();
    let agent = Agent::start(&proxy.url, &["52:54:00:fa:17:21"], &[&disks]);
    c1.wait_agent(&uuid).await;
    image.set_on(&c1, &uuid).await;
    assert_eq!(c3.act(&uuid, json!({"target": "active"})).await.0, 202);
    wait_for(
        "write progress on the node",
        Duration::from_secs(60),
        || async {
            let n = c1.node(&uuid).await;
            n["driver_internal_info"]["deploy_progress"]["bytes_received"]
                .as_u64()
                .filter(|b| *b > 0)
        },
    )
    .await;

    // For reading the agent's command list afterwards: its token and certificate.
    let token = c1.agent_token(&uuid).expect("the agent's token");
    let pem = c2
        .wait_agent_certificate(&uuid, Duration::from_secs(10))
        .await;
    let _ = c2.proc.child.kill();
    let _ = c2.proc.child.wait();
    let done = wait_active(&c1, &uuid, &[&c1, &c3]).await;
    assert_eq!(done["last_error"], Value::Null);
    let survivor =
        &f.owners_without_removed[f.uuids.iter().position(|u| *u == uuid).expect("fixture")];
    wait_for("the node's new owner", Duration::from_secs(20), || async {
        (c1.node(&uuid).await["conductor"] == json!(survivor)).then_some(())
    })
    .await;
    image.assert_on_disk();

    // Every command the agent ran, by name and step: none twice.
    let api = ferrite_tests::AgentApi {
        client: ferrite_tests::agent_client(Some(&pem)).expect("agent client"),
        base: agent.url("https"),
        token,
    };
    let commands: Value = api
        .client
        .get(format!(
            "{}/v1/commands/?agent_token={}",
            api.base, api.token
        ))
        .send()
        .await
        .expect("GET commands")
        .json()
        .await
        .expect("commands json");
    let mut seen = std::collections::BTreeSet::new();
    for cmd in commands["commands"].as_array().expect("commands") {
        let name = cmd["command_name"].as_str().unwrap_or_default().to_string();
        if name.starts_with("get_") {
            continue; // step and state queries may repeat
        }
        let step = cmd["command_result"]["deploy_step"]["step"]
            .as_str()
            .or(cmd["command_result"]["clean_step"]["step"].as_str())
            .unwrap_or_default()
            .to_string();
        assert!(
            seen.insert((name.clone(), step.clone())),
            "{name} {step} sent twice: {commands}"
        );
    }
    assert!(
        seen.iter().any(|(_, step)| step == "write_image"),
        "{commands}"
    );
}

/// `conductor_group`: a group's nodes belong to its conductors alone.
/// When the only conductor of a group dies, the others neither own its
/// nodes nor take over its reservations.
#[tokio::test(flavor = "multi_thread")]
async fn a_conductor_group_keeps_its_nodes_to_its_own_conductors() {
    let url = PgCluster::shared().create_database();
    let c1 = start(&url, "conductor-1").await;
    let _c2 = start(&url, "conductor-2").await;
    let mut flags = vec!["--host", "conductor-3", "--conductor-group", "g2"];
    flags.extend(FAST);
    let mut c3 = Conductor::start_on_db(TestDb::Postgres(url.clone()), &flags).await;
    wait_for(
        "three conductors alive",
        Duration::from_secs(20),
        || async { (alive(&c1).await.values().filter(|a| **a).count() == 3).then_some(()) },
    )
    .await;
    assert_eq!(
        get(&c1, "/v1/conductors/conductor-3").await["conductor_group"],
        "g2"
    );
    // Alive in the table; in every ring after the next rebuild (1 s).
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut default_nodes = Vec::new();
    let mut g2_nodes = Vec::new();
    for i in 0..12 {
        let group = if i % 3 == 0 { "g2" } else { "" };
        let node = c1
            .create_node(json!({"name": format!("grp{i}"), "driver": "fake-hardware",
                                "conductor_group": group}))
            .await;
        let uuid = node["uuid"].as_str().expect("uuid").to_string();
        if group == "g2" {
            g2_nodes.push(uuid);
        } else {
            default_nodes.push(uuid);
        }
    }
    let seen = owners(&c1).await;
    for uuid in &g2_nodes {
        assert_eq!(seen[uuid], json!("conductor-3"), "a g2 node");
    }
    for uuid in &default_nodes {
        assert!(
            seen[uuid] == json!("conductor-1") || seen[uuid] == json!("conductor-2"),
            "a default-group node owned by {}",
            seen[uuid]
        );
    }

    // conductor-3 dies holding a g2 node: nobody else may take it.
    let held = g2_nodes[0].clone();
    assert_eq!(c1.db.set_reservation(&held, Some("conductor-3")), 1);
    let _ = c3.proc.child.kill();
    let _ = c3.proc.child.wait();
    wait_for("conductor-3 dead", Duration::from_secs(20), || async {
        (alive(&c1).await.get("conductor-3") == Some(&false)).then_some(())
    })
    .await;
    // A few rounds of the others' periodic work (1 s each).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let seen = owners(&c1).await;
    for uuid in &g2_nodes {
        assert_eq!(seen[uuid], Value::Null, "a g2 node without its conductor");
    }
    let node = get(&c1, &format!("/v1/nodes/{held}")).await;
    assert_eq!(node["reservation"], "conductor-3", "{node}");
    let history = get(&c1, &format!("/v1/nodes/{held}/history")).await;
    assert!(
        history["history"].as_array().is_some_and(Vec::is_empty),
        "{history}"
    );
    // New g2 nodes are refused while no conductor serves the group.
    let resp = c1
        .request(reqwest::Method::POST, "/v1/nodes")
        .json(&json!({"driver": "fake-hardware", "conductor_group": "g2"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 400);

    // Back again: the group's nodes and the lock are its own again.
    c3.kill_and_restart().await;
    wait_owners(
        &c1,
        &g2_nodes
            .iter()
            .map(|u| (u.clone(), json!("conductor-3")))
            .chain(default_nodes.iter().map(|u| (u.clone(), seen[u].clone())))
            .collect(),
        "g2 back",
    )
    .await;
    let node = get(&c1, &format!("/v1/nodes/{held}")).await;
    assert_eq!(
        node["reservation"],
        Value::Null,
        "its own start frees its locks: {node}"
    );
}

/// The database goes away for 10 s in the middle of a deploy: requests get
/// a clear 503, nothing is lost, and the deploy finishes once it is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_survives_a_database_outage() {
    use ferrite_tests::Agent;

    // writing outlasts the outage
    let image = DeployImage::new(1 << 20).await;
    let cluster = PgCluster::private();
    let url = cluster.create_database();
    let mut flags = vec!["--fast-track", "true", "--heartbeat-timeout", "4"];
    flags.extend(FAST);
    let c = Conductor::start_on_db(TestDb::Postgres(url), &flags).await;
    let uuid = c.available_node(json!({"name": "outage"})).await;
    c.create_port(&uuid, "52:54:00:fa:17:31").await;
    let disks = image.disks_param();
    let _agent = Agent::start(&c.url, &["52:54:00:fa:17:31"], &[&disks]);
    c.wait_agent(&uuid).await;
    image.set_on(&c, &uuid).await;
    assert_eq!(c.act(&uuid, json!({"target": "active"})).await.0, 202);
    wait_for(
        "write progress on the node",
        Duration::from_secs(60),
        || async {
            let n = c.node(&uuid).await;
            n["driver_internal_info"]["deploy_progress"]["bytes_received"]
                .as_u64()
                .filter(|b| *b > 0)
        },
    )
    .await;
    let before = get(&c, &format!("/v1/nodes/{uuid}/ports")).await;

    cluster.stop().expect("stop PostgreSQL");
    let outage = std::time::Instant::now();
    while outage.elapsed() < Duration::from_secs(10) {
        let resp = c
            .request(reqwest::Method::GET, &format!("/v1/nodes/{uuid}"))
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), 503, "during the outage");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    cluster.restart().expect("start PostgreSQL again");

    let done = wait_active(&c, &uuid, &[&c]).await;
    assert_eq!(done["last_error"], Value::Null);
    image.assert_on_disk();
    // The rows afterwards: unlocked (the flow lets go just after it wrote
    // `active`), ports as they were, each state change once.
    c.wait_unlocked(&uuid, Duration::from_secs(10)).await;
    assert_eq!(get(&c, &format!("/v1/nodes/{uuid}/ports")).await, before);
    let history = get(&c, &format!("/v1/nodes/{uuid}/history?detail=true")).await;
    let events: Vec<&str> = history["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    let mut unique = events.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        events.len(),
        "an event recorded twice: {events:?}"
    );
}

async fn start_in(url: &str, host: &str, group: &str) -> Conductor {
    start_in_with(url, host, group, &[]).await
}

async fn start_in_with(url: &str, host: &str, group: &str, extra: &[String]) -> Conductor {
    let mut flags = vec!["--host", host, "--conductor-group", group];
    flags.extend(FAST);
    flags.extend(extra.iter().map(String::as_str));
    Conductor::start_on_db(TestDb::Postgres(url.to_string()), &flags).await
}

/// HTTPS with a certificate for 127.0.0.1 signed by a CA made in `dir`.
fn tls_flags(dir: &std::path::Path) -> Vec<String> {
    let (ca, cert, key) = ferrite_tests::tls::ca_and_server(dir);
    [
        "--tls-cert".to_string(),
        cert.display().to_string(),
        "--tls-key".to_string(),
        key.display().to_string(),
        "--tls-ca".to_string(),
        ca.display().to_string(),
    ]
    .to_vec()
}

/// A request to `c` for `path` with `body`: status, headers and body text.
async fn send(
    c: &Conductor,
    method: reqwest::Method,
    path: &str,
    body: Value,
    extra: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = c.request(method, path).json(&body);
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.expect("body"))
}

/// The Ironic fault's text in an error body.
fn fault(body: &str) -> String {
    serde_json::from_str::<ferrite_protocol::IronicErrorBody>(body)
        .map(|e| e.faultstring())
        .unwrap_or_else(|_| panic!("an Ironic fault: {body}"))
}

fn conductors_in_history(history: &Value) -> Vec<String> {
    history["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|e| e["conductor"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Work on another conductor group's node is the owner's: a verb sent to
/// a g1 conductor for a g2 node is forwarded to g2's conductor, which does
/// it (its name in the history) and whose answer the client gets. A
/// forwarded request is not forwarded again; an unreachable owner is a
/// 503 with Retry-After; a group without a live conductor is Ironic's
/// NoValidHost, and the node is left as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_for_another_groups_node_is_forwarded_to_its_owner() {
    let url = PgCluster::shared().create_database();
    let g1 = start_in(&url, "conductor-g1", "g1").await;
    let mut g2 = start_in(&url, "conductor-g2", "g2").await;
    wait_for("both conductors alive", Duration::from_secs(20), || async {
        (alive(&g1).await.values().filter(|a| **a).count() == 2).then_some(())
    })
    .await;
    // In g1's rings after its next rebuild (1 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let node = g1
        .create_node(json!({"name": "far", "driver": "fake-hardware",
                            "conductor_group": "g2", "automated_clean": false}))
        .await;
    let uuid = node["uuid"].as_str().expect("uuid").to_string();
    assert_eq!(node["conductor"], "conductor-g2");

    // 1. manage through g1: g2's conductor does it; the answer is g2's,
    // its Location names the API the client asked.
    let (code, headers, body) = send(
        &g1,
        reqwest::Method::PUT,
        &format!("/v1/nodes/{uuid}/states/provision"),
        json!({"target": "manage"}),
        &[],
    )
    .await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(
        headers["location"],
        format!("{}/v1/nodes/{uuid}/states", g1.url).as_str()
    );
    g1.wait_state(&uuid, "manageable", Duration::from_secs(30))
        .await;
    g1.wait_unlocked(&uuid, Duration::from_secs(30)).await;
    let history = get(&g1, &format!("/v1/nodes/{uuid}/history?detail=true")).await;
    let by = conductors_in_history(&history);
    assert!(!by.is_empty(), "{history}");
    assert!(by.iter().all(|c| c == "conductor-g2"), "{history}");
    assert!(
        g1.proc
            .log_text()
            .contains("forwarding the request to the node's conductor"),
        "g1's log"
    );
    assert!(
        g2.proc.log_text().contains("serving a forwarded request"),
        "g2's log"
    );

    // 2. Power and boot device through g1, done by g2 (fake hardware).
    let (code, _, body) = send(
        &g1,
        reqwest::Method::PUT,
        &format!("/v1/nodes/{uuid}/states/power"),
        json!({"target": "power on"}),
        &[],
    )
    .await;
    assert_eq!(code, 202, "{body}");
    wait_for("power on", Duration::from_secs(30), || async {
        (g1.node(&uuid).await["power_state"] == "power on").then_some(())
    })
    .await;
    // The power action holds the node's lock until it is recorded.
    g1.wait_unlocked(&uuid, Duration::from_secs(30)).await;
    let (code, _, body) = send(
        &g1,
        reqwest::Method::PUT,
        &format!("/v1/nodes/{uuid}/management/boot_device"),
        json!({"boot_device": "pxe"}),
        &[],
    )
    .await;
    assert_eq!(code, 204, "{body}");
    // An error is the owner's too, word for word.
    let bad = json!({"target": "deploy-me"});
    let path = format!("/v1/nodes/{uuid}/states/provision");
    let direct = send(&g2, reqwest::Method::PUT, &path, bad.clone(), &[]).await;
    let forwarded = send(&g1, reqwest::Method::PUT, &path, bad, &[]).await;
    assert_eq!(direct.0, 400, "{}", direct.2);
    assert_eq!((forwarded.0, &forwarded.2), (direct.0, &direct.2));
    // The agent's heartbeat as well (no token for this node: refused).
    let beat = json!({"callback_url": "http://127.0.0.1:9999", "agent_version": "13.0.0"});
    let path = format!("/v1/heartbeat/{uuid}");
    let direct = send(&g2, reqwest::Method::POST, &path, beat.clone(), &[]).await;
    let served = |c: &Conductor| {
        c.proc
            .log_text()
            .matches("serving a forwarded request")
            .count()
    };
    let before = served(&g2);
    let forwarded = send(&g1, reqwest::Method::POST, &path, beat.clone(), &[]).await;
    assert_eq!((forwarded.0, &forwarded.2), (direct.0, &direct.2));
    wait_for("g2 served the beat", Duration::from_secs(5), || async {
        (served(&g2) == before + 1).then_some(())
    })
    .await;

    // 3. A forwarded request is never forwarded again: g1 is not of the
    // node's group, so it asks for a retry and leaves the node alone.
    let before = served(&g2);
    let (code, headers, body) = send(
        &g1,
        reqwest::Method::PUT,
        &format!("/v1/nodes/{uuid}/states/provision"),
        json!({"target": "provide"}),
        &[("X-Ferrite-Forwarded-By", "conductor-elsewhere")],
    )
    .await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("does not forward a request that was already forwarded"),
        "{body}"
    );
    assert_eq!(headers["retry-after"], "10");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(g1.node(&uuid).await["provision_state"], "manageable");
    assert_eq!(served(&g2), before);

    // 4. g2's conductor dies: until its row goes stale (4 s) the ring still
    // names it, and the request gets a 503 with Retry-After.
    let _ = g2.proc.child.kill();
    let _ = g2.proc.child.wait();
    let (code, headers, body) = send(
        &g1,
        reqwest::Method::PUT,
        &format!("/v1/nodes/{uuid}/states/provision"),
        json!({"target": "provide"}),
        &[],
    )
    .await;
    assert_eq!(code, 503, "{body}");
    assert!(fault(&body).contains("could not be reached"), "{body}");
    assert_eq!(headers["retry-after"], "10");

    // 5. Once g1's ring has no conductor for g2: Ironic's NoValidHost (a
    // 404 for the verbs, a 400 for the heartbeat), and nothing changes.
    wait_for("conductor-g2 dead", Duration::from_secs(20), || async {
        (alive(&g1).await.get("conductor-g2") == Some(&false)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let no_host = "No valid host was found. Reason: No conductor service registered which supports driver fake-hardware for conductor group \"g2\".";
    let (code, _, body) = send(
        &g1,
        reqwest::Method::PUT,
        &format!("/v1/nodes/{uuid}/states/provision"),
        json!({"target": "provide"}),
        &[],
    )
    .await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(fault(&body), no_host);
    let (code, _, body) = send(&g1, reqwest::Method::POST, &path, beat, &[]).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(fault(&body), no_host);
    let after = g1.node(&uuid).await;
    assert_eq!(after["provision_state"], "manageable", "{after}");
    assert_eq!(after["reservation"], Value::Null, "{after}");
    assert_eq!(
        conductors_in_history(&get(&g1, &format!("/v1/nodes/{uuid}/history")).await).len(),
        by.len(),
        "no new history"
    );
}

/// Peers on https: the forwarding conductor verifies the owner against
/// its `--tls-ca`. One that does not trust the owner's CA does not send
/// the request (503), and the node is untouched.
#[tokio::test(flavor = "multi_thread")]
async fn forwarding_to_an_https_owner_verifies_its_certificate() {
    let url = PgCluster::shared().create_database();
    let shared = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    let tls = tls_flags(shared.path());
    let g1 = start_in_with(&url, "conductor-g1", "g1", &tls).await;
    let g2 = start_in_with(&url, "conductor-g2", "g2", &tls).await;
    let stranger = start_in_with(&url, "conductor-g1b", "g1", &tls_flags(other.path())).await;
    assert!(g1.url.starts_with("https://"), "{}", g1.url);
    wait_for(
        "three conductors alive",
        Duration::from_secs(20),
        || async { (alive(&g1).await.values().filter(|a| **a).count() == 3).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let node = g1
        .create_node(json!({"name": "far", "driver": "fake-hardware", "conductor_group": "g2"}))
        .await;
    let uuid = node["uuid"].as_str().expect("uuid").to_string();
    let path = format!("/v1/nodes/{uuid}/states/provision");

    // The owner's CA is not the stranger's: refused before any request.
    let (code, _, body) = send(
        &stranger,
        reqwest::Method::PUT,
        &path,
        json!({"target": "manage"}),
        &[],
    )
    .await;
    assert_eq!(code, 503, "{body}");
    assert!(fault(&body).contains("could not be reached"), "{body}");
    assert!(fault(&body).contains("invalid peer certificate"), "{body}");
    assert_eq!(g1.node(&uuid).await["provision_state"], "enroll");
    assert!(
        !g2.proc.log_text().contains("serving a forwarded request"),
        "g2 served a request over an unverified connection"
    );

    let (code, _, body) = send(
        &g1,
        reqwest::Method::PUT,
        &path,
        json!({"target": "manage"}),
        &[],
    )
    .await;
    assert_eq!(code, 202, "{body}");
    g1.wait_state(&uuid, "manageable", Duration::from_secs(30))
        .await;
    let history = get(&g1, &format!("/v1/nodes/{uuid}/history?detail=true")).await;
    let by = conductors_in_history(&history);
    assert!(
        !by.is_empty() && by.iter().all(|c| c == "conductor-g2"),
        "{history}"
    );
}

/// No step command twice: the reply to `write_image` is held back until
/// PostgreSQL is stopped, so the conductor hears the command started but
/// cannot record its id. When the database is back, the next heartbeat
/// finds the command the agent started (the intent written before the
/// send says which) and follows it: the agent ran `write_image` once, and
/// the image is on the disk.
#[tokio::test(flavor = "multi_thread")]
async fn a_command_whose_id_was_not_recorded_is_not_sent_again() {
    use ferrite_tests::hold_proxy::HoldProxy;
    use ferrite_tests::Agent;

    // still writing when the database is back
    let image = DeployImage::new(4 << 20).await;
    let cluster = PgCluster::private();
    let url = cluster.create_database();
    let mut flags = vec![
        "--fast-track",
        "true",
        "--heartbeat-timeout",
        "3",
        "--require-tls",
        "false",
    ];
    flags.extend(FAST);
    let c = Conductor::start_on_db(TestDb::Postgres(url), &flags).await;
    let uuid = c.available_node(json!({"name": "intent"})).await;
    c.create_port(&uuid, "52:54:00:fa:17:41").await;

    // The agent speaks plain HTTP (so the proxy can read the requests) and
    // announces the proxy's port as its own.
    let agent_port = ferrite_tests::free_port();
    let mut proxy = HoldProxy::start(
        ([127, 0, 0, 1], agent_port).into(),
        "\"step\":\"write_image\"",
    )
    .await;
    let params = [
        image.disks_param(),
        "ipa-enable-auto-tls=0".to_string(),
        format!("ipa-listen-port={agent_port}"),
        format!("ipa-advertise-port={}", proxy.port),
    ];
    let params: Vec<&str> = params.iter().map(String::as_str).collect();
    let _agent = Agent::start(&c.url, &["52:54:00:fa:17:41"], &params);
    c.wait_agent(&uuid).await;
    image.set_on(&c, &uuid).await;
    assert_eq!(c.act(&uuid, json!({"target": "active"})).await.0, 202);
    tokio::time::timeout(Duration::from_secs(60), proxy.wait_held())
        .await
        .expect("write_image sent to the agent");
    let token = c.agent_token(&uuid).expect("the agent's token");
    let intent = c.node(&uuid).await["driver_internal_info"]["agent_command_intent"].clone();
    assert_eq!(intent["command"], "deploy.execute_deploy_step", "{intent}");

    // The agent has started write_image; the conductor learns it only now,
    // with its database gone.
    cluster.stop().expect("stop PostgreSQL");
    proxy.release();
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.restart().expect("start PostgreSQL again");

    let done = wait_active(&c, &uuid, &[&c]).await;
    assert_eq!(done["last_error"], Value::Null);
    image.assert_on_disk();
    let commands: Value = reqwest::get(format!(
        "http://127.0.0.1:{agent_port}/v1/commands/?agent_token={token}"
    ))
    .await
    .expect("GET commands")
    .json()
    .await
    .expect("commands json");
    let writes = commands["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .filter(|cmd| cmd["command_result"]["deploy_step"]["step"] == "write_image")
        .count();
    assert_eq!(writes, 1, "{commands}");
}
