//! PostgreSQL over TLS: the store and a conductor reach a TLS-only server
//! (`hostssl`) whose certificate a test CA issued, and the server sees
//! their sessions encrypted; a foreign CA, a wrong host name, plaintext
//! over TCP, and a server without TLS are each refused at startup, saying
//! why and never the password.

use std::path::Path;

use ferrite_conductor::store::{ConnectOptions, DatabaseUrl, Store, StoreError};
use ferrite_tests::pg::{PgCluster, TLS_PASSWORD};
use ferrite_tests::{Conductor, TestDb, TEST_LOG};
use serde_json::json;

fn options(ca_file: Option<&Path>) -> ConnectOptions {
    ConnectOptions {
        password: Some(TLS_PASSWORD.into()),
        ca_file: ca_file.map(Path::to_path_buf),
    }
}

fn database_name(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_string()
}

/// The conductor's TCP sessions on `database`, as the server sees them:
/// whether each is encrypted, and its TLS version.
fn conductor_sessions(cluster: &PgCluster, database: &str) -> Vec<(bool, Option<String>)> {
    let database = database.to_string();
    ferrite_tests::pg::blocking(&cluster.admin_url("postgres"), move |c| {
        Box::pin(async move {
            let rows = c
                .query(
                    "SELECT s.ssl, s.version FROM pg_stat_ssl s \
                     JOIN pg_stat_activity a USING (pid) \
                     WHERE a.application_name = 'ferrite-conductor' AND a.datname = $1 \
                     AND a.client_addr IS NOT NULL",
                    &[&database],
                )
                .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    })
    .unwrap()
}

fn assert_encrypted(sessions: &[(bool, Option<String>)]) {
    assert!(!sessions.is_empty(), "no conductor session on the server");
    for (ssl, version) in sessions {
        assert!(ssl, "a plaintext session: {sessions:?}");
        assert!(
            version.as_deref().is_some_and(|v| v.starts_with("TLSv1.")),
            "{sessions:?}"
        );
    }
}

async fn refused(url: String, options: &ConnectOptions) -> String {
    let error = Store::connect(&DatabaseUrl::Postgres(url), options, 2)
        .await
        .err()
        .expect("the connection is refused");
    let text = error.to_string();
    assert!(!text.contains(TLS_PASSWORD), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_speaks_verified_tls_to_a_tls_only_server() {
    let cluster = PgCluster::shared_tls();
    let url = cluster.create_database();
    let ca = cluster.ca_file();
    let in_url = format!(
        "?sslmode=verify-full&sslrootcert={}",
        ca.display().to_string().replace('/', "%2F")
    );
    // No sslmode is require; the CA by flag or as libpq's sslrootcert=.
    let mut stores = Vec::new();
    for (query, ca_file) in [
        ("", Some(ca)),
        ("?sslmode=require", Some(ca)),
        (in_url.as_str(), None),
    ] {
        let store = Store::connect(
            &DatabaseUrl::Postgres(format!("{url}{query}")),
            &options(ca_file),
            2,
        )
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
        stores.push(store);
    }
    stores[0]
        .create_node(&super::node("5a1c0000-0000-4000-8000-000000000017", "tls"))
        .await
        .unwrap();
    for store in &stores {
        let node = store.get_node("tls").await.unwrap();
        assert_eq!(node.uuid, "5a1c0000-0000-4000-8000-000000000017");
    }
    let sessions = conductor_sessions(cluster, &database_name(&url));
    assert!(sessions.len() >= stores.len(), "{sessions:?}");
    assert_encrypted(&sessions);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_ca_or_a_wrong_host_name_is_refused_by_name() {
    let cluster = PgCluster::shared_tls();
    let url = cluster.create_database();
    let other = tempfile::tempdir().unwrap();
    let (foreign_ca, _, _) = ferrite_tests::tls::ca_and_server(other.path());

    let text = refused(
        format!("{url}?sslmode=require"),
        &options(Some(&foreign_ca)),
    )
    .await;
    assert!(text.contains("database unavailable"), "{text}");
    // BadSignature: the foreign CA bears the same name as the true one.
    assert!(
        text.contains("error performing TLS handshake: invalid peer certificate: BadSignature"),
        "{text}"
    );
    assert!(
        text.contains("must be issued by a CA in --database-ca-file"),
        "{text}"
    );

    // The right CA, but the URL names a host the certificate is not for
    // (hostaddr= still reaches 127.0.0.1).
    let wrong_name = format!(
        "postgresql://ferrite@db.invalid:{}/{}?hostaddr=127.0.0.1&sslmode=verify-full",
        cluster.port,
        database_name(&url)
    );
    let text = refused(wrong_name, &options(Some(cluster.ca_file()))).await;
    assert!(
        text.contains("certificate not valid for name \"db.invalid\""),
        "{text}"
    );
    assert!(
        text.contains("the host in the URL must be a name"),
        "{text}"
    );

    // A conductor so configured does not start, and says why and where.
    let password = other.path().join("password");
    std::fs::write(&password, format!("{TLS_PASSWORD}\n")).unwrap();
    let out = std::process::Command::new(ferrite_tests::bin("ferrite-conductor"))
        .args(["--listen", "127.0.0.1:0", "--auth-strategy", "noauth"])
        .arg("--database")
        .arg(format!("{url}?sslmode=verify-full"))
        .arg("--database-ca-file")
        .arg(&foreign_ca)
        .arg("--database-password-file")
        .arg(&password)
        .arg("--data-dir")
        .arg(other.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "opening the database postgresql://127.0.0.1:{}/{}",
            cluster.port,
            database_name(&url)
        )),
        "{stderr}"
    );
    assert!(stderr.contains("invalid peer certificate"), "{stderr}");
    assert!(!stderr.contains(TLS_PASSWORD), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_is_refused_by_a_tls_server_and_tls_required_of_a_plain_one() {
    let cluster = PgCluster::shared_tls();
    let url = cluster.create_database();
    let text = refused(format!("{url}?sslmode=disable"), &options(None)).await;
    assert!(text.contains("no pg_hba.conf entry"), "{text}");
    assert!(text.contains("no encryption"), "{text}");
    // The Unix socket has no TLS to offer: without sslmode, none is asked.
    let socket = cluster.admin_url(&database_name(&url));
    Store::connect(&DatabaseUrl::Postgres(socket), &options(None), 2)
        .await
        .unwrap();

    // The shared cluster has no TLS: required by default, so refused.
    let plain = PgCluster::shared().create_database();
    let required = plain.replace("?sslmode=disable", "");
    assert_ne!(required, plain);
    let text = refused(required, &options(Some(cluster.ca_file()))).await;
    assert!(
        text.contains("error performing TLS handshake: server does not support TLS"),
        "{text}"
    );
    // Unless it is asked for only if offered.
    let preferred = plain.replace("sslmode=disable", "sslmode=prefer");
    Store::connect(
        &DatabaseUrl::Postgres(preferred),
        &options(Some(cluster.ca_file())),
        2,
    )
    .await
    .unwrap();
    let text = refused(plain.replace("disable", "allow"), &options(None)).await;
    assert!(text.contains("unsupported sslmode=allow"), "{text}");
    assert!(matches!(
        Store::connect(
            &DatabaseUrl::Postgres(plain.replace("disable", "allow")),
            &options(None),
            2
        )
        .await,
        Err(StoreError::Config(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conductor_on_a_tls_only_postgresql_serves_the_api() {
    let cluster = PgCluster::shared_tls();
    let url = cluster.create_database();
    let secrets = tempfile::tempdir().unwrap();
    let password = secrets.path().join("password");
    std::fs::write(&password, format!("{TLS_PASSWORD}\n")).unwrap();
    let ca = cluster.ca_file().display().to_string();
    let password = password.display().to_string();
    let c = Conductor::start_with(
        "127.0.0.1",
        Some(TestDb::Postgres(format!("{url}?sslmode=require"))),
        &[
            "--database-ca-file",
            &ca,
            "--database-password-file",
            &password,
        ],
        TEST_LOG,
    )
    .await;
    let created = c
        .create_node(json!({"driver": "fake-hardware", "name": "over-tls"}))
        .await;
    let resp = c
        .request(reqwest::Method::GET, "/v1/nodes")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    let nodes = body["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{body}");
    assert_eq!(nodes[0]["uuid"], created["uuid"]);
    assert_encrypted(&conductor_sessions(cluster, &database_name(&url)));
}
