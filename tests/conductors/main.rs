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
