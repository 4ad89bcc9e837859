//! Rescue: a deployed node is rescued with a password (a new ramdisk's
//! agent gets the crypt hash through `rescue.finalize_rescue`, writes it
//! and closes its API), then unrescued; the API's refusals as Ironic's;
//! a ramdisk that never calls back fails the rescue on the timeout. The
//! password is never shown by the API nor written to a log.

use std::time::Duration;

use ferrite_protocol::rescue::crypt_verify;
use ferrite_tests::image_server::ImageServer;
use ferrite_tests::images::{make_raw, sha256_file, LoopDevice};
use ferrite_tests::{wait_for, Agent, Conductor};
use serde_json::{json, Value};

const MAC: &str = "52:54:00:5e:5c:01";
const PASSWORD: &str = "Tenant-rescue-pw-7781";

fn faultstring(body: &Value) -> String {
    let inner: Value =
        serde_json::from_str(body["error_message"].as_str().unwrap_or("{}")).unwrap_or_default();
    inner["faultstring"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `PUT .../states/provision` at an explicit microversion.
async fn provision_at(c: &Conductor, uuid: &str, version: &str, body: Value) -> (u16, Value) {
    let r = c
        .http
        .put(format!("{}/v1/nodes/{uuid}/states/provision", c.url))
        .header("X-OpenStack-Ironic-API-Version", version)
        .json(&body)
        .send()
        .await
        .expect("PUT states/provision");
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

/// Where the rescue kernel is (never fetched here: the agent runs on the host).
const RESCUE_KERNEL: &str = "http://images.example/rescue/vmlinuz";

/// The iPXE script the conductor serves the machine booting from `mac`.
async fn boot_script(c: &Conductor, mac: &str) -> String {
    let url = format!("{}/boot/node/{}.ipxe", c.url, mac.replace(':', "-"));
    let r = reqwest::get(url).await.expect("GET boot script");
    assert_eq!(r.status(), 200);
    r.text().await.unwrap_or_default()
}

/// The node as `GET /v1/nodes/{id}` returns it, as text.
async fn node_text(c: &Conductor, uuid: &str) -> String {
    c.node(uuid).await.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn rescue_and_unrescue_a_deployed_node() {
    let dir = tempfile::tempdir().unwrap();
    let raw = make_raw(&dir.path().join("disk.raw"), 4 << 20);
    let sum = sha256_file(&raw);
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    let disk = LoopDevice::new(dir.path(), "target.loop", 5 << 30, true);
    let c = Conductor::start(&[
        "--fast-track",
        "true",
        "--periodic-interval",
        "1",
        "--rescue-callback-timeout",
        "20",
    ])
    .await;
    let node = c
        .create_node(json!({"driver": "fake-hardware", "name": "rescue-me",
                            "automated_clean": false, "rescue_interface": "agent"}))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    assert_eq!(node["rescue_interface"], "agent");
    assert_eq!(c.act(&uuid, json!({"target": "manage"})).await.0, 202);
    c.wait_state(&uuid, "manageable", Duration::from_secs(30))
        .await;
    assert_eq!(c.act(&uuid, json!({"target": "provide"})).await.0, 202);
    c.wait_state(&uuid, "available", Duration::from_secs(30))
        .await;

    // Not deployed yet: Ironic's InvalidStateRequested.
    let (code, body) = c
        .act(
            &uuid,
            json!({"target": "rescue", "rescue_password": PASSWORD}),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        faultstring(&body),
        format!("The requested action \"rescue\" can not be performed on node \"{uuid}\" while it is in state \"available\".")
    );

    // Deploy, as the deploy flow tests do.
    c.create_port(&uuid, MAC).await;
    let disks = format!("ferrite-disks={}", disk.path.display());
    let deploy_agent = Agent::start(&c.url, &[MAC], &[&disks]);
    c.wait_agent(&uuid).await;
    c.patch_node(
        &uuid,
        json!([{"op": "add", "path": "/instance_info", "value": {
            "image_source": server.url_of("disk.raw"), "image_checksum": sum,
            "image_disk_format": "raw"}}]),
    )
    .await;
    assert_eq!(c.act(&uuid, json!({"target": "active"})).await.0, 202);
    c.wait_state(&uuid, "active", Duration::from_secs(120))
        .await;
    // The machine is off: its ramdisk is gone.
    drop(deploy_agent);

    // Refusals, each with Ironic's status and words.
    let rescue = json!({"target": "rescue", "rescue_password": PASSWORD});
    let (code, _) = provision_at(&c, &uuid, "1.37", rescue.clone()).await;
    assert_eq!(code, 406, "rescue needs API 1.38");
    let (code, _) = provision_at(&c, &uuid, "1.37", json!({"target": "unrescue"})).await;
    assert_eq!(code, 406, "unrescue needs API 1.38");
    let missing =
        "A non-empty \"rescue_password\" is required when setting target provision state to rescue";
    for body in [
        json!({"target": "rescue"}),
        json!({"target": "rescue", "rescue_password": "   "}),
    ] {
        let (code, answer) = c.act(&uuid, body).await;
        assert_eq!(code, 400, "{answer}");
        assert_eq!(faultstring(&answer), missing);
    }
    let (code, answer) = c
        .act(
            &uuid,
            json!({"target": "rebuild", "rescue_password": PASSWORD}),
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(
        faultstring(&answer),
        "\"rescue_password\" is only valid when setting target provision state to rescue"
    );
    let (code, answer) = c.act(&uuid, json!({"target": "unrescue"})).await;
    assert_eq!(code, 400);
    assert_eq!(
        faultstring(&answer),
        format!("The requested action \"unrescue\" can not be performed on node \"{uuid}\" while it is in state \"active\".")
    );
    // A driver without a rescue interface: Ironic's InstanceRescueFailure.
    c.patch_node(
        &uuid,
        json!([{"op": "replace", "path": "/rescue_interface", "value": "no-rescue"}]),
    )
    .await;
    let (code, answer) = c.act(&uuid, rescue.clone()).await;
    assert_eq!(code, 500, "{answer}");
    assert!(
        faultstring(&answer).ends_with(
            "Validation failed: Driver fake-hardware does not support rescue (disabled or not implemented)."
        ),
        "{answer}"
    );
    c.patch_node(
        &uuid,
        json!([{"op": "replace", "path": "/rescue_interface", "value": "agent"}]),
    )
    .await;
    assert_eq!(c.node(&uuid).await["provision_state"], "active");
    // No rescue kernel and ramdisk, neither on the node nor in the
    // configuration: the PXE boot interface's `validate_rescue`.
    let (code, answer) = c.act(&uuid, rescue.clone()).await;
    assert_eq!(code, 500, "{answer}");
    assert_eq!(
        faultstring(&answer),
        format!("Failed to rescue instance None for node {uuid}: Validation failed: Cannot validate PXE bootloader. Some parameters were missing in node's driver_info and configuration. Missing are: ['rescue_kernel', 'rescue_ramdisk']")
    );
    let unchanged = c.node(&uuid).await;
    assert_eq!(unchanged["provision_state"], "active");
    assert_eq!(unchanged["target_provision_state"], Value::Null);
    assert!(unchanged["instance_info"].get("rescue_password").is_none());
    // The rescue images (not secrets: the API shows them).
    c.patch_node(
        &uuid,
        json!([{"op": "add", "path": "/driver_info/rescue_kernel", "value": RESCUE_KERNEL},
               {"op": "add", "path": "/driver_info/rescue_ramdisk", "value": "rescue.initramfs"}]),
    )
    .await;
    let shown = c.node(&uuid).await;
    assert_eq!(shown["driver_info"]["rescue_kernel"], RESCUE_KERNEL);
    assert_eq!(shown["driver_info"]["rescue_ramdisk"], "rescue.initramfs");

    // Rescue: the ramdisk boots (a new agent), heartbeats, gets the hash.
    let (code, answer) = c.act(&uuid, rescue.clone()).await;
    assert_eq!(code, 202, "{answer}");
    let waiting = c
        .wait_state(&uuid, "rescue wait", Duration::from_secs(30))
        .await;
    assert_eq!(waiting["target_provision_state"], "rescue");
    // While it waits the password is on the node, but the API masks it.
    assert_eq!(waiting["instance_info"]["rescue_password"], "******");
    assert_eq!(waiting["instance_info"]["hashed_rescue_password"], "******");
    assert!(!waiting.to_string().contains(PASSWORD));
    // The machine PXE-boots the rescue ramdisk, not the deploy one.
    let script = boot_script(&c, MAC).await;
    assert!(
        script.contains(&format!("kernel --name deploy.kernel {RESCUE_KERNEL} ")),
        "{script}"
    );
    assert!(
        script.contains(&format!(
            "initrd --name deploy.initramfs {}/boot/files/rescue.initramfs ",
            c.url
        )),
        "{script}"
    );
    assert!(!script.contains("/boot/files/deploy."), "{script}");
    let rescue_agent = Agent::start(&c.url, &[MAC], &[&disks]);
    let rescued = c.wait_state(&uuid, "rescue", Duration::from_secs(90)).await;
    assert_eq!(rescued["last_error"], Value::Null);
    assert_eq!(rescued["target_provision_state"], Value::Null);
    // The password is forgotten once the ramdisk has it.
    assert!(rescued["instance_info"].get("rescue_password").is_none());
    assert!(rescued["instance_info"]
        .get("hashed_rescue_password")
        .is_none());
    assert!(!node_text(&c, &uuid).await.contains(PASSWORD));

    // The ramdisk holds a crypt hash of the password, not the password.
    let root = rescue_agent.dir.path().join("rescue");
    let hash = std::fs::read_to_string(root.join("etc/ipa-rescue-config/ipa-rescue-password"))
        .expect("the rescue password file");
    assert!(hash.starts_with("$5$"), "SHA-256 crypt by default: {hash}");
    assert!(
        crypt_verify(PASSWORD, &hash),
        "{hash} is not of the password"
    );
    assert!(!crypt_verify("another password", &hash));
    assert!(!hash.contains(PASSWORD));
    assert!(root.join("etc/.rescued").exists());

    // The agent API closes (IPA's serve_api = False): nothing listens on
    // its port any more. The process stays.
    let port = rescue_agent.port;
    wait_for(
        "the agent API to close",
        Duration::from_secs(15),
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    let mut rescue_agent = rescue_agent;
    assert!(
        rescue_agent.proc.exited().is_none(),
        "the agent must not exit"
    );
    assert!(rescue_agent.proc.log_text().contains("rescue mode"));

    // Unrescue: the instance boots again.
    assert_eq!(c.act(&uuid, json!({"target": "unrescue"})).await.0, 202);
    let back = c.wait_state(&uuid, "active", Duration::from_secs(30)).await;
    assert_eq!(back["last_error"], Value::Null);
    assert!(back["instance_info"].get("rescue_password").is_none());
    assert_eq!(
        back["instance_info"]["image_source"],
        server.url_of("disk.raw")
    );
    drop(rescue_agent);

    // No ramdisk answers this time: the callback timeout fails the rescue
    // and forgets the password; unrescue brings the instance back.
    assert_eq!(c.act(&uuid, rescue).await.0, 202);
    let failed = c
        .wait_state(&uuid, "rescue failed", Duration::from_secs(60))
        .await;
    assert_eq!(
        failed["last_error"],
        "Timeout reached while waiting for rescue ramdisk callback for node"
    );
    assert_eq!(failed["target_provision_state"], "rescue");
    assert!(failed["instance_info"].get("rescue_password").is_none());
    assert!(failed["instance_info"]
        .get("hashed_rescue_password")
        .is_none());
    assert_eq!(c.act(&uuid, json!({"target": "unrescue"})).await.0, 202);
    c.wait_state(&uuid, "active", Duration::from_secs(30)).await;

    // Never in the conductor's log, even at debug level.
    let log = c.proc.log_text();
    assert!(log.contains("rescued"), "the log is the conductor's");
    assert!(
        !log.contains(PASSWORD),
        "the password is in the conductor log"
    );
}

/// A node being deployed still PXE-boots the deploy ramdisk while rescue
/// images are configured (`--rescue-kernel`/`--rescue-ramdisk`, Ironic's
/// `[conductor]rescue_kernel`/`rescue_ramdisk`), and `validate` counts the
/// configured ones for the rescue interface.
#[tokio::test(flavor = "multi_thread")]
async fn deploying_node_boots_the_deploy_ramdisk_with_rescue_images_configured() {
    const DEPLOY_MAC: &str = "52:54:00:5e:5c:02";
    let c = Conductor::start(&[
        "--rescue-kernel",
        "rescue.kernel",
        "--rescue-ramdisk",
        "http://images.example/rescue.initramfs",
    ])
    .await;
    let node = c
        .create_node(json!({"driver": "fake-hardware", "automated_clean": false,
                            "rescue_interface": "agent"}))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    c.create_port(&uuid, DEPLOY_MAC).await;
    let validate: Value = c
        .request(reqwest::Method::GET, &format!("/v1/nodes/{uuid}/validate"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(validate["rescue"]["result"], true, "{validate}");
    assert_eq!(c.act(&uuid, json!({"target": "manage"})).await.0, 202);
    c.wait_state(&uuid, "manageable", Duration::from_secs(30))
        .await;
    assert_eq!(c.act(&uuid, json!({"target": "provide"})).await.0, 202);
    c.wait_state(&uuid, "available", Duration::from_secs(30))
        .await;
    c.patch_node(
        &uuid,
        json!([{"op": "add", "path": "/instance_info", "value": {
            "image_source": "http://images.example/disk.raw", "image_checksum": "abc",
            "image_disk_format": "raw"}}]),
    )
    .await;
    assert_eq!(c.act(&uuid, json!({"target": "active"})).await.0, 202);
    // No agent ever answers: the node waits for its call-back.
    c.wait_state(&uuid, "wait call-back", Duration::from_secs(30))
        .await;
    let script = boot_script(&c, DEPLOY_MAC).await;
    assert!(
        script.contains(&format!(
            "kernel --name deploy.kernel {}/boot/files/deploy.kernel ",
            c.url
        )),
        "{script}"
    );
    assert!(
        script.contains(&format!(
            "initrd --name deploy.initramfs {}/boot/files/deploy.initramfs ",
            c.url
        )),
        "{script}"
    );
    assert!(!script.contains("rescue"), "{script}");
}
