//! Every qcow2 flavour qemu-img makes, and compressed raw, streamed over
//! HTTP: the written disk equals qemu-img's own conversion.

use std::process::Command;

use ferrite_tests::image_server::ImageServer;
use ferrite_tests::images::{compress, run, same_prefix, sha256_file, to_qcow2, to_raw};

use crate::{assert_ok, fixture, write_image};

const SIZE: u64 = (40 << 20) + 1536;

#[tokio::test(flavor = "multi_thread")]
async fn qcow2_variants_are_byte_exact() {
    let (dir, raw) = fixture(SIZE);
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    let variants: &[(&str, &[&str])] = &[
        ("default", &[]),
        ("zlib", &["-c"]),
        ("zstd", &["-c", "-o", "compression_type=zstd"]),
        ("c512", &["-o", "cluster_size=512"]),
        ("c512-zlib", &["-c", "-o", "cluster_size=512"]),
        ("c4k", &["-o", "cluster_size=4096"]),
        ("c2m", &["-o", "cluster_size=2M"]),
        (
            "c2m-zstd",
            &["-c", "-o", "cluster_size=2M,compression_type=zstd"],
        ),
        ("extl2", &["-o", "extended_l2=on"]),
        ("extl2-c2m", &["-o", "extended_l2=on,cluster_size=2M"]),
        ("prealloc", &["-o", "preallocation=metadata"]),
        ("compat010", &["-o", "compat=0.10"]),
    ];
    let oracle = raw.clone();
    for (name, opts) in variants {
        let img = to_qcow2(&raw, &dir.path().join(format!("{name}.qcow2")), opts);
        let out = dir.path().join(format!("{name}.out"));
        let sum = sha256_file(&img);
        let res = write_image(
            &server.url_of(&format!("{name}.qcow2")),
            &out,
            &["--checksum", &format!("sha256:{sum}"), "--format", "qcow2"],
        );
        let text = assert_ok(&res);
        assert!(text.contains("verified"), "{name}: {text}");
        assert_eq!(std::fs::metadata(&out).unwrap().len(), SIZE, "{name}: size");
        same_prefix(&out, &oracle, SIZE).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn subclusters_zero_clusters_compressed_writes_and_several_l2_tables() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("crafted.qcow2");
    // 1.5 GiB virtual: three L2 tables at 64 KiB clusters, data in each.
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-o", "extended_l2=on"])
        .arg(&img)
        .arg("1536M"));
    run(Command::new("qemu-io")
        .arg("-c")
        .arg("write -P 0xab 4k 4k")
        .arg("-c")
        .arg("write -P 0xcd 100k 2k")
        .arg("-c")
        .arg("write -z 1M 64k")
        .arg("-c")
        .arg("write -c -P 0x11 2M 64k")
        .arg("-c")
        .arg("write -P 0x22 600M 192k")
        .arg("-c")
        .arg("write -P 0x33 1100M 8k")
        .arg("-c")
        .arg("write -P 0x44 1535M 1M")
        .arg(&img));
    let oracle = to_raw(&img, &dir.path().join("crafted.raw"));
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    let out = dir.path().join("out.raw");
    assert_ok(&write_image(&server.url_of("crafted.qcow2"), &out, &[]));
    same_prefix(&out, &oracle, 1536 << 20).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn compressed_raw_and_compressed_qcow2() {
    let (dir, raw) = fixture(SIZE);
    let qcow = to_qcow2(&raw, &dir.path().join("disk.qcow2"), &[]);
    for (src, kind) in [(&raw, "gz"), (&raw, "zst"), (&raw, "xz"), (&qcow, "zst")] {
        let name = format!("{}.{kind}", src.file_name().unwrap().to_string_lossy());
        compress(src, &dir.path().join(&name), kind);
    }
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    for name in [
        "disk.raw.gz",
        "disk.raw.zst",
        "disk.raw.xz",
        "disk.qcow2.zst",
    ] {
        let out = dir.path().join(format!("{name}.out"));
        let sum = sha256_file(&dir.path().join(name));
        let text = assert_ok(&write_image(
            &server.url_of(name),
            &out,
            &["--checksum", &sum],
        ));
        assert!(text.contains("verified"), "{text}");
        same_prefix(&out, &raw, SIZE).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn qcow2_without_range_support_streams_in_one_pass() {
    let (dir, raw) = fixture(SIZE);
    to_qcow2(&raw, &dir.path().join("disk.qcow2"), &["-c"]);
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    server.faults().ignore_range = true;
    let out = dir.path().join("out.raw");
    let text = assert_ok(&write_image(&server.url_of("disk.qcow2"), &out, &[]));
    same_prefix(&out, &raw, SIZE).unwrap();
    assert!(
        server.log().iter().all(|l| l.status == 200),
        "{:?}",
        server.log()
    );
    assert!(
        text.contains("passes=1"),
        "convert output has tables before data: one pass\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn local_paths_and_file_urls() {
    let (dir, raw) = fixture(SIZE);
    let img = to_qcow2(&raw, &dir.path().join("disk.qcow2"), &[]);
    for source in [
        img.display().to_string(),
        format!("file://{}", img.display()),
    ] {
        let out = dir.path().join("out.raw");
        assert_ok(&write_image(&source, &out, &[]));
        same_prefix(&out, &raw, SIZE).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_gib_sparse_image_stays_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("big.raw");
    let f = std::fs::File::create(&raw).unwrap();
    f.set_len(20 << 30).unwrap();
    use std::os::unix::fs::FileExt;
    for (i, off) in [0u64, 10 << 30, (20 << 30) - (1 << 20)].iter().enumerate() {
        f.write_all_at(&ferrite_tests::images::noise(i as u64 + 7, 1 << 20), *off)
            .unwrap();
    }
    let img = to_qcow2(&raw, &dir.path().join("big.qcow2"), &[]);
    std::fs::remove_file(&raw).unwrap();
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    let out = dir.path().join("out.raw");
    assert_ok(&write_image(&server.url_of("big.qcow2"), &out, &[]));
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(meta.len(), 20 << 30);
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.blocks() * 512 < 64 << 20,
        "output should be sparse, uses {} bytes",
        meta.blocks() * 512
    );
    run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(&out)
        .arg(&img));
}
