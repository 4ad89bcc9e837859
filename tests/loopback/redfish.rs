//! Redfish power and boot device against a real Redfish service on
//! 127.0.0.1: sushy-tools' emulator (from PyPI) with its fake system
//! driver, which, like a BMC, applies power changes after a delay.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrite_tests::{free_port, wait_for, Conductor};
use serde_json::{json, Value};

pub(crate) const SYSTEM: &str = "27946b59-9e44-4fa7-8e91-f3527a1ef094";

/// sushy-emulator with one fake system; its state (power included) lives
/// in the temp dir, so it survives `stop` and `restart`.
pub(crate) struct Emulator {
    child: Option<std::process::Child>,
    port: u16,
    pub(crate) url: String,
    dir: tempfile::TempDir,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Emulator {
    /// The BMC goes away: connections to it are refused.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The BMC is back, on the same address, with the state it had.
    pub(crate) async fn restart(&mut self) {
        self.stop();
        self.child = Some(spawn_emulator(self.dir.path(), self.port));
        wait_ready(&self.url).await;
    }
}

fn spawn_emulator(dir: &std::path::Path, port: u16) -> std::process::Child {
    let bin =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../build/bmc-venv/bin/sushy-emulator");
    assert!(bin.exists(), "{} missing: run scripts/setup", bin.display());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("emulator.log"))
        .unwrap();
    Command::new(bin)
        .args([
            "--fake",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--config",
        ])
        .arg(dir.join("emulator.conf"))
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("sushy-emulator")
}

async fn wait_ready(url: &str) {
    let probe = format!("{url}/redfish/v1/Systems/{SYSTEM}");
    wait_for("the Redfish emulator", Duration::from_secs(60), || {
        let probe = probe.clone();
        async move {
            reqwest::get(&probe)
                .await
                .ok()
                .filter(|r| r.status().is_success())
        }
    })
    .await;
}

pub(crate) async fn start_emulator() -> Emulator {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("emulator.conf"),
        format!(
            "SUSHY_EMULATOR_FAKE_SYSTEMS = [{{'uuid': '{SYSTEM}', 'name': 'ferrite-bm', \
             'power_state': 'Off', 'nics': [{{'mac': '52:54:00:4e:d0:01', 'ip': '10.0.2.15'}}]}}]\n\
             SUSHY_EMULATOR_STATE_DIR = '{}'\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let port = free_port();
    let child = spawn_emulator(dir.path(), port);
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&url).await;
    Emulator {
        child: Some(child),
        port,
        url,
        dir,
    }
}

pub(crate) async fn system(e: &Emulator) -> Value {
    reqwest::get(format!("{}/redfish/v1/Systems/{SYSTEM}", e.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn redfish_power_and_boot_device() {
    let emulator = start_emulator().await;
    let c = Conductor::start(&[]).await;
    let node = c
        .create_node(json!({"driver": "redfish", "name": "rf-0", "driver_info": {
            "redfish_address": emulator.url, "redfish_system_id": format!("/redfish/v1/Systems/{SYSTEM}"),
            "redfish_username": "admin", "redfish_password": "password"}}))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    assert_eq!(node["power_interface"], "redfish");

    // manage verifies the credentials by reading the power state.
    assert_eq!(c.act(&uuid, json!({"target": "manage"})).await.0, 202);
    let managed = c
        .wait_state(&uuid, "manageable", Duration::from_secs(60))
        .await;
    assert_eq!(managed["power_state"], "power off");

    // Power on: the BMC takes its time; the node shows the result once real.
    assert_eq!(c.set_power(&uuid, "power on").await, 202);
    wait_for("power on", Duration::from_secs(90), || {
        let n = c.node(&uuid);
        async move { (n.await["power_state"] == "power on").then_some(()) }
    })
    .await;
    assert_eq!(system(&emulator).await["PowerState"], "On");

    assert_eq!(c.set_boot_device(&uuid, "pxe", true).await, 204);
    let boot = &system(&emulator).await["Boot"];
    assert_eq!(boot["BootSourceOverrideTarget"], "Pxe", "{boot}");
    assert_eq!(boot["BootSourceOverrideEnabled"], "Continuous", "{boot}");

    // A system the BMC does not have: manage fails back to enroll, with the reason.
    let wrong = c
        .create_node(
            json!({"driver": "redfish", "name": "rf-missing", "driver_info": {
            "redfish_address": emulator.url, "redfish_system_id": "/redfish/v1/Systems/nope"}}),
        )
        .await;
    let wrong_uuid = wrong["uuid"].as_str().unwrap().to_string();
    c.act(&wrong_uuid, json!({"target": "manage"})).await;
    let failed = wait_for("verification failure", Duration::from_secs(60), || {
        let n = c.node(&wrong_uuid);
        async move {
            let n = n.await;
            (n["provision_state"] == "enroll" && !n["last_error"].is_null()).then_some(n)
        }
    })
    .await;
    assert!(
        failed["last_error"].as_str().unwrap().contains("404"),
        "{failed}"
    );

    // Every BMC call was timed; the missing system's read counted as failed.
    let m = crate::metrics::scrape(&c).await;
    let bmc = |name: &str, call: &str| {
        crate::metrics::value(&m, name, &[("interface", "redfish"), ("call", call)]).unwrap_or(0.0)
    };
    let calls = "ferrite_conductor_bmc_call_duration_seconds_count";
    assert!(bmc(calls, "get_power_state") >= 2.0);
    assert_eq!(bmc(calls, "set_power_state"), 1.0);
    assert_eq!(bmc(calls, "set_boot_device"), 1.0);
    let failures = "ferrite_conductor_bmc_call_failures_total";
    assert!(bmc(failures, "get_power_state") >= 1.0);
    assert_eq!(bmc(failures, "set_power_state"), 0.0);
    assert_eq!(
        crate::metrics::value(
            &m,
            "ferrite_conductor_flow_duration_seconds_count",
            &[("flow", "verify"), ("result", "failure")]
        ),
        Some(1.0)
    );
}
