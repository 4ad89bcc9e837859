//! The ipmitool power driver against a BMC speaking real IPMI 2.0 over
//! UDP on 127.0.0.1 (pyghmi's server side, tests/fixtures/fake_bmc.py).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrite_tests::{wait_for, Conductor};
use serde_json::{json, Value};

struct Bmc {
    child: std::process::Child,
    port: u16,
    state: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Bmc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bmc {
    fn state(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(&self.state).unwrap_or_default())
            .unwrap_or(Value::Null)
    }
}

fn start_bmc() -> Bmc {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("../build/bmc-venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/setup",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap()
        .port();
    let state = dir.path().join("bmc.json");
    let log = std::fs::File::create(dir.path().join("bmc.log")).unwrap();
    let child = Command::new(python)
        .arg(root.join("fixtures/fake_bmc.py"))
        .arg(port.to_string())
        .arg(&state)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("fake BMC");
    Bmc {
        child,
        port,
        state,
        _dir: dir,
    }
}

async fn manage(c: &Conductor, uuid: &str) -> Value {
    assert_eq!(c.act(uuid, json!({"target": "manage"})).await.0, 202);
    wait_for("verification", Duration::from_secs(60), || {
        let n = c.node(uuid);
        async move {
            let n = n.await;
            (n["provision_state"] == "manageable" || !n["last_error"].is_null()).then_some(n)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn ipmitool_power_and_boot_device() {
    let bmc = start_bmc();
    wait_for("the BMC", Duration::from_secs(30), || {
        let ready = bmc.state()["power"].is_string();
        async move { ready.then_some(()) }
    })
    .await;
    let c = Conductor::start(&[]).await;
    let info = |password: &str| {
        json!({"ipmi_address": "127.0.0.1", "ipmi_port": bmc.port.to_string(),
               "ipmi_username": "admin", "ipmi_password": password})
    };
    let node = c
        .create_node(json!({"driver": "ipmi", "name": "ipmi-0", "driver_info": info("password")}))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    let managed = manage(&c, &uuid).await;
    assert_eq!(managed["provision_state"], "manageable", "{managed}");
    assert_eq!(managed["power_state"], "power off");

    assert_eq!(c.set_power(&uuid, "power on").await, 202);
    wait_for("power on", Duration::from_secs(60), || {
        let n = c.node(&uuid);
        async move { (n.await["power_state"] == "power on").then_some(()) }
    })
    .await;
    assert_eq!(bmc.state()["power"], "on");

    assert_eq!(c.set_boot_device(&uuid, "pxe", true).await, 204);
    assert_eq!(bmc.state()["boot_device"], "network");
    assert_eq!(bmc.state()["persistent"], true);

    // Wrong credentials: verification fails back to enroll, saying why.
    let bad = c
        .create_node(json!({"driver": "ipmi", "name": "ipmi-bad", "driver_info": info("wrong")}))
        .await;
    let bad_uuid = bad["uuid"].as_str().unwrap().to_string();
    let failed = manage(&c, &bad_uuid).await;
    assert_eq!(failed["provision_state"], "enroll", "{failed}");
    let err = failed["last_error"].as_str().unwrap();
    assert!(err.contains("ipmitool power status failed"), "{err}");
}
