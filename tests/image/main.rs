//! The image engine end to end: real `qemu-img` images served over HTTP on
//! 127.0.0.1, written by the real `ferrite-agent` binary to files and loop
//! devices, compared byte for byte with `qemu-img convert -O raw`.

mod agent_commands;
mod agent_restart;
mod download_settings;
mod faults;
mod formats;
mod hostile;
mod loopdev;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferrite_tests::bin;

/// `ferrite-agent write-image` with fast retries (local sources allowed
/// explicitly, as standalone use must).
pub fn write_image(source: &str, target: &Path, extra: &[&str]) -> Output {
    let local = !source.starts_with("http://") && !source.starts_with("https://");
    Command::new(bin("ferrite-agent"))
        .arg("write-image")
        .args(local.then_some("--allow-file-images"))
        .args([
            "--retries",
            "3",
            "--retry-interval",
            "0.2",
            "--read-timeout",
            "5",
            "--source",
            source,
            "--target",
        ])
        .arg(target)
        .args(extra)
        .env("FERRITE_LOG", "info")
        .output()
        .expect("run ferrite-agent write-image")
}

pub fn assert_ok(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "write-image failed:\n{text}");
    text
}

pub fn assert_fails(out: &Output, needle: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "expected failure, got:\n{text}");
    assert!(text.contains(needle), "error lacks {needle:?}:\n{text}");
    text
}

/// A scratch dir with a fixture raw disk of `size` bytes.
pub fn fixture(size: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = ferrite_tests::images::make_raw(&dir.path().join("disk.raw"), size);
    (dir, raw)
}
