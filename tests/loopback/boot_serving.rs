//! Boot serving by the conductor: iPXE entry and per-node scripts over
//! HTTP, ramdisk files and images with Range, and TFTP (read with curl).

use std::process::Command;

use ferrite_tests::Conductor;
use serde_json::json;

const MAC: &str = "52:54:00:12:34:56";

async fn text(http: &reqwest::Client, url: &str) -> (u16, String) {
    let r = http.get(url).send().await.expect("GET");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// A free UDP port on 127.0.0.1 for TFTP.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("udp port")
}

#[tokio::test(flavor = "multi_thread")]
async fn ipxe_scripts_files_and_tftp() {
    let boot = tempfile::tempdir().unwrap();
    let kernel: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let initramfs: Vec<u8> = (0..700_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(boot.path().join("deploy.kernel"), &kernel).unwrap();
    std::fs::write(boot.path().join("deploy.initramfs"), &initramfs).unwrap();
    let images = tempfile::tempdir().unwrap();
    std::fs::write(images.path().join("disk.img"), b"0123456789abcdef").unwrap();
    let tftp_port = free_udp_port();
    let conductor = Conductor::start(&[
        "--public-url",
        "http://10.0.2.100",
        "--boot-dir",
        &boot.path().display().to_string(),
        "--images-dir",
        &images.path().display().to_string(),
        "--tftp-listen",
        &format!("127.0.0.1:{tftp_port}"),
        "--fast-track",
        "true",
        "--kernel-append-params",
        "console=ttyS0 ipa-debug=1",
    ])
    .await;
    let http = reqwest::Client::new();
    let base = &conductor.url;

    let (code, entry) = text(&http, &format!("{base}/boot/boot.ipxe")).await;
    assert_eq!(code, 200);
    assert!(entry.starts_with("#!ipxe"), "{entry}");
    assert!(
        entry.contains("imgfetch --name node http://10.0.2.100/boot/node/${net0/mac:hexhyp}.ipxe"),
        "{entry}"
    );

    // No node has this MAC yet: iPXE is told so and moves on.
    let script_url = format!("{base}/boot/node/52-54-00-12-34-56.ipxe");
    let (code, unknown) = text(&http, &script_url).await;
    assert_eq!(code, 200);
    assert!(
        unknown.contains("no node has a port with MAC 52:54:00:12:34:56"),
        "{unknown}"
    );
    assert!(unknown.contains("exit"));
    let (code, _) = text(&http, &format!("{base}/boot/node/not-a-mac.ipxe")).await;
    assert_eq!(code, 404);

    // Enrolled with fast-track: the deploy ramdisk, with its parameters.
    let node = conductor
        .create_node(json!({"driver": "fake-hardware", "name": "pxe-0"}))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    conductor.create_port(&uuid, MAC).await;
    let (_, script) = text(&http, &script_url).await;
    assert!(
        script.contains(
            "kernel --name deploy.kernel http://10.0.2.100/boot/files/deploy.kernel \
             initrd=deploy.initramfs ipa-api-url=http://10.0.2.100 BOOTIF=01-52-54-00-12-34-56 \
             console=ttyS0 ipa-debug=1"
        ),
        "{script}"
    );
    assert!(script
        .contains("initrd --name deploy.initramfs http://10.0.2.100/boot/files/deploy.initramfs"));
    assert!(script.contains("\nboot\n"));

    // The node's own deploy kernel URL and kernel parameters win.
    let patch = json!([
        {"op": "add", "path": "/driver_info/deploy_kernel", "value": "http://images.example/k"},
        {"op": "add", "path": "/driver_info/kernel_append_params", "value": "console=ttyS1"}
    ]);
    let resp = conductor
        .request(reqwest::Method::PATCH, &format!("/v1/nodes/{uuid}"))
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (_, script) = text(&http, &script_url).await;
    assert!(
        script.contains("kernel --name deploy.kernel http://images.example/k "),
        "{script}"
    );
    assert!(script.contains("console=ttyS1"), "{script}");
    assert!(!script.contains("ipa-debug=1"), "{script}");

    // Ramdisk files and images over HTTP, with ranges (resumed downloads).
    let r = http
        .get(format!("{base}/boot/files/deploy.kernel"))
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &kernel[1000..2000]);
    let r = http
        .get(format!("{base}/images/disk.img"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"0123456789abcdef");
    let r = http
        .get(format!("{base}/images/../boot/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // TFTP, read by a real client: the files and the generated entry script.
    let tftp = |path: &str| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30"])
            .arg(format!("tftp://127.0.0.1:{tftp_port}/{path}"))
            .output()
            .expect("curl");
        assert!(out.status.success(), "tftp {path}: {out:?}");
        out.stdout
    };
    assert_eq!(tftp("deploy.initramfs"), initramfs);
    assert_eq!(String::from_utf8(tftp("boot.ipxe")).unwrap(), entry);
    let missing = Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .arg(format!("tftp://127.0.0.1:{tftp_port}/nope"))
        .output()
        .unwrap();
    assert!(!missing.status.success(), "a missing file is a TFTP error");
}
