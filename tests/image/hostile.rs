//! Hostile images and servers (issue 14, items 8, 10 and 11 on the agent's
//! side): each fails the command, or `write-image`, with a clear error, and
//! the agent process lives on with bounded memory. The reproducers are made
//! here by small generators (the same shapes are fuzz seeds in `fuzz/seeds/`).

use std::io::Write;
use std::os::unix::fs::FileExt;

use std::time::{Duration, Instant};

use ferrite_tests::image_server::ImageServer;
use ferrite_tests::images::{compress, noise, to_qcow2, LoopDevice};
use ferrite_tests::Pair;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{assert_fails, write_image};

/// The agent's peak resident memory after a hostile command must stay
/// well under this (the image engine's buffers are a few tens of MiB).
const MEMORY_BUDGET_KB: u64 = 256 << 10;

fn proc_status(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("agent alive");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

fn vm_hwm_kb(pid: u32) -> u64 {
    let hwm = proc_status(pid, "VmHWM:");
    hwm.trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmHWM in kB")
}

/// A qcow2 v2 file of 512-byte clusters whose L1 entries all point at one
/// L2 table (the 3 GB reproducer's shape): `virtual_size` / 32 KiB entries.
pub fn shared_l2_qcow2(virtual_size: u64) -> Vec<u8> {
    const CLUSTER: u64 = 512;
    let l1_entries = virtual_size / (64 * CLUSTER);
    let l1_off = CLUSTER;
    let l2_off = (l1_off + l1_entries * 8).div_ceil(CLUSTER) * CLUSTER;
    let data_off = l2_off + CLUSTER;
    let mut f = vec![0u8; (data_off + 64 * CLUSTER) as usize];
    f[..4].copy_from_slice(b"QFI\xfb");
    f[4..8].copy_from_slice(&2u32.to_be_bytes());
    f[20..24].copy_from_slice(&9u32.to_be_bytes());
    f[24..32].copy_from_slice(&virtual_size.to_be_bytes());
    f[36..40].copy_from_slice(&(l1_entries as u32).to_be_bytes());
    f[40..48].copy_from_slice(&l1_off.to_be_bytes());
    for i in 0..l1_entries {
        let at = (l1_off + i * 8) as usize;
        f[at..at + 8].copy_from_slice(&l2_off.to_be_bytes());
    }
    for j in 0..64u64 {
        let at = (l2_off + j * 8) as usize;
        f[at..at + 8].copy_from_slice(&(data_off + j * CLUSTER).to_be_bytes());
    }
    f[data_off as usize..].fill(0xab);
    f
}

/// A whole-disk image whose GPT header claims 4096 entries of 1 GiB each
/// (header CRC valid), which made `fix_backup` allocate 4 TiB.
pub fn forged_gpt_image(size: u64) -> Vec<u8> {
    let sectors = size / 512;
    let mut img = vec![0u8; size as usize];
    // Protective MBR.
    img[446 + 4] = 0xee;
    img[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    img[446 + 12..446 + 16].copy_from_slice(&((sectors - 1) as u32).to_le_bytes());
    img[510] = 0x55;
    img[511] = 0xaa;
    let h = &mut img[512..1024];
    h[..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&1u64.to_le_bytes());
    h[32..40].copy_from_slice(&(sectors - 1).to_le_bytes());
    h[40..48].copy_from_slice(&34u64.to_le_bytes());
    h[48..56].copy_from_slice(&(sectors - 34).to_le_bytes());
    h[72..80].copy_from_slice(&2u64.to_le_bytes());
    h[80..84].copy_from_slice(&4096u32.to_le_bytes());
    h[84..88].copy_from_slice(&(1u32 << 30).to_le_bytes());
    let crc = crc32(&h[..92]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    img
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn image_info(pair: &Pair, url: &str, id: &str, sum: &str, format: &str) -> Value {
    json!({
        "id": id, "urls": [url], "disk_format": format, "container_format": "bare",
        "stream_raw_images": true, "os_hash_algo": "sha256", "os_hash_value": sum,
        "checksum": sum, "node_uuid": pair.uuid,
    })
}

fn details(r: &Value) -> String {
    assert_eq!(r["command_status"], "FAILED", "{r}");
    r["command_error"]["details"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn pair_on(disk: &LoopDevice, extra: &[&str]) -> Pair {
    let disks = format!("ferrite-disks={}", disk.path.display());
    let mut params = vec![
        disks.as_str(),
        "ipa-image-download-connection-retry-interval=0.2",
        "ipa-image-download-connection-retries=1",
    ];
    params.extend_from_slice(extra);
    Pair::start(&[], "52:54:00:ff:0e:01", &params).await
}

/// Item 8: shared L2 tables, a forged GPT, and item 10: a file:// URL,
/// through the real agent API on a loop device. Each command fails with
/// its reason; the agent still answers and its peak memory stayed bounded.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_images_fail_the_command_not_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let qcow = gzip(&shared_l2_qcow2(4 << 30));
    assert!(
        qcow.len() < 4 << 10,
        "a tiny reproducer: {} bytes",
        qcow.len()
    );
    std::fs::write(dir.path().join("shared-l2.qcow2.gz"), &qcow).unwrap();
    let gpt = forged_gpt_image(8 << 20);
    std::fs::write(dir.path().join("forged-gpt.img"), &gpt).unwrap();
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    let disk = LoopDevice::new(dir.path(), "root.loop", 5 << 30, false);
    let pair = pair_on(&disk, &[]).await;
    let api = pair.api();
    let pid = pair.agent.proc.child.id();

    let info = image_info(
        &pair,
        &server.url_of("shared-l2.qcow2.gz"),
        "shared-l2",
        &sha256(&qcow),
        "qcow2",
    );
    let r = api
        .run("standby.prepare_image", json!({"image_info": info}))
        .await;
    let d = details(&r);
    assert!(d.contains("is referenced by more than one L1 entry"), "{d}");
    assert_eq!(r["command_error"]["type"], "InvalidImage", "{r}");

    let info = image_info(
        &pair,
        &server.url_of("forged-gpt.img"),
        "forged-gpt",
        &sha256(&gpt),
        "raw",
    );
    let r = api
        .run("standby.prepare_image", json!({"image_info": info}))
        .await;
    let d = details(&r);
    assert!(
        d.contains("GPT with 4096 entries of 1073741824 bytes is not valid"),
        "{d}"
    );

    // Item 10: a local file is refused by default, whatever it holds.
    let local = dir.path().join("forged-gpt.img");
    let info = image_info(
        &pair,
        &format!("file://{}", local.display()),
        "local",
        &sha256(&gpt),
        "raw",
    );
    let r = api
        .run("standby.prepare_image", json!({"image_info": info}))
        .await;
    let d = details(&r);
    assert!(
        d.contains("is not an http(s) URL") && d.contains("ferrite-allow-file-images=1"),
        "{d}"
    );

    // Item 11: pstore belongs to the host here: refused, like power.
    let r = api
        .run(
            "clean.execute_clean_step",
            json!({"step": {"step": "erase_pstore", "interface": "deploy", "priority": 0},
                   "node": {}, "ports": [], "clean_version": {"generic_hardware_manager": "1.2"}}),
        )
        .await;
    let d = details(&r);
    assert!(d.contains("refusing to erase pstore"), "{d}");

    // Still serving, and never past the budget.
    let (code, _) = api
        .get(&format!("/v1/commands/?agent_token={}", api.token))
        .await;
    assert_eq!(code, 200);
    let hwm = vm_hwm_kb(pid);
    println!("agent VmHWM after the hostile images: {hwm} kB");
    assert!(hwm < MEMORY_BUDGET_KB, "agent peak memory {hwm} kB");
    // Huge pages would inflate that peak by tens of MiB: the agent turns
    // them off for itself.
    assert_eq!(proc_status(pid, "THP_enabled:"), "0", "THP for the agent");

    // Item 11: a 100 MB body gets a 413 with IPA's fault body.
    let resp = api
        .client
        .post(format!(
            "{}/v1/commands/?agent_token={}",
            api.base, api.token
        ))
        .header("Content-Type", "application/json")
        .body(vec![b' '; 100_000_000])
        .send()
        .await
        .expect("a 413, not a closed connection");
    assert_eq!(resp.status().as_u16(), 413);
    let fault: Value = resp.json().await.unwrap();
    assert_eq!(fault["faultcode"], "Client", "{fault}");
    assert!(
        fault["faultstring"]
            .as_str()
            .unwrap()
            .starts_with("413 Request Entity Too Large"),
        "{fault}"
    );

    let (code, _) = api
        .get(&format!("/v1/commands/?agent_token={}", api.token))
        .await;
    assert_eq!(code, 200);
}

/// Item 8: a qcow2 inside gzip is sequential: its virtual size is checked
/// against the disk as soon as the header arrives, before any data lands.
#[tokio::test(flavor = "multi_thread")]
async fn sequential_qcow2_too_big_for_the_disk_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("big.raw");
    let f = std::fs::File::create(&raw).unwrap();
    f.set_len(1 << 30).unwrap();
    f.write_all_at(&noise(3, 1 << 20), 32 << 20).unwrap();
    drop(f);
    let qcow = to_qcow2(&raw, &dir.path().join("big.qcow2"), &[]);
    let gz = compress(&qcow, &dir.path().join("big.qcow2.gz"), "gz");
    let disk = LoopDevice::new(dir.path(), "small.loop", 64 << 20, true);
    let mut before = vec![0u8; 1 << 20];
    std::fs::File::open(&disk.path)
        .unwrap()
        .read_exact_at(&mut before, 32 << 20)
        .unwrap();
    let out = write_image(&gz.display().to_string(), &disk.path, &[]);
    assert_fails(&out, "the image needs 1073741824 bytes");
    let mut after = vec![0u8; 1 << 20];
    std::fs::File::open(&disk.path)
        .unwrap()
        .read_exact_at(&mut after, 32 << 20)
        .unwrap();
    assert!(after == before, "data was written before the size check");
}

/// Item 8: 32 GiB of zeros in 32 MiB of gzip is refused as soon as the
/// output passes the 64 MiB disk, not after inflating all of it.
#[tokio::test(flavor = "multi_thread")]
async fn decompression_bomb_is_refused_at_the_disk_size() {
    let dir = tempfile::tempdir().unwrap();
    let member = gzip(&vec![0u8; 64 << 20]);
    let bomb = dir.path().join("bomb.raw.gz");
    let mut f = std::fs::File::create(&bomb).unwrap();
    for _ in 0..512 {
        f.write_all(&member).unwrap();
    }
    drop(f);
    let disk = LoopDevice::new(dir.path(), "small.loop", 64 << 20, false);
    let t = Instant::now();
    let out = write_image(&bomb.display().to_string(), &disk.path, &[]);
    let took = t.elapsed();
    assert_fails(&out, "holds only 67108864");
    println!("bomb refused after {took:?}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

/// Item 10 (CLI): a local path needs the explicit opt-in.
#[test]
fn local_sources_need_the_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.raw");
    std::fs::write(&img, noise(1, 4096)).unwrap();
    let out = std::process::Command::new(ferrite_tests::bin("ferrite-agent"))
        .args(["write-image", "--source"])
        .arg(&img)
        .arg("--target")
        .arg(dir.path().join("out.raw"))
        .output()
        .unwrap();
    assert_fails(&out, "ferrite-allow-file-images=1");
}

/// A server that answers every request with a redirect to itself.
async fn redirect_loop_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/loop", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    url
}

/// A server that sends headers, then one byte every 20 s.
async fn trickle_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/slow.img", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                    .await;
                loop {
                    if s.write_all(b"\0").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(20)).await;
                }
            });
        }
    });
    url
}

