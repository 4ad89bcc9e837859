//! Bad input and bad networks: each is a clear error, or (for a broken
//! connection) a resumed download whose result is still exact.

use std::os::unix::fs::FileExt as _;
use std::process::Command;

use ferrite_tests::image_server::ImageServer;
use ferrite_tests::images::{run, same_prefix, sha256_file, to_qcow2, LoopDevice};

use crate::{assert_fails, assert_ok, fixture, write_image};

const SIZE: u64 = 24 << 20;

#[tokio::test(flavor = "multi_thread")]
async fn connection_cuts_resume_with_range_and_the_result_is_identical() {
    let (dir, raw) = fixture(SIZE);
    let qcow = to_qcow2(&raw, &dir.path().join("disk.qcow2"), &[]);
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    for (name, len) in [
        ("disk.raw", SIZE),
        ("disk.qcow2", std::fs::metadata(&qcow).unwrap().len()),
    ] {
        // Cut the stream at several offsets, including mid-chunk and off by one.
        server.faults().cut_after = [1 << 20, (3 << 20) + 1, (5 << 20) + 4095]
            .into_iter()
            .collect();
        let out = dir.path().join(format!("{name}.out"));
        let sum = sha256_file(&dir.path().join(name));
        let text = assert_ok(&write_image(
            &server.url_of(name),
            &out,
            &["--checksum", &format!("sha256:{sum}")],
        ));
        assert!(text.contains("download resumed"), "{text}");
        same_prefix(&out, &raw, SIZE).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ranged: Vec<_> = server
            .log()
            .iter()
            .filter_map(|l| l.range.clone())
            .filter(|r| r != "bytes=0-65535")
            .collect();
        assert!(
            ranged.iter().any(|r| r.ends_with('-') && r != "bytes=0-"),
            "{name}: no resume request in {ranged:?}"
        );
        assert!(len > 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_range_restarts_and_skips_what_was_written() {
    let (dir, raw) = fixture(SIZE);
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    {
        let mut f = server.faults();
        f.ignore_range = true;
        f.cut_after = [(7 << 20) + 3].into_iter().collect();
    }
    let out = dir.path().join("out.raw");
    let text = assert_ok(&write_image(
        &server.url_of("disk.raw"),
        &out,
        &["--checksum", &sha256_file(&raw)],
    ));
    assert!(text.contains("server ignored Range"), "{text}");
    same_prefix(&out, &raw, SIZE).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_checksum_fails_with_both_digests_and_the_disk_will_not_boot() {
    let (dir, raw) = fixture(SIZE);
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    let disk = LoopDevice::new(dir.path(), "disk.loop", 32 << 20, true);
    let wrong = "0".repeat(64);
    let actual = sha256_file(&raw);
    let text = assert_fails(
        &write_image(
            &server.url_of("disk.raw"),
            &disk.path,
            &["--checksum", &format!("sha256:{wrong}")],
        ),
        "checksum mismatch",
    );
    assert!(text.contains(&wrong) && text.contains(&actual), "{text}");
    // The half-trusted image must not boot: its first MiB is gone.
    let mut head = vec![1u8; 1 << 20];
    std::fs::File::open(&disk.path)
        .unwrap()
        .read_exact_at(&mut head, 0)
        .unwrap();
    assert!(
        head.iter().all(|b| *b == 0),
        "partition table area not wiped"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_and_corrupt_qcow2_are_clear_errors() {
    let (dir, raw) = fixture(SIZE);
    let good = to_qcow2(&raw, &dir.path().join("good.qcow2"), &[]);
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(
        dir.path().join("truncated.qcow2"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    // Inside a compressed stream the length is unknown: the end comes as a surprise.
    ferrite_tests::images::compress(
        &dir.path().join("truncated.qcow2"),
        &dir.path().join("truncated.qcow2.zst"),
        "zst",
    );

    // L1 table → first L2 table; point its first data entry past EOF.
    let be64 = |b: &[u8], o: usize| u64::from_be_bytes(b[o..o + 8].try_into().unwrap());
    let l1_off = be64(&bytes, 40) as usize;
    let l2_off = (be64(&bytes, l1_off) & 0x00ff_ffff_ffff_fe00) as usize;
    let mut bad_l2 = bytes.clone();
    bad_l2[l2_off..l2_off + 8]
        .copy_from_slice(&(0x8000_0000_0000_0000u64 | (1 << 40)).to_be_bytes());
    std::fs::write(dir.path().join("bad-l2.qcow2"), &bad_l2).unwrap();
    let mut bad_l1 = bytes.clone();
    bad_l1[l1_off..l1_off + 8]
        .copy_from_slice(&(0x8000_0000_0000_0000u64 | (1 << 41)).to_be_bytes());
    std::fs::write(dir.path().join("bad-l1.qcow2"), &bad_l1).unwrap();
    let mut unknown_feature = bytes.clone();
    unknown_feature[79] |= 1 << 5; // incompatible_features bit 5
    std::fs::write(dir.path().join("unknown.qcow2"), &unknown_feature).unwrap();

    let server = ImageServer::start(dir.path().to_path_buf()).await;
    let out = dir.path().join("out.raw");
    assert_fails(
        &write_image(&server.url_of("truncated.qcow2"), &out, &[]),
        "outside the file",
    );
    assert_fails(
        &write_image(&server.url_of("bad-l2.qcow2"), &out, &[]),
        "data cluster at 0x10000000000",
    );
    assert_fails(
        &write_image(&server.url_of("bad-l1.qcow2"), &out, &[]),
        "L2 table at 0x20000000000",
    );
    assert_fails(
        &write_image(&server.url_of("unknown.qcow2"), &out, &[]),
        "unknown incompatible features 0x20",
    );
    // Without Range the same corruption is found from the stream itself.
    server.faults().ignore_range = true;
    assert_fails(
        &write_image(&server.url_of("bad-l2.qcow2"), &out, &[]),
        "points outside the file",
    );
    assert_fails(
        &write_image(&server.url_of("truncated.qcow2"), &out, &[]),
        "points outside the file",
    );
    assert_fails(
        &write_image(&server.url_of("truncated.qcow2.zst"), &out, &[]),
        "truncated qcow2 image: the stream ended",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn images_qcow2_cannot_stream_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let qi = |args: &[&str]| run(Command::new("qemu-img").args(args).current_dir(d));
    qi(&["create", "-q", "-f", "qcow2", "base.qcow2", "16M"]);
    qi(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        "base.qcow2",
        "overlay.qcow2",
    ]);
    qi(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        "secret,id=s0,data=hunter22",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s0",
        "luks.qcow2",
        "16M",
    ]);
    qi(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "data_file=external.raw",
        "external.qcow2",
        "16M",
    ]);
    qi(&["create", "-q", "-f", "vmdk", "disk.vmdk", "16M"]);
    let server = ImageServer::start(d.to_path_buf()).await;
    let out = d.join("out.raw");
    assert_fails(
        &write_image(&server.url_of("overlay.qcow2"), &out, &[]),
        "backing file",
    );
    assert_fails(
        &write_image(&server.url_of("luks.qcow2"), &out, &[]),
        "encrypted image",
    );
    assert_fails(
        &write_image(&server.url_of("external.qcow2"), &out, &[]),
        "external data file",
    );
    assert_fails(
        &write_image(&server.url_of("disk.vmdk"), &out, &[]),
        "vmdk is not supported",
    );
    assert_fails(
        &write_image(&server.url_of("base.qcow2"), &out, &["--format", "raw"]),
        "declared raw but its content is qcow2",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn image_larger_than_the_target_fails_before_writing() {
    let (dir, raw) = fixture(SIZE);
    to_qcow2(&raw, &dir.path().join("disk.qcow2"), &[]);
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    let disk = LoopDevice::new(dir.path(), "small.loop", 16 << 20, true);
    let before = sha256_file(disk.backing());
    for name in ["disk.qcow2", "disk.raw"] {
        let text = assert_fails(
            &write_image(&server.url_of(name), &disk.path, &[]),
            "holds only 16777216",
        );
        assert!(text.contains(&format!("needs {SIZE} bytes")), "{text}");
    }
    assert_eq!(
        sha256_file(disk.backing()),
        before,
        "nothing may be written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_errors() {
    let (dir, _raw) = fixture(SIZE);
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    let out = dir.path().join("out.raw");
    assert_fails(
        &write_image(&server.url_of("missing.raw"), &out, &[]),
        "answered HTTP 404",
    );
    assert_eq!(server.log().len(), 1, "4xx is not retried");

    server.faults().status = Some((500, 100));
    assert_fails(
        &write_image(&server.url_of("disk.raw"), &out, &[]),
        "gave up after 3 retries",
    );
    assert_eq!(server.log().len(), 5);

    server.faults().status = Some((503, 2));
    assert_ok(&write_image(&server.url_of("disk.raw"), &out, &[]));

    let dead = format!("http://127.0.0.1:{}/disk.raw", ferrite_tests::free_port());
    assert_fails(&write_image(&dead, &out, &[]), "gave up after 3 retries");
}
