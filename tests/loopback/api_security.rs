//! Who may talk to the conductor, and how: http_basic on every route
//! Ironic protects, the open ramdisk and boot routes, noauth only on
//! request, start refused without usable users, 413 as an Ironic fault,
//! and slow or half-open clients that cannot starve real ones.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrite_tests::{bin, free_port, wait_for, Conductor, API_PASSWORD, API_USER};
use reqwest::Method;
use serde_json::{json, Value};

const NODE: &str = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123";

/// Every route of the API that Ironic protects, with a method it serves.
fn private_routes(node: &str, port: &str) -> Vec<(Method, String)> {
    let n = format!("/v1/nodes/{node}");
    vec![
        (Method::GET, "/v1/nodes".into()),
        (Method::POST, "/v1/nodes".into()),
        (Method::GET, "/v1/nodes/".into()),
        (Method::GET, "/v1/nodes/detail".into()),
        (Method::GET, n.clone()),
        (Method::PATCH, n.clone()),
        (Method::DELETE, n.clone()),
        (Method::GET, format!("{n}/states")),
        (Method::PUT, format!("{n}/states/provision")),
        (Method::PUT, format!("{n}/states/power")),
        (Method::GET, format!("{n}/management/boot_device")),
        (Method::PUT, format!("{n}/management/boot_device")),
        (Method::GET, format!("{n}/validate")),
        (Method::GET, format!("{n}/history")),
        (Method::GET, format!("{n}/history/x")),
        (Method::PUT, format!("{n}/maintenance")),
        (Method::DELETE, format!("{n}/maintenance")),
        (Method::GET, format!("{n}/inventory")),
        (Method::GET, format!("{n}/ports")),
        (Method::GET, format!("{n}/ports/detail")),
        (Method::GET, "/v1/ports".into()),
        (Method::POST, "/v1/ports".into()),
        (Method::GET, "/v1/ports/detail".into()),
        (Method::GET, format!("/v1/ports/{port}")),
        (Method::PATCH, format!("/v1/ports/{port}")),
        (Method::DELETE, format!("/v1/ports/{port}")),
        (Method::GET, "/v1/no-such-thing".into()),
        (Method::GET, "/v1/heartbeat/a/b".into()),
    ]
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn every_private_route_needs_credentials_and_open_routes_stay_open() {
    let c = Conductor::start(&[]).await;
    let node = c.create_node(json!({"driver": "fake-hardware"})).await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    let port = c.create_port(&uuid, "52:54:00:aa:01:01").await;
    let port = port["uuid"].as_str().unwrap().to_string();
    let anon = reqwest::Client::new();

    for (method, path) in private_routes(&uuid, &port) {
        let url = format!("{}{path}", c.url);
        let r = anon
            .request(method.clone(), &url)
            .header("X-OpenStack-Ironic-API-Version", "latest")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path} without credentials");
        assert_eq!(
            r.headers()["www-authenticate"],
            "Basic realm=\"Baremetal API\""
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body,
            json!({"error": {"message": "Authorization required", "code": 401}})
        );

        let r = anon
            .request(method.clone(), &url)
            .header("Authorization", basic(API_USER, "not-the-password"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path} with a wrong password");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["message"], "Incorrect username or password");

        let r = anon
            .request(method.clone(), &url)
            .header("Authorization", basic("nobody", API_PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path} as an unknown user");
    }
    // Not Basic, or not base64: 400 as Ironic answers.
    for (header, message) in [
        (
            "Digest username=\"x\"",
            "Unsupported authorization type \"Digest\"",
        ),
        ("Basic !!!", "Could not decode authorization token"),
        ("Basic", "Could not parse Authorization header"),
    ] {
        let r = anon
            .get(format!("{}/v1/nodes", c.url))
            .header("Authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{header}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["message"], message);
    }

    // The node is untouched by all of that.
    assert_eq!(c.node(&uuid).await["provision_state"], "enroll");

    // Open: the root documents, the ramdisk's routes, the firmware's files.
    for path in ["/", "/v1", "/v1/", "/boot/boot.ipxe"] {
        let r = anon.get(format!("{}{path}", c.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
    }
    let lookup = anon
        .get(format!(
            "{}/v1/lookup?addresses=52:54:00:aa:01:01&node_uuid={uuid}",
            c.url
        ))
        .header("X-OpenStack-Ironic-API-Version", "1.31")
        .send()
        .await
        .unwrap();
    assert_ne!(lookup.status(), 401, "lookup is open");
    let hb = anon
        .post(format!("{}/v1/heartbeat/{NODE}", c.url))
        .header("X-OpenStack-Ironic-API-Version", "1.31")
        .json(&json!({"callback_url": "https://127.0.0.1:9999"}))
        .send()
        .await
        .unwrap();
    assert_eq!(hb.status(), 404, "heartbeat is open: unknown node");
    let inspect = anon
        .post(format!("{}/v1/continue_inspection", c.url))
        .json(&json!({"inventory": {}}))
        .send()
        .await
        .unwrap();
    assert_ne!(inspect.status(), 401);
    for path in ["/boot/files/deploy.kernel", "/images/disk.qcow2"] {
        let r = anon.get(format!("{}{path}", c.url)).send().await.unwrap();
        assert_eq!(r.status(), 404, "GET {path}: open, and absent");
    }

    // Neither the password nor the header reaches the log.
    let log = c.proc.log_text();
    assert!(log.contains("incorrect username or password"), "{log}");
    assert!(!log.contains("not-the-password") && !log.contains(API_PASSWORD));
    assert!(!log.contains(&basic(API_USER, "not-the-password")[6..]));
}

#[tokio::test]
async fn noauth_only_when_asked_and_warned() {
    let c = Conductor::start(&["--auth-strategy", "noauth"]).await;
    let r = reqwest::get(format!("{}/v1/nodes", c.url)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(c.proc.log_text().contains("API authentication is OFF"));
}

/// The conductor binary run to completion with `flags` in a fresh data
/// dir holding `htpasswd` (if any): exit status and output.
fn start_fails(htpasswd: Option<&str>, flags: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    if let Some(text) = htpasswd {
        std::fs::write(dir.path().join("htpasswd"), text).unwrap();
    }
    let out = Command::new(bin("ferrite-conductor"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(dir.path())
        .args(flags)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "started anyway:\n{text}");
    text
}

#[tokio::test]
async fn start_refused_without_usable_users() {
    let missing = start_fails(None, &[]);
    assert!(
        missing.contains("htpasswd") && missing.contains("--auth-strategy noauth"),
        "{missing}"
    );
    let empty = start_fails(Some("\n\n"), &[]);
    assert!(empty.contains("has no users"), "{empty}");
    let sha = start_fails(Some("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"), &[]);
    assert!(
        sha.contains("\"alice\"") && sha.contains("only bcrypt"),
        "{sha}"
    );
    assert!(!sha.contains("W6ph5Mm5Pz8GgiULbPgzG37mj9g"), "{sha}");
    let dir = tempfile::tempdir().unwrap();
    let unreadable = start_fails(
        None,
        &["--htpasswd-file", &dir.path().display().to_string()],
    );
    assert!(
        unreadable.contains("cannot read the htpasswd file"),
        "{unreadable}"
    );
}

#[test]
fn htpasswd_subcommand_prints_a_bcrypt_line() {
    use std::io::Write;
    let mut child = Command::new(bin("ferrite-conductor"))
        .args(["htpasswd", "--cost", "4", "operator"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let (user, hash) = line.trim().split_once(':').unwrap();
    assert_eq!(user, "operator");
    assert!(hash.starts_with("$2b$04$"), "{hash}");
    assert!(bcrypt::verify("s3cret", hash).unwrap());
}

#[tokio::test]
async fn a_100_mb_body_gets_an_ironic_413() {
    let c = Conductor::start(&[]).await;
    let body = vec![b' '; 100 * 1024 * 1024];
    let r = c
        .request(Method::POST, "/v1/nodes")
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("an answer, not a closed connection");
    assert_eq!(r.status(), 413);
    let fault: Value = r.json().await.unwrap();
    let inner: Value = serde_json::from_str(fault["error_message"].as_str().unwrap()).unwrap();
    assert!(
        inner["faultstring"]
            .as_str()
            .unwrap()
            .contains("Request is too large"),
        "{inner}"
    );
    // The connection's owner is still served.
    let r = c.request(Method::GET, "/v1/nodes").send().await.unwrap();
    assert_eq!(r.status(), 200);
}

fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    assert!(
        hard > 4500,
        "RLIMIT_NOFILE hard limit {hard} is too low for this test"
    );
}

/// `n` connections to `addr`: every third sends a partial request line,
/// the others nothing at all.
fn half_open(addr: &str, n: usize) -> Vec<std::net::TcpStream> {
    use std::io::Write;
    (0..n)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            if i % 3 == 0 {
                let _ = s.write_all(b"GET /v1/nodes HTTP/1.1\r\nHost: x\r\n");
            }
            s
        })
        .collect()
}

#[tokio::test]
async fn two_thousand_half_open_connections_do_not_starve_a_client() {
    raise_nofile();
    let c = Conductor::start(&["--header-read-timeout", "3"]).await;
    let addr = c.url.trim_start_matches("http://").to_string();
    let held = half_open(&addr, 2000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let r = c
        .request(Method::GET, "/v1/nodes")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("answered");
    let took = start.elapsed();
    assert_eq!(r.status(), 200);
    eprintln!("GET /v1/nodes with 2000 half-open connections: {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // And the server lets go of them: each is closed once its header-read
    // deadline passes (a read sees EOF or a reset, not our timeout).
    let reaped = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        held.into_iter()
            .filter(|mut s| {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = [0u8; 64];
                match s.read(&mut buf) {
                    Ok(0) => true,
                    Ok(_) => s.read(&mut buf).is_ok_and(|n| n == 0),
                    Err(e) => {
                        e.kind() != std::io::ErrorKind::WouldBlock
                            && e.kind() != std::io::ErrorKind::TimedOut
                    }
                }
            })
            .count()
    })
    .await
    .unwrap();
    assert_eq!(reaped, 2000, "half-open connections closed by the server");
}

#[tokio::test]
async fn the_connection_cap_logs_and_recovers_when_slow_clients_are_reaped() {
    let c = Conductor::start(&["--max-connections", "20", "--header-read-timeout", "2"]).await;
    let addr = c.url.trim_start_matches("http://").to_string();
    let held = half_open(&addr, 40);
    // A fresh client waits behind the slow ones, then is served once the
    // header-read deadline closes them.
    let start = Instant::now();
    let r = ferrite_tests::api_client()
        .get(format!("{}/v1/nodes", c.url))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .expect("served after the reaping");
    assert_eq!(r.status(), 200);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "the cap did not bite: {took:?}"
    );
    wait_for("the cap's log line", Duration::from_secs(5), || async {
        c.proc
            .log_text()
            .contains("connection cap reached")
            .then_some(())
    })
    .await;
    // Rate-limited: one line for the whole burst.
    assert_eq!(
        c.proc.log_text().matches("connection cap reached").count(),
        1
    );
    drop(held);
}

/// TLS flags for a conductor whose boot files stay on plain HTTP.
fn tls_flags(dir: &Path, boot_port: u16) -> Vec<String> {
    let (ca, cert, key) = ferrite_tests::tls::ca_and_server(dir);
    [
        "--tls-cert",
        &cert.display().to_string(),
        "--tls-key",
        &key.display().to_string(),
        "--tls-ca",
        &ca.display().to_string(),
        "--boot-http-listen",
        &format!("127.0.0.1:{boot_port}"),
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test]
async fn tls_api_the_agent_trusts_the_ca_from_the_boot_script() {
    let certs = tempfile::tempdir().unwrap();
    let boot_port = free_port();
    let flags = tls_flags(certs.path(), boot_port);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let ca = certs.path().join("ca.pem");
    let mac = "52:54:00:aa:02:01";
    let cafile = format!("ipa-cafile={}", ca.display());
    let pair = ferrite_tests::Pair::start(&flags, mac, &[&cafile]).await;
    let c = &pair.conductor;
    assert!(c.url.starts_with("https://127.0.0.1:"), "{}", c.url);
    // Looked up and heartbeated over https (ipa-api-url is c.url).
    c.wait_agent(&pair.uuid).await;

    // Plain HTTP on the TLS port gets no API.
    let plain = c.url.replacen("https://", "http://", 1);
    let r = reqwest::get(format!("{plain}/v1")).await;
    assert!(!r.is_ok_and(|r| r.status().is_success()));

    // Firmware's side, plain HTTP: the script hands over the CA and the
    // parameter the agent reads, and points at the https API.
    let boot = format!("http://127.0.0.1:{boot_port}");
    let script = reqwest::get(format!("{boot}/boot/node/{}.ipxe", mac.replace(':', "-")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        script.contains(&format!(
            "initrd --name ca.pem {boot}/boot/ca.pem /etc/ferrite/ca.pem mode=644"
        )),
        "{script}"
    );
    assert!(
        script.contains("ipa-cafile=/etc/ferrite/ca.pem"),
        "{script}"
    );
    assert!(
        script.contains(&format!("ipa-api-url={}", c.url)),
        "{script}"
    );
    assert!(
        script.contains(&format!("{boot}/boot/files/deploy.kernel")),
        "{script}"
    );
    let served = reqwest::get(format!("{boot}/boot/ca.pem"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(served, std::fs::read_to_string(&ca).unwrap());
    let entry = reqwest::get(format!("{boot}/boot/boot.ipxe"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(entry.contains(&format!("{boot}/boot/node/")), "{entry}");
    // The boot listener serves boot files only.
    let r = ferrite_tests::api_client()
        .get(format!("{boot}/v1/nodes"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn tls_api_an_agent_without_the_ca_says_why_and_keeps_trying() {
    let certs = tempfile::tempdir().unwrap();
    let flags = tls_flags(certs.path(), free_port());
    let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    flags.extend(["--fast-track", "true"]);
    let c = Conductor::start(&flags).await;
    let node = c.create_node(json!({"driver": "fake-hardware"})).await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    let mac = "52:54:00:aa:02:02";
    c.create_port(&uuid, mac).await;
    let agent = ferrite_tests::Agent::start(&c.url, &[mac], &["ipa-lookup-interval=1"]);
    wait_for("two refused attempts", Duration::from_secs(60), || async {
        let log = agent.proc.log_text();
        (log.matches("invalid peer certificate: UnknownIssuer")
            .count()
            >= 2)
            .then_some(())
    })
    .await;
    assert!(c.node(&uuid).await["driver_internal_info"]["agent_url"].is_null());
}
