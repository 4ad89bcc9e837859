//! What Ironic says about downloads, end to end between the real
//! conductor, the real agent and real servers on 127.0.0.1: proxies
//! (`image_info.proxies`), a private CA (`ipa-cafile`), a retry after a
//! checksum mismatch, `permitted_image_formats`, the `User-Agent`, and the
//! agent version in heartbeats.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;

use base64::Engine;
use ferrite_tests::forward_proxy::ForwardProxy;
use ferrite_tests::image_server::ImageServer;
use ferrite_tests::images::{same_prefix, sha256_file, to_qcow2, LoopDevice};
use ferrite_tests::Pair;
use serde_json::{json, Value};

use crate::fixture;

const SIZE: u64 = 24 << 20;
/// Root device selection wants at least 4 GiB (sparse).
const DISK: u64 = 5 << 30;

fn disk_param(disk: &LoopDevice) -> String {
    format!("ferrite-disks={}", disk.path.display())
}

fn image_info(url: &str, sum: &str) -> Value {
    json!({"id": "disk", "urls": [url], "os_hash_algo": "sha256", "os_hash_value": sum})
}

/// The first and last 64 MiB of a disk (what a write or a wipe touches).
fn ends(path: &Path) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let len = ferrite_tests::images::run(
        std::process::Command::new("blockdev")
            .arg("--getsize64")
            .arg(path),
    )
    .trim()
    .parse::<u64>()
    .unwrap();
    let mut out = vec![0u8; 128 << 20];
    f.read_exact_at(&mut out[..64 << 20], 0).unwrap();
    f.read_exact_at(&mut out[64 << 20..], len - (64 << 20))
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn proxies_carry_the_image_and_downloads_say_who_they_are() {
    let (dir, raw) = fixture(SIZE);
    let sum = sha256_file(&raw);
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    let real: std::net::SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    // A name no resolver knows: only the proxy can reach it.
    let name = format!("images.ferrite.invalid:{}", real.port());
    // The same files over HTTPS with a private CA, also behind a name.
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ferrite_tests::tls::ca_and_server(certs.path());
    let tls_server = ImageServer::start_tls(dir.path().to_path_buf(), &cert, &key).await;
    let tls_real: std::net::SocketAddr = tls_server
        .url
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let proxy = ForwardProxy::start(HashMap::from([
        (name.clone(), real),
        (format!("127.0.0.1:{}", tls_real.port()), tls_real),
    ]))
    .await;
    std::fs::write(dir.path().join("SHA256SUMS"), format!("{sum}  disk.raw\n")).unwrap();
    let disk = LoopDevice::new(dir.path(), "root.loop", DISK, true);
    let pair = Pair::start(
        &[],
        "52:54:00:ff:10:01",
        &[
            &disk_param(&disk),
            "ipa-image-download-connection-retry-interval=0.2",
            "ipa-image-download-connection-retries=1",
            &format!("ipa-cafile={}", ca.display()),
        ],
    )
    .await;

    // The heartbeat's agent_version: <IPA release>+ferrite.<version>.
    let node = pair.conductor.node(&pair.uuid).await;
    let version = node["driver_internal_info"]["agent_version"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(version, ferrite_protocol::AGENT_VERSION);
    assert_eq!(
        version,
        format!("13.0.0+ferrite.{}", env!("CARGO_PKG_VERSION"))
    );

    let proxy_with_creds = proxy.url.replace("http://", "http://ironic:pr0xy-s3cret@");
    // The checksum as a file on the same unresolvable name: fetched
    // through the proxy too, as IPA does.
    let info = json!({"id": "disk", "urls": [format!("http://{name}/disk.raw")],
                      "checksum": format!("http://{name}/SHA256SUMS"),
                      "proxies": {"http": proxy_with_creds, "https": proxy_with_creds}});
    let api = pair.api();
    let done = api
        .run("standby.prepare_image", json!({"image_info": info}))
        .await;
    assert_eq!(done["command_status"], "SUCCEEDED", "{done}");
    same_prefix(&disk.path, &raw, SIZE).unwrap();
    let seen = proxy.seen();
    for wanted in ["disk.raw", "SHA256SUMS"] {
        let wanted = format!("http://{name}/{wanted}");
        assert!(
            seen.iter().any(|r| r.method == "GET" && r.target == wanted),
            "{seen:?}"
        );
    }
    let creds = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ironic:pr0xy-s3cret")
    );
    assert!(
        seen.iter()
            .all(|r| r.proxy_authorization.as_deref() == Some(creds.as_str())),
        "{seen:?}"
    );
    // Every request the image server saw says who sent it.
    let log = server.log();
    assert!(!log.is_empty());
    for l in &log {
        assert_eq!(
            l.user_agent.as_deref(),
            Some(ferrite_protocol::USER_AGENT),
            "{l:?}"
        );
    }
    assert!(ferrite_protocol::USER_AGENT.starts_with("ferrite-agent/"));

    // https through the proxy: a CONNECT tunnel, the private CA trusted inside it.
    let before = proxy.seen().len();
    let mut tunneled = image_info(&tls_server.url_of("disk.raw"), &sum);
    tunneled["proxies"] = json!({"https": proxy_with_creds});
    let done = api
        .run("standby.prepare_image", json!({"image_info": tunneled}))
        .await;
    assert_eq!(done["command_status"], "SUCCEEDED", "{done}");
    let seen = proxy.seen();
    let target = tls_server.url.trim_start_matches("https://").to_string();
    assert!(
        seen[before..].iter().any(|r| r.method == "CONNECT"
            && r.target == target
            && r.proxy_authorization.as_deref() == Some(creds.as_str())),
        "{seen:?}"
    );
    assert!(tls_server
        .log()
        .iter()
        .all(|l| l.user_agent.as_deref() == Some(ferrite_protocol::USER_AGENT)));

    // no_proxy: the image server's own address goes direct.
    let before = proxy.seen().len();
    let mut direct = image_info(&server.url_of("disk.raw"), &sum);
    direct["proxies"] = json!({"http": proxy.url});
    direct["no_proxy"] = json!("localhost,127.0.0.1");
    let done = api
        .run("standby.prepare_image", json!({"image_info": direct}))
        .await;
    assert_eq!(done["command_status"], "SUCCEEDED", "{done}");
    assert_eq!(proxy.seen().len(), before, "no_proxy was not honoured");

    // A proxy that is not there: the download fails, and says so.
    let mut dead = image_info(&format!("http://{name}/disk.raw"), &sum);
    dead["proxies"] = json!({"http": format!("http://ironic:pr0xy-s3cret@127.0.0.1:{}", ferrite_tests::free_port())});
    let failed = api
        .run("standby.prepare_image", json!({"image_info": dead}))
        .await;
    assert_eq!(
        failed["command_error"]["type"], "ImageDownloadError",
        "{failed}"
    );
    // The proxy password appears nowhere: not in results, not in the log.
    assert!(!failed.to_string().contains("pr0xy-s3cret"), "{failed}");
    let agent_log = pair.agent.proc.log_text();
    assert!(agent_log.contains("image download through a proxy"));
    assert!(
        !agent_log.contains("pr0xy-s3cret"),
        "the agent logged the proxy password"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_ca_image_server_is_trusted_with_ipa_cafile_only() {
    let (dir, raw) = fixture(SIZE);
    let sum = sha256_file(&raw);
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ferrite_tests::tls::ca_and_server(certs.path());
    let server = ImageServer::start_tls(dir.path().to_path_buf(), &cert, &key).await;
    assert!(server.url.starts_with("https://127.0.0.1:"));
    let disk = LoopDevice::new(dir.path(), "root.loop", DISK, true);
    let before = ends(&disk.path);
    let info = json!({"image_info": image_info(&server.url_of("disk.raw"), &sum)});
    let common = [
        disk_param(&disk),
        "ipa-image-download-connection-retry-interval=0.2".to_string(),
        "ipa-image-download-connection-retries=1".to_string(),
    ];
    let params =
        |extra: Option<String>| -> Vec<String> { common.iter().cloned().chain(extra).collect() };

    // Without the CA: refused, nothing written.
    let without = params(None);
    let without: Vec<&str> = without.iter().map(String::as_str).collect();
    let pair = Pair::start(&[], "52:54:00:ff:10:02", &without).await;
    let failed = pair.api().run("standby.prepare_image", info.clone()).await;
    assert_eq!(
        failed["command_error"]["type"], "ImageDownloadError",
        "{failed}"
    );
    let details = failed["command_error"]["details"].as_str().unwrap();
    assert!(details.to_lowercase().contains("certificate"), "{details}");
    assert!(
        ends(&disk.path) == before,
        "a refused download touched the disk"
    );
    drop(pair);

    // With it (the same file that trusts a private Ironic API): written.
    let with = params(Some(format!("ipa-cafile={}", ca.display())));
    let with: Vec<&str> = with.iter().map(String::as_str).collect();
    let pair = Pair::start(&[], "52:54:00:ff:10:03", &with).await;
    let done = pair.api().run("standby.prepare_image", info).await;
    assert_eq!(done["command_status"], "SUCCEEDED", "{done}");
    same_prefix(&disk.path, &raw, SIZE).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checksum_mismatch_is_retried_from_scratch_then_fails_and_wipes() {
    let (dir, raw) = fixture(SIZE);
    let sum = sha256_file(&raw);
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    let disk = LoopDevice::new(dir.path(), "root.loop", DISK, true);
    let pair = Pair::start(
        &[],
        "52:54:00:ff:10:04",
        &[
            &disk_param(&disk),
            "ipa-image-download-connection-retry-interval=0.2",
            "ipa-image-download-connection-retries=2",
        ],
    )
    .await;
    let api = pair.api();
    let info = json!({"image_info": image_info(&server.url_of("disk.raw"), &sum)});
    let streams = |server: &ImageServer| -> Vec<bool> {
        server
            .log()
            .iter()
            .filter(|l| l.range.is_none())
            .map(|l| l.corrupted)
            .collect()
    };

    // Wrong bytes once, right bytes the second time: SUCCEEDED.
    server.faults().corrupt = 1;
    let done = api.run("standby.prepare_image", info.clone()).await;
    assert_eq!(done["command_status"], "SUCCEEDED", "{done}");
    same_prefix(&disk.path, &raw, SIZE).unwrap();
    assert_eq!(streams(&server), [true, false], "{:?}", server.log());
    assert!(pair
        .agent
        .proc
        .log_text()
        .contains("image checksum mismatch; downloading and writing it again"));

    // Wrong every time: 1 + 2 retries, then ImageChecksumError and a wiped disk.
    server.faults().corrupt = 100;
    let failed = api.run("standby.prepare_image", info).await;
    assert_eq!(
        failed["command_error"]["type"], "ImageChecksumError",
        "{failed}"
    );
    assert_eq!(streams(&server), [true, false, true, true, true]);
    let mut head = vec![0xffu8; 1 << 20];
    std::fs::File::open(&disk.path)
        .unwrap()
        .read_exact_at(&mut head, 0)
        .unwrap();
    assert!(
        head.iter().all(|&b| b == 0),
        "the unverified image was left bootable"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_qcow2_is_refused_when_ironic_does_not_permit_it() {
    let (dir, raw) = fixture(SIZE);
    let qcow = to_qcow2(&raw, &dir.path().join("disk.qcow2"), &[]);
    let sum = sha256_file(&qcow);
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    let disk = LoopDevice::new(dir.path(), "root.loop", DISK, true);
    let before = ends(&disk.path);
    let pair = Pair::start(
        &["--permitted-image-formats", "raw,gpt"],
        "52:54:00:ff:10:05",
        &[&disk_param(&disk)],
    )
    .await;
    let mut info = image_info(&server.url_of("disk.qcow2"), &sum);
    info["disk_format"] = json!("qcow2");
    let failed = pair
        .api()
        .run("standby.prepare_image", json!({"image_info": info}))
        .await;
    assert_eq!(failed["command_status"], "FAILED", "{failed}");
    assert_eq!(failed["command_error"]["type"], "InvalidImage", "{failed}");
    let details = failed["command_error"]["details"].as_str().unwrap();
    assert!(
        details
            .contains("Security: Detected image format was qcow2, but only raw, gpt are allowed"),
        "{details}"
    );
    assert!(
        ends(&disk.path) == before,
        "a refused image touched the disk"
    );
    // Only the first bytes were fetched: no body was streamed.
    assert!(
        server
            .log()
            .iter()
            .all(|l| l.range.as_deref() == Some("bytes=0-65535")),
        "{:?}",
        server.log()
    );

    // The same conductor permits raw: a raw image goes through.
    let done = pair
        .api()
        .run(
            "standby.prepare_image",
            json!({"image_info": image_info(&server.url_of("disk.raw"), &sha256_file(&raw))}),
        )
        .await;
    assert_eq!(done["command_status"], "SUCCEEDED", "{done}");
    same_prefix(&disk.path, &raw, SIZE).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn without_deep_inspection_the_permitted_list_is_not_applied() {
    let (dir, raw) = fixture(SIZE);
    let qcow = to_qcow2(&raw, &dir.path().join("disk.qcow2"), &[]);
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    let disk = LoopDevice::new(dir.path(), "root.loop", DISK, true);
    let pair = Pair::start(
        &[
            "--permitted-image-formats",
            "raw",
            "--disable-deep-image-inspection",
            "true",
        ],
        "52:54:00:ff:10:06",
        &[&disk_param(&disk)],
    )
    .await;
    let mut info = image_info(&server.url_of("disk.qcow2"), &sha256_file(&qcow));
    info["disk_format"] = json!("qcow2");
    let done = pair
        .api()
        .run("standby.prepare_image", json!({"image_info": info}))
        .await;
    assert_eq!(done["command_status"], "SUCCEEDED", "{done}");
    same_prefix(&disk.path, &raw, SIZE).unwrap();
}
