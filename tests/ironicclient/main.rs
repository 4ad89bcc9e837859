//! The real `baremetal` CLI (python-ironicclient from PyPI) against
//! ferrite-conductor: the commands operators type must work unchanged.

mod session;

use std::path::PathBuf;
use std::process::Command;

use ferrite_tests::Conductor;
use serde_json::Value;

/// The CLI from the venv `scripts/setup` makes (override: FERRITE_BAREMETAL_CLI).
fn baremetal_cli() -> PathBuf {
    let path = std::env::var_os("FERRITE_BAREMETAL_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../build/venv/bin/baremetal")
        });
    assert!(
        path.exists(),
        "{} missing: run scripts/setup (or scripts/test)",
        path.display()
    );
    path
}

fn run(conductor: &Conductor, args: &[&str]) -> String {
    let out = Command::new(baremetal_cli())
        .args(args)
        .env("OS_ENDPOINT", &conductor.url)
        .env("OS_AUTH_TYPE", "http_basic")
        .env("OS_USERNAME", ferrite_tests::API_USER)
        .env("OS_PASSWORD", ferrite_tests::API_PASSWORD)
        .env_remove("OS_CLOUD")
        .output()
        .expect("run baremetal");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "baremetal {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json(conductor: &Conductor, args: &[&str]) -> Value {
    let mut full = args.to_vec();
    full.extend(["-f", "json"]);
    serde_json::from_str(&run(conductor, &full)).expect("CLI JSON")
}

#[tokio::test]
async fn baremetal_cli_manages_nodes_and_ports() {
    let conductor = Conductor::start(&[]).await;
    let created = json(
        &conductor,
        &[
            "node",
            "create",
            "--driver",
            "ipmi",
            "--name",
            "rack1-u07",
            "--driver-info",
            "ipmi_address=192.0.2.7",
            "--property",
            "cpu_arch=x86_64",
        ],
    );
    let uuid = created["uuid"].as_str().expect("uuid").to_string();
    assert_eq!(created["provision_state"], "enroll");
    assert_eq!(created["driver_info"]["ipmi_address"], "192.0.2.7");

    run(
        &conductor,
        &[
            "node",
            "set",
            "rack1-u07",
            "--property",
            "memory_mb=4096",
            "--resource-class",
            "baremetal",
        ],
    );
    let shown = json(&conductor, &["node", "show", "rack1-u07"]);
    assert_eq!(
        shown["properties"]["memory_mb"], 4096,
        "the CLI sends numbers as numbers"
    );
    assert_eq!(shown["resource_class"], "baremetal");

    let port = json(
        &conductor,
        &["port", "create", "52:54:00:dd:00:01", "--node", &uuid],
    );
    assert_eq!(port["node_uuid"], uuid);

    let nodes = json(&conductor, &["node", "list"]);
    let row = &nodes.as_array().expect("list")[0];
    assert_eq!(row["uuid"], uuid);
    assert_eq!(row["name"], "rack1-u07");
    assert_eq!(row["provision_state"], "enroll");
    let ports = json(&conductor, &["port", "list", "--node", &uuid]);
    assert_eq!(
        ports.as_array().expect("ports")[0]["address"],
        "52:54:00:dd:00:01"
    );

    // What the CLI did is what the store holds.
    let api = conductor.node(&uuid).await;
    assert_eq!(api["properties"]["cpu_arch"], "x86_64");
}

/// `baremetal node inventory save` reads what in-band inspection stored;
/// before that it gets Ironic's 404.
#[tokio::test]
async fn baremetal_cli_reads_the_inspected_inventory() {
    let conductor = Conductor::start(&[]).await;
    let node = json(
        &conductor,
        &[
            "node",
            "create",
            "--driver",
            "fake-hardware",
            "--name",
            "insp-1",
        ],
    );
    let uuid = node["uuid"].as_str().expect("uuid").to_string();
    run(
        &conductor,
        &["port", "create", "52:54:00:dd:00:21", "--node", &uuid],
    );

    let missing = Command::new(baremetal_cli())
        .args(["node", "inventory", "save", "insp-1"])
        .env("OS_ENDPOINT", &conductor.url)
        .env("OS_AUTH_TYPE", "http_basic")
        .env("OS_USERNAME", ferrite_tests::API_USER)
        .env("OS_PASSWORD", ferrite_tests::API_PASSWORD)
        .env_remove("OS_CLOUD")
        .output()
        .expect("run baremetal");
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains(&format!(
            "Node inventory record for node {uuid} could not be found"
        )),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    // The state machine that enters `inspect wait` is elsewhere: set it directly.
    conductor.force_state(&uuid, "inspect wait");
    let body = serde_json::json!({
        "inventory": {"interfaces": [{"name": "eth0", "mac_address": "52:54:00:dd:00:21"}],
                      "cpu": {"count": 2, "architecture": "x86_64"}, "memory": {"physical_mb": 2048}},
        "error": null,
    });
    let resp = conductor
        .http
        .post(format!("{}/v1/continue_inspection", conductor.url))
        .json(&body)
        .send()
        .await
        .expect("POST continue_inspection");
    assert_eq!(resp.status(), 202);

    let saved: Value =
        serde_json::from_str(&run(&conductor, &["node", "inventory", "save", "insp-1"]))
            .expect("JSON");
    assert_eq!(
        saved["inventory"]["interfaces"][0]["mac_address"],
        "52:54:00:dd:00:21"
    );
    assert_eq!(saved["plugin_data"], serde_json::json!({"error": null}));
    let shown = json(
        &conductor,
        &["node", "show", "insp-1", "--fields", "properties"],
    );
    assert_eq!(shown["properties"]["memory_mb"], 2048);
}

