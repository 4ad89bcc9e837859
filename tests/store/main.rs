//! The store's contract, held by both engines in the same run: SQLite (a
//! temp file) and PostgreSQL (a database in the harness's cluster). Every
//! method, the reservation race, the error mapping, migrations applied
//! once, and a lost database answered with a 503.

mod tls;

use std::sync::Arc;
use std::time::Duration;

use ferrite_conductor::provision_state::ProvisionState;
use ferrite_conductor::store::{
    ConnectOptions, DatabaseUrl, NodeQuery, Page, SortKey, Store, StoreError,
};
use ferrite_protocol::node::{Node, Port};
use ferrite_tests::pg::PgCluster;
use ferrite_tests::{Conductor, TestDb};
use serde_json::json;

/// Each engine, fresh and empty, with a handle to poke its rows directly.
async fn engines() -> Vec<(Store, TestDb, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferrite.sqlite");
    let sqlite = Store::connect(
        &DatabaseUrl::Sqlite(path.clone()),
        &ConnectOptions::default(),
        4,
    )
    .await
    .unwrap();
    let url = PgCluster::shared().create_database();
    let pg = Store::connect(
        &DatabaseUrl::Postgres(url.clone()),
        &ConnectOptions::default(),
        8,
    )
    .await
    .unwrap();
    assert_eq!(pg.engine(), "postgresql");
    vec![
        (sqlite, TestDb::Sqlite(path), Some(dir)),
        (pg, TestDb::Postgres(url), None),
    ]
}

