//! The ramdisk's logs (`log.collect_system_logs`) kept by the conductor
//! when a deploy or clean fails (`--deploy-logs-collect`, Ironic's
//! `[agent]deploy_logs_collect`): the real conductor, the real agent, a
//! loop device as the machine's disk, an image with the wrong checksum.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrite_tests::image_server::ImageServer;
use ferrite_tests::images::{make_raw, LoopDevice};
use ferrite_tests::recorder::{CommandFault, Recorder};
use ferrite_tests::{wait_for, Agent, Conductor, TestDb};
use serde_json::{json, Value};

const INSTANCE: &str = "6f1d3c52-8b0e-4b8e-9d55-0a4f3e1c2b7a";
const WAIT: Duration = Duration::from_secs(120);

/// A machine with one port and a 5 GiB disk, and an image server with a
/// small raw image.
struct Bench {
    _dir: tempfile::TempDir,
    disk: LoopDevice,
    server: ImageServer,
}

impl Bench {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        make_raw(&dir.path().join("disk.raw"), 4 << 20);
        let server = ImageServer::start(dir.path().to_path_buf()).await;
        let disk = LoopDevice::new(dir.path(), "target.loop", 5 << 30, true);
        Self {
            _dir: dir,
            disk,
            server,
        }
    }

    fn disks_param(&self) -> String {
        format!("ferrite-disks={}", self.disk.path.display())
    }
}

/// A wrong checksum fails the deploy at once, not after IPA's nine
/// download retries (tests/image covers the retries).
const NO_RETRIES: &str = "ipa-image-download-connection-retries=0";

/// A node taken to `available` without cleaning, with a port, an instance
/// UUID and a deploy of `disk.raw` whose checksum is wrong.
async fn node_with_bad_image(c: &Conductor, bench: &Bench, name: &str, mac: &str) -> String {
    let node = c
        .create_node(json!({"driver": "fake-hardware", "name": name, "automated_clean": false}))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    c.create_port(&uuid, mac).await;
    assert_eq!(c.act(&uuid, json!({"target": "manage"})).await.0, 202);
    c.wait_state(&uuid, "manageable", WAIT).await;
    assert_eq!(c.act(&uuid, json!({"target": "provide"})).await.0, 202);
    c.wait_state(&uuid, "available", WAIT).await;
    c.patch_node(
        &uuid,
        json!([
            {"op": "add", "path": "/instance_uuid", "value": INSTANCE},
            {"op": "add", "path": "/instance_info", "value": {
                "image_source": bench.server.url_of("disk.raw"),
                "image_checksum": "0".repeat(64),
                "image_disk_format": "raw"}},
        ]),
    )
    .await;
    uuid
}

