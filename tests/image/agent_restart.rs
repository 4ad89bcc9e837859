//! Issue 14, item 9: a crashed agent child is restarted (PID 1 does it in
//! the ramdisk; here the test does, with the same command line and run
//! dir). The restarted agent carries on with the token and certificate it
//! kept (0600, in its run dir): Ironic masks the token on a second lookup
//! and refuses a changed `agent_verify_ca`, so a fresh start would lock down.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use ferrite_tests::images::LoopDevice;
use ferrite_tests::{agent_client, wait_for, AgentApi, Pair, Proc};
use serde_json::json;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_agent_restarts_with_its_token_and_the_flow_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let disk = LoopDevice::new(dir.path(), "root.loop", 64 << 20, true);
    let disks = format!("ferrite-disks={}", disk.path.display());
    let mut pair = Pair::start(&[], "52:54:00:ff:0e:09", &[&disks]).await;
    let api = pair.api();
    let run = pair.agent.dir.path().join("run");
    // Item 11: the token and the TLS key are private.
    assert_eq!(mode(&run.join("agent-token")), 0o600);
    assert_eq!(mode(&run.join("agent.key")), 0o600);

    // kill -9, then start it again as PID 1 would: same command line.
    let pid = pair.agent.proc.child.id();
    let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    pair.agent.proc.child.kill().unwrap();
    pair.agent.proc.child.wait().unwrap();
    let hb_before = pair.conductor.node(&pair.uuid).await["driver_internal_info"]
        ["agent_last_heartbeat"]
        .clone();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env("FERRITE_LOG", "debug,hyper=info,rustls=info,reqwest=info");
    pair.agent.proc = Proc::spawn(cmd, pair.agent.dir.path().join("agent-2.log"));

    // Its heartbeats are accepted (a new timestamp) ...
    let c = &pair.conductor;
    let uuid = pair.uuid.clone();
    wait_for(
        "a heartbeat from the restarted agent",
        Duration::from_secs(60),
        || {
            let before = hb_before.clone();
            let uuid = uuid.clone();
            async move {
                let hb =
                    c.node(&uuid).await["driver_internal_info"]["agent_last_heartbeat"].clone();
                (hb.is_string() && hb != before).then_some(())
            }
        },
    )
    .await;
    let log = pair.agent.proc.log_text();
    assert!(
        log.contains("carrying on with the stored agent token"),
        "{log}"
    );
    assert!(!log.contains("lockdown"), "{log}");
    // ... it answers the conductor's token over the same certificate ...
    let same = AgentApi {
        client: agent_client(Some(&pair.pem)).unwrap(),
        base: pair.agent.url("https"),
        token: api.token.clone(),
    };
    let r = same.run("standby.get_partition_uuids", json!({})).await;
    assert_eq!(r["command_status"], "SUCCEEDED", "{r}");

    // ... and the node's flow goes on: manual cleaning runs a step on it.
    assert_eq!(c.act(&uuid, json!({"target": "manage"})).await.0, 202);
    c.wait_state(&uuid, "manageable", Duration::from_secs(30))
        .await;
    let (code, body) = c
        .provision(
            &uuid,
            json!({"target": "clean", "clean_steps": [
                {"interface": "deploy", "step": "erase_devices_metadata"}]}),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let node = c
        .wait_state(&uuid, "manageable", Duration::from_secs(90))
        .await;
    assert!(node["last_error"].is_null(), "{node}");
    let log = pair.agent.proc.log_text();
    assert!(log.contains("erase_devices_metadata"), "{log}");
}