fn node(uuid: &str, name: &str) -> Node {
    Node {
        uuid: uuid.into(),
        name: Some(name.into()),
        driver: "fake-hardware".into(),
        provision_state: "enroll".into(),
        ..Node::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_create_read_update_delete_and_conflict() {
    for (store, _, _keep) in engines().await {
        let engine = store.engine();
        store.create_node(&node("u1", "n1")).await.unwrap();
        assert_eq!(store.get_node("n1").await.unwrap().uuid, "u1", "{engine}");
        assert_eq!(
            store.get_node("u1").await.unwrap().name.as_deref(),
            Some("n1")
        );
        // A name that is another node's UUID: the UUID wins, as Ironic's.
        store.create_node(&node("u2", "u1")).await.unwrap();
        assert_eq!(store.get_node("u1").await.unwrap().uuid, "u1", "{engine}");

        let dup = store.create_node(&node("u3", "n1")).await;
        assert!(
            matches!(dup, Err(StoreError::Conflict(ref m)) if m.contains("n1")),
            "{engine}: {dup:?}"
        );

        let updated = store
            .update_node::<StoreError, _>("u1", |n| {
                n.provision_state = "manageable".into();
                n.uuid = "tampered".into();
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(updated.uuid, "u1", "{engine}: the UUID is not writable");
        assert!(updated.updated_at.is_some());
        assert_eq!(
            store.get_node("u1").await.unwrap().provision_state,
            "manageable"
        );

        let renamed = store
            .update_node::<StoreError, _>("u2", |n| {
                n.name = Some("n1".into());
                Ok(())
            })
            .await;
        assert!(matches!(renamed, Err(StoreError::Conflict(_))), "{engine}");
        assert_eq!(
            store.get_node("u2").await.unwrap().name.as_deref(),
            Some("u1")
        );

        // A refusing closure changes nothing.
        let refused = store
            .update_node::<StoreError, _>("u1", |n| {
                n.provision_state = "active".into();
                Err(StoreError::Conflict("no".into()))
            })
            .await;
        assert!(refused.is_err());
        assert_eq!(
            store.get_node("u1").await.unwrap().provision_state,
            "manageable"
        );

        let listed = store
            .list_nodes(&NodeQuery {
                provision_state: vec!["manageable".into()],
                ..NodeQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), 1, "{engine}");
        assert_eq!(
            store.list_nodes(&NodeQuery::default()).await.unwrap().len(),
            2
        );

        store.delete_node("u1").await.unwrap();
        // Now "u1" is only u2's name.
        assert_eq!(store.get_node("u1").await.unwrap().uuid, "u2", "{engine}");
        store.delete_node("u2").await.unwrap();
        assert!(
            matches!(store.get_node("u2").await, Err(StoreError::NotFound(ref m)) if m == "Node u2 could not be found.")
        );
        assert!(matches!(
            store.delete_node("u1").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.update_node::<StoreError, _>("nope", |_| Ok(())).await,
            Err(StoreError::NotFound(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_of_a_hundred_racing_reservations_wins() {
    for (store, _, _keep) in engines().await {
        let engine = store.engine();
        store.create_node(&node("r1", "race")).await.unwrap();
        let store = Arc::new(store);
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.try_reserve("r1", &format!("host-{i}")).await })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            if task.await.unwrap().unwrap() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "{engine}");
        let holder = store.get_node("r1").await.unwrap().reservation.unwrap();
        // Only the holder releases it.
        store.release("r1", "someone-else").await.unwrap();
        assert_eq!(
            store.get_node("r1").await.unwrap().reservation.as_deref(),
            Some(holder.as_str())
        );
        assert!(!store.try_reserve("r1", "late").await.unwrap());
        assert_eq!(store.release_all(&holder).await.unwrap(), 1, "{engine}");
        assert!(store.try_reserve("r1", "late").await.unwrap());
        store.release("r1", "late").await.unwrap();
        assert_eq!(store.get_node("r1").await.unwrap().reservation, None);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ports_history_and_inventory_belong_to_their_node() {
    for (store, _, _keep) in engines().await {
        let engine = store.engine();
        store.create_node(&node("p1", "ports")).await.unwrap();
        let port = Port {
            uuid: "port-1".into(),
            address: "52:54:00:12:34:56".into(),
            node_uuid: "p1".into(),
            ..Port::default()
        };
        store.create_port(&port).await.unwrap();
        let dup = Port {
            uuid: "port-2".into(),
            ..port.clone()
        };
        assert!(
            matches!(store.create_port(&dup).await, Err(StoreError::Conflict(ref m)) if m.contains("52:54:00:12:34:56")),
            "{engine}"
        );
        let orphan = Port {
            uuid: "port-3".into(),
            address: "52:54:00:12:34:57".into(),
            node_uuid: "missing".into(),
            ..Port::default()
        };
        assert!(store.create_port(&orphan).await.is_err(), "{engine}");
        assert_eq!(
            store
                .port_by_address("52:54:00:12:34:56")
                .await
                .unwrap()
                .unwrap()
                .uuid,
            "port-1"
        );
        assert!(store
            .port_by_address("52:54:00:00:00:00")
            .await
            .unwrap()
            .is_none());
        let mut moved = port.clone();
        moved.address = "52:54:00:12:34:58".into();
        store.update_port(&moved).await.unwrap();
        assert_eq!(
            store.get_port("port-1").await.unwrap().address,
            "52:54:00:12:34:58"
        );
        assert_eq!(store.list_ports(Some("p1")).await.unwrap().len(), 1);
        assert_eq!(store.list_ports(None).await.unwrap().len(), 1);

        store
            .record_event("p1", "INFO", "PROVISIONING", "first", "c1")
            .await
            .unwrap();
        store
            .record_event("p1", "ERROR", "PROVISIONING", "second", "c1")
            .await
            .unwrap();
        let events: Vec<String> = store
            .history("p1")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(events, ["first", "second"], "{engine}");

        store
            .save_inventory("p1", &json!({"a": 1}), &json!({}), "t1")
            .await
            .unwrap();
        store
            .save_inventory("p1", &json!({"a": 2}), &json!({"x": true}), "t2")
            .await
            .unwrap();
        let inventory = store.get_inventory("p1").await.unwrap().unwrap();
        assert_eq!(inventory.inventory, json!({"a": 2}), "{engine}");
        assert_eq!(inventory.created_at, "t2");
        assert!(store
            .save_inventory("missing", &json!({}), &json!({}), "t")
            .await
            .is_err());

        store.delete_node("p1").await.unwrap();
        assert!(
            store.list_ports(None).await.unwrap().is_empty(),
            "{engine}: ports go with the node"
        );
        assert!(store.history("p1").await.unwrap().is_empty());
        assert_eq!(store.get_inventory("p1").await.unwrap(), None);
        assert!(matches!(
            store.delete_port("port-1").await,
            Err(StoreError::NotFound(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_record_reads_degraded_and_refuses_writes() {
    for (store, raw, _keep) in engines().await {
        let engine = store.engine();
        store.create_node(&node("c1", "corrupt")).await.unwrap();
        assert_eq!(raw.set_node("c1", Some("{not json"), None), 1);
        let shown = store.get_node("c1").await.unwrap();
        assert!(shown.maintenance, "{engine}");
        assert_eq!(
            shown.fault.as_deref(),
            Some(ferrite_conductor::store::CORRUPT_FAULT)
        );
        assert_eq!(
            store.list_nodes(&NodeQuery::default()).await.unwrap().len(),
            1
        );
        let write = store.update_node::<StoreError, _>("c1", |_| Ok(())).await;
        assert!(
            matches!(write, Err(StoreError::Corrupt(_))),
            "{engine}: {write:?}"
        );
        assert_eq!(
            raw.node_data("c1").as_deref(),
            Some("{not json"),
            "{engine}: bytes kept"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conductors_starting_together_migrate_once() {
    let url = PgCluster::shared().create_database();
    let database = DatabaseUrl::Postgres(url.clone());
    let opens = (0..3).map(|_| {
        let database = database.clone();
        tokio::spawn(async move {
            Store::connect(&database, &ConnectOptions::default(), 2)
                .await
                .map(|_| ())
        })
    });
    for open in opens {
        open.await.unwrap().unwrap();
    }
    let versions = ferrite_tests::pg::blocking(&url, |c| {
        Box::pin(async move {
            let rows = c
                .query("SELECT version FROM ferrite_schema ORDER BY version", &[])
                .await?;
            Ok(rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>())
        })
    })
    .unwrap();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_or_dead_database_is_a_clear_error() {
    // Nothing listens: the conductor does not start, and says where it failed.
    let closed = ferrite_tests::free_port();
    let url = format!("postgresql://ferrite:s3cret-pw@127.0.0.1:{closed}/none?sslmode=disable");
    let error = Store::connect(
        &DatabaseUrl::Postgres(url.clone()),
        &ConnectOptions::default(),
        2,
    )
    .await
    .err()
    .expect("no database there");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(!error.to_string().contains("s3cret-pw"), "{error}");
    let parsed = DatabaseUrl::parse(&url).unwrap();
    assert!(!format!("{parsed:?}").contains("s3cret-pw"));
    assert!(DatabaseUrl::parse("mysql://x/y").is_err());

    let out = std::process::Command::new(ferrite_tests::bin("ferrite-conductor"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--auth-strategy",
            "noauth",
            "--database",
            &url,
        ])
        .arg("--data-dir")
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "opening the database postgresql://127.0.0.1:{closed}/none"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_outage_is_a_503_then_service_resumes() {
    let cluster = PgCluster::private();
    let url = cluster.create_database();
    let c = Conductor::start_on_db(TestDb::Postgres(url), &["--fast-track", "true"]).await;
    let created = c
        .create_node(json!({"driver": "fake-hardware", "name": "outage"}))
        .await;
    let uuid = created["uuid"].as_str().unwrap().to_string();

    cluster.stop().unwrap();
    for path in ["/v1/nodes", &format!("/v1/nodes/{uuid}")] {
        let resp = c.request(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(resp.status(), 503, "GET {path}");
        assert_eq!(resp.headers()["retry-after"], "10");
        let body: serde_json::Value = resp.json().await.unwrap();
        let fault: serde_json::Value =
            serde_json::from_str(body["error_message"].as_str().unwrap()).unwrap();
        assert!(
            fault["faultstring"]
                .as_str()
                .unwrap()
                .contains("database unavailable"),
            "{fault}"
        );
    }
    cluster.restart().unwrap();
    let node = ferrite_tests::wait_for("the API back", Duration::from_secs(20), || {
        let req = c.request(reqwest::Method::GET, &format!("/v1/nodes/{uuid}"));
        async move {
            let resp = req.send().await.ok()?;
            if resp.status() != 200 {
                return None;
            }
            resp.json::<serde_json::Value>().await.ok()
        }
    })
    .await;
    assert_eq!(node["name"], "outage");
    assert_eq!(node["reservation"], serde_json::Value::Null);
}

/// Filters, sort keys and the marker run in SQL on both engines and agree
/// with sorting the same nodes in memory; rows from before the listing
/// columns existed are filled when the store opens, a corrupt one as in
/// maintenance.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_are_filtered_sorted_and_paged_in_sql() {
    for (store, db, _keep) in engines().await {
        let engine = store.engine();
        let mut all = Vec::new();
        for i in 0..23 {
            let mut n = node(&format!("uuid-{i:02}"), &format!("name-{}", (i * 7) % 23));
            if i % 5 == 0 {
                n.name = None;
            }
            n.driver = if i % 2 == 0 { "ipmi" } else { "redfish" }.into();
            n.maintenance = i % 3 == 0;
            n.instance_uuid = (i % 4 == 0).then(|| format!("inst-{i}"));
            n.conductor_group = if i < 10 { "" } else { "rack2" }.into();
            n.provision_state = if i % 2 == 0 { "available" } else { "active" }.into();
            store.create_node(&n).await.unwrap();
            all.push(n);
        }

        let uuids = |nodes: Vec<Node>| nodes.into_iter().map(|n| n.uuid).collect::<Vec<_>>();
        let query = NodeQuery {
            driver: Some("ipmi".into()),
            maintenance: Some(false),
            ..NodeQuery::default()
        };
        let want: Vec<String> = all
            .iter()
            .filter(|n| n.driver == "ipmi" && !n.maintenance)
            .map(|n| n.uuid.clone())
            .collect();
        assert_eq!(
            uuids(store.list_nodes(&query).await.unwrap()),
            want,
            "{engine}"
        );
        // The same from the columns alone, with what the ring needs.
        let heads = store.list_node_heads(&query).await.unwrap();
        assert_eq!(uuids(heads.clone()), want, "{engine}");
        assert!(heads.iter().all(|h| h.driver == "ipmi" && !h.maintenance));
        let rack2 = store
            .list_node_heads(&NodeQuery {
                conductor_group: Some("rack2".into()),
                ..NodeQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(rack2.len(), 13, "{engine}");
        assert!(rack2.iter().all(|h| h.conductor_group == "rack2"));
        let associated = NodeQuery {
            associated: Some(true),
            conductor_group: Some("rack2".into()),
            ..NodeQuery::default()
        };
        assert_eq!(
            uuids(store.list_nodes(&associated).await.unwrap()),
            ["uuid-12", "uuid-16", "uuid-20"],
            "{engine}"
        );
        let states = NodeQuery::in_states(&[ProvisionState::Active, ProvisionState::Deploying]);
        assert_eq!(
            store.list_nodes(&states).await.unwrap().len(),
            11,
            "{engine}"
        );

        // By name, descending, 4 at a time: the pages join up to the whole
        // order (NULL names sort as empty, ties by enrolment).
        let mut expected = all.clone();
        expected.sort_by(|a, b| {
            let key = |n: &Node| (n.name.clone().unwrap_or_default(), n.uuid.clone());
            key(b).cmp(&key(a))
        });
        let mut paged = Vec::new();
        let mut marker = None;
        loop {
            let page = store
                .list_nodes(&NodeQuery {
                    page: Some(Page {
                        sort: SortKey::column("name").unwrap(),
                        descending: true,
                        marker: marker.clone(),
                        limit: 4,
                    }),
                    ..NodeQuery::default()
                })
                .await
                .unwrap();
            assert!(page.len() <= 4);
            let Some(last) = page.last() else { break };
            marker = Some(last.uuid.clone());
            paged.extend(uuids(page));
        }
        assert_eq!(paged, uuids(expected), "{engine}");

        // Rows from before schema version 6: one intact, one corrupt.
        assert_eq!(db.forget_node_columns("uuid-01"), 1);
        assert_eq!(db.forget_node_columns("uuid-02"), 1);
        assert_eq!(db.set_node("uuid-02", Some("{not json"), None), 1);
        let redfish = NodeQuery {
            driver: Some("redfish".into()),
            ..NodeQuery::default()
        };
        assert!(!uuids(store.list_nodes(&redfish).await.unwrap()).contains(&"uuid-01".into()));
        let reopened = Store::connect(&db.url(), &ConnectOptions::default(), 2)
            .await
            .unwrap();
        assert!(
            uuids(reopened.list_nodes(&redfish).await.unwrap()).contains(&"uuid-01".into()),
            "{engine}: filled from the document"
        );
        let corrupt = NodeQuery {
            maintenance: Some(true),
            fault: Some(ferrite_conductor::store::CORRUPT_FAULT.into()),
            ..NodeQuery::default()
        };
        assert_eq!(
            uuids(reopened.list_nodes(&corrupt).await.unwrap()),
            ["uuid-02"],
            "{engine}"
        );
    }
}