/// `last_error` after the deploy failed.
async fn deploy_and_fail(c: &Conductor, uuid: &str) -> String {
    assert_eq!(c.act(uuid, json!({"target": "active"})).await.0, 202);
    let failed = c.wait_state(uuid, "deploy failed", WAIT).await;
    let error = failed["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // The original failure comes first, whatever became of the logs.
    assert!(
        error.starts_with("Deploy step deploy.write_image failed on node")
            && error.to_lowercase().contains("checksum"),
        "{error}"
    );
    // The power off follows the failure (Ironic's order): wait for it.
    wait_for("power off after the failure", WAIT, || {
        let n = c.node(uuid);
        async move { (n.await["power_state"] == "power off").then_some(()) }
    })
    .await;
    error
}

/// The path `last_error` names after "Ramdisk logs: ".
fn named_logs(error: &str) -> PathBuf {
    let (_, path) = error
        .split_once("Ramdisk logs: ")
        .unwrap_or_else(|| panic!("no logs named in {error:?}"));
    PathBuf::from(path)
}

/// The file is Ironic's name in the logs dir, private, a tar.gz holding
/// the agent's log; that log's text.
fn check_tarball(path: &Path, dir: &Path, prefix: &str) -> String {
    assert_eq!(path.parent(), Some(dir), "{}", path.display());
    let name = path.file_name().unwrap().to_str().unwrap();
    let stamp = name
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(".tar.gz"))
        .unwrap_or_else(|| panic!("{name} is not {prefix}<timestamp>.tar.gz"));
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d-%H-%M-%S")
        .unwrap_or_else(|e| panic!("{stamp}: not Ironic's timestamp: {e}"));
    let meta = std::fs::metadata(path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let file = std::fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut agent_log = None;
    let mut names = Vec::new();
    for entry in archive.entries().expect("a tar archive") {
        let mut entry = entry.expect("a tar entry");
        let entry_name = entry.path().unwrap().display().to_string();
        if entry_name == "ferrite-agent.log" {
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            agent_log = Some(text);
        }
        names.push(entry_name);
    }
    agent_log.unwrap_or_else(|| panic!("no ferrite-agent.log in {names:?}"))
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_deploy_and_clean_keep_the_ramdisk_logs() {
    let bench = Bench::new().await;
    let c = Conductor::start(&["--fast-track", "true"]).await;
    let uuid = node_with_bad_image(&c, &bench, "logs-0", "52:54:00:1c:00:01").await;
    let agent = Agent::start(
        &c.url,
        &["52:54:00:1c:00:01"],
        &[&bench.disks_param(), NO_RETRIES],
    );
    c.wait_agent(&uuid).await;

    let error = deploy_and_fail(&c, &uuid).await;
    let logs_dir = c.data_dir().join("ramdisk-logs");
    let path = named_logs(&error);
    let agent_log = check_tarball(&path, &logs_dir, &format!("{uuid}_logs-0_{INSTANCE}_"));
    // The agent's own account of the failure is in the archive.
    assert!(
        agent_log.contains("write_image") && agent_log.to_lowercase().contains("checksum"),
        "{agent_log}"
    );
    assert_eq!(files_in(&logs_dir), vec![path.clone()]);

    // Undeploy (no automated clean), then a manual clean whose step fails.
    assert_eq!(c.act(&uuid, json!({"target": "deleted"})).await.0, 202);
    c.wait_state(&uuid, "available", WAIT).await;
    assert_eq!(c.act(&uuid, json!({"target": "manage"})).await.0, 202);
    c.wait_state(&uuid, "manageable", WAIT).await;
    // The failed deploy powered the machine off, which ends its ramdisk and
    // wipes the token; fake power cannot stop the process, so do it here.
    drop(agent);
    let _agent = Agent::start(
        &c.url,
        &["52:54:00:1c:00:01"],
        &[&bench.disks_param(), NO_RETRIES],
    );
    c.wait_agent(&uuid).await;
    let steps = json!([{"interface": "deploy", "step": "burnin_cpu",
                        "args": {"agent_burnin_cpu_timeout": "soon"}}]);
    assert_eq!(
        c.act(&uuid, json!({"target": "clean", "clean_steps": steps}))
            .await
            .0,
        202
    );
    let failed = c.wait_state(&uuid, "clean failed", WAIT).await;
    let error = failed["last_error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("Agent returned error for clean step")
            && error.contains("agent_burnin_cpu_timeout"),
        "{error}"
    );
    let clean_logs = named_logs(error);
    // No instance any more; Ironic's `cleaning` label.
    let agent_log = check_tarball(&clean_logs, &logs_dir, &format!("{uuid}_logs-0_cleaning_"));
    assert!(agent_log.contains("burnin_cpu"), "{agent_log}");
    assert_eq!(files_in(&logs_dir).len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn never_keeps_no_logs() {
    let bench = Bench::new().await;
    let c = Conductor::start(&["--fast-track", "true", "--deploy-logs-collect", "never"]).await;
    let uuid = node_with_bad_image(&c, &bench, "logs-never", "52:54:00:1c:00:02").await;
    let _agent = Agent::start(
        &c.url,
        &["52:54:00:1c:00:02"],
        &[&bench.disks_param(), NO_RETRIES],
    );
    c.wait_agent(&uuid).await;
    let error = deploy_and_fail(&c, &uuid).await;
    assert!(!error.contains("Ramdisk logs"), "{error}");
    assert!(files_in(&c.data_dir().join("ramdisk-logs")).is_empty());
    assert!(
        !c.proc.log_text().contains("log.collect_system_logs"),
        "the conductor asked for logs"
    );
}

/// The agent's reply spoiled on the way (garbage base64), then cut off
/// (the agent dies while answering): the deploy still fails with the
/// agent's error, plus one clause saying why there are no logs.
#[tokio::test(flavor = "multi_thread")]
async fn bad_or_missing_logs_do_not_mask_the_failure() {
    let bench = Bench::new().await;
    let c = Conductor::start(&["--fast-track", "true"]).await;
    let recorder = Recorder::start(&c.url).await;
    let uuid = node_with_bad_image(&c, &bench, "logs-bad", "52:54:00:1c:00:03").await;
    let agent = Agent::start(
        &recorder.api_url,
        &["52:54:00:1c:00:03"],
        &[&bench.disks_param(), NO_RETRIES],
    );
    c.wait_agent(&uuid).await;
    let logs_dir = c.data_dir().join("ramdisk-logs");

    recorder.fault_command(
        "log.collect_system_logs",
        CommandFault::ReplaceResult(json!({"system_logs": "%%% not base64 %%%"})),
    );
    let error = deploy_and_fail(&c, &uuid).await;
    assert!(
        error.contains(". Ramdisk logs could not be collected: the logs are not valid base64 ("),
        "{error}"
    );
    assert!(files_in(&logs_dir).is_empty(), "{:?}", files_in(&logs_dir));

    // Again, the agent gone mid-answer. The failure's power off ended the
    // ramdisk and wiped its token; fake power cannot stop the process, so a
    // new one looks the node up once the deploy boots "it".
    drop(agent);
    let _agent = Agent::start(
        &recorder.api_url,
        &["52:54:00:1c:00:03"],
        &[&bench.disks_param(), NO_RETRIES],
    );
    let token = first_token(c.db.clone(), uuid.clone());
    recorder.fault_command("log.collect_system_logs", CommandFault::Hangup);
    c.patch_node(
        &uuid,
        json!([{"op": "replace", "path": "/instance_info/image_checksum", "value": "1".repeat(64)}]),
    )
    .await;
    let error = deploy_and_fail(&c, &uuid).await;
    assert!(
        error.contains(". Ramdisk logs could not be collected: agent unreachable at https://"),
        "{error}"
    );
    let token = token
        .join()
        .expect("token watcher")
        .expect("a token issued");
    // The agent's token is in the URL's query; it stays out of last_error.
    assert!(!error.contains(&token), "{error}");
    assert!(files_in(&logs_dir).is_empty());
    // The spoiled call reached the agent and is recorded; the hung-up one
    // never left the recorder.
    let asked = recorder
        .exchanges()
        .iter()
        .filter(|e| e.body["name"] == "log.collect_system_logs")
        .count();
    assert_eq!(
        asked, 1,
        "the hung-up call is not recorded, the spoiled one is"
    );
}

/// `always`: a clean that goes well keeps the logs too, named in the
/// node's history.
#[tokio::test(flavor = "multi_thread")]
async fn always_keeps_the_logs_of_a_clean_that_succeeds() {
    let c = Conductor::start(&["--fast-track", "true", "--deploy-logs-collect", "always"]).await;
    let node = c
        .create_node(json!({"driver": "fake-hardware", "name": "logs-always"}))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    c.create_port(&uuid, "52:54:00:1c:00:04").await;
    assert_eq!(c.act(&uuid, json!({"target": "manage"})).await.0, 202);
    c.wait_state(&uuid, "manageable", WAIT).await;
    let _agent = Agent::start(&c.url, &["52:54:00:1c:00:04"], &[NO_RETRIES]);
    c.wait_agent(&uuid).await;
    let steps = json!([{"interface": "deploy", "step": "burnin_cpu",
                        "args": {"agent_burnin_cpu_timeout": 1, "agent_burnin_cpu_cpu": 1}}]);
    assert_eq!(
        c.act(&uuid, json!({"target": "clean", "clean_steps": steps}))
            .await
            .0,
        202
    );
    let done = c.wait_state(&uuid, "manageable", WAIT).await;
    assert_eq!(done["last_error"], Value::Null, "{done}");
    let logs_dir = c.data_dir().join("ramdisk-logs");
    let files = files_in(&logs_dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let agent_log = check_tarball(
        &files[0],
        &logs_dir,
        &format!("{uuid}_logs-always_cleaning_"),
    );
    assert!(agent_log.contains("CPU burn-in finished"), "{agent_log}");
    let history = c
        .request(reqwest::Method::GET, &format!("/v1/nodes/{uuid}/history"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let named = format!("Ramdisk logs: {}", files[0].display());
    assert!(
        history["history"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["event"] == named.as_str()),
        "{history}"
    );
}

/// Watch the conductor's database for the node's next agent token (the
/// flow wipes it again when it fails, so it must be caught while it lives).
fn first_token(db: TestDb, uuid: String) -> std::thread::JoinHandle<Option<String>> {
    std::thread::spawn(move || {
        for _ in 0..2400 {
            let token = db.node_data(&uuid).and_then(|data| {
                let node: Value = serde_json::from_str(&data).ok()?;
                node["driver_internal_info"]["agent_secret_token"]
                    .as_str()
                    .map(str::to_string)
            });
            if token.is_some() {
                return token;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    })
}