/// Item 11: the error for a redirect loop says so.
#[tokio::test(flavor = "multi_thread")]
async fn too_many_redirects_says_so() {
    let url = redirect_loop_server().await;
    let dir = tempfile::tempdir().unwrap();
    let out = write_image(&url, &dir.path().join("out.raw"), &[]);
    assert_fails(&out, "too many redirects");
}

/// Item 11: `ipa-image-download-max-duration` ends a trickling download
/// with IPA's ImageDownloadTimeoutError instead of RUNNING forever.
#[tokio::test(flavor = "multi_thread")]
async fn trickling_server_hits_the_download_deadline() {
    let url = trickle_server().await;
    let dir = tempfile::tempdir().unwrap();
    let disk = LoopDevice::new(dir.path(), "root.loop", 5 << 30, false);
    let pair = pair_on(&disk, &["ipa-image-download-max-duration=3"]).await;
    let api = pair.api();
    let info = image_info(&pair, &url, "slow", &"0".repeat(64), "raw");
    let t = Instant::now();
    let r = api
        .run("standby.prepare_image", json!({"image_info": info}))
        .await;
    let took = t.elapsed();
    let d = details(&r);
    assert_eq!(
        r["command_error"]["type"], "ImageDownloadTimeoutError",
        "{r}"
    );
    assert_eq!(r["command_error"]["code"], 408, "{r}");
    assert!(d.contains("ipa-image-download-max-duration"), "{d}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}