/// The CLI with `args` and only the `env` given (no OS_* from outside).
fn cli(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(baremetal_cli());
    cmd.args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OS_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied())
        .output()
        .expect("run baremetal")
}

#[tokio::test]
async fn baremetal_cli_needs_credentials_with_http_basic() {
    let c = Conductor::start(&[]).await;
    let anon = cli(
        &["node", "list"],
        &[("OS_ENDPOINT", &c.url), ("OS_AUTH_TYPE", "none")],
    );
    let err = String::from_utf8_lossy(&anon.stderr);
    assert!(!anon.status.success());
    assert!(err.contains("Unauthorized (HTTP 401)"), "{err}");
    let (user, good) = (ferrite_tests::API_USER, ferrite_tests::API_PASSWORD);
    let with = |password: &str| {
        cli(
            &[
                "--os-auth-type",
                "http_basic",
                "--os-endpoint",
                &c.url,
                "--os-username",
                user,
                "--os-password",
                password,
                "node",
                "list",
                "-f",
                "json",
            ],
            &[],
        )
    };
    let wrong = with("wrong-password");
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success());
    assert!(err.contains("Unauthorized (HTTP 401)"), "{err}");
    let ok = with(good);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&ok.stdout).unwrap(),
        serde_json::json!([])
    );
}

#[tokio::test]
async fn baremetal_cli_over_https_with_the_ca() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ferrite_tests::tls::ca_and_server(certs.path());
    let (ca, cert, key) = (
        ca.display().to_string(),
        cert.display().to_string(),
        key.display().to_string(),
    );
    let c = Conductor::start(&["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &ca]).await;
    assert!(c.url.starts_with("https://"));
    let env = [
        ("OS_ENDPOINT", c.url.as_str()),
        ("OS_AUTH_TYPE", "http_basic"),
        ("OS_USERNAME", ferrite_tests::API_USER),
        ("OS_PASSWORD", ferrite_tests::API_PASSWORD),
    ];
    let ok = cli(
        &[
            "--os-cacert",
            &ca,
            "node",
            "create",
            "--driver",
            "fake-hardware",
            "--name",
            "tls-1",
        ],
        &env,
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let listed = cli(&["--os-cacert", &ca, "node", "list", "-f", "json"], &env);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("tls-1"));
    let untrusted = cli(&["node", "list"], &env);
    assert!(!untrusted.status.success());
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(err.contains("SSL") || err.contains("certificate"), "{err}");
}

/// `baremetal node deploy --deploy-steps` (API 1.69): a malformed step is
/// refused with Ironic's schema text, a good one is kept on the node for
/// the deploy (its ramdisk never calls back here).
#[tokio::test(flavor = "multi_thread")]
async fn baremetal_cli_deploys_with_deploy_steps() {
    let c = Conductor::start(&["--automated-clean", "false"]).await;
    let node = json(
        &c,
        &[
            "node",
            "create",
            "--driver",
            "fake-hardware",
            "--name",
            "steps-1",
        ],
    );
    let uuid = node["uuid"].as_str().expect("uuid").to_string();
    run(&c, &["node", "manage", "--wait", "30", &uuid]);
    run(&c, &["node", "provide", "--wait", "30", &uuid]);
    run(
        &c,
        &[
            "node",
            "set",
            &uuid,
            "--instance-info",
            "image_source=http://images.example/disk.img",
            "--instance-info",
            "image_checksum=0123456789abcdef0123456789abcdef",
        ],
    );
    let env = [
        ("OS_ENDPOINT", c.url.as_str()),
        ("OS_AUTH_TYPE", "http_basic"),
        ("OS_USERNAME", ferrite_tests::API_USER),
        ("OS_PASSWORD", ferrite_tests::API_PASSWORD),
    ];
    let refused = cli(
        &[
            "node",
            "deploy",
            &uuid,
            "--deploy-steps",
            r#"[{"interface": "deploy", "step": "inject_files", "args": {}}]"#,
        ],
        &env,
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("Invalid deploy_steps: 'priority' is a required property"),
        "{err}"
    );
    assert_eq!(c.node(&uuid).await["provision_state"], "available");

    let steps = r#"[{"interface": "deploy", "step": "inject_files", "args": {"files": []}, "priority": 50}]"#;
    run(&c, &["node", "deploy", &uuid, "--deploy-steps", steps]);
    c.wait_state(&uuid, "wait call-back", std::time::Duration::from_secs(30))
        .await;
    let shown = json(&c, &["node", "show", &uuid]);
    assert_eq!(
        shown["driver_internal_info"]["user_deploy_steps"],
        serde_json::from_str::<Value>(steps).unwrap()
    );
}
