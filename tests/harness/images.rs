//! Test images made by the real `qemu-img`, loop devices, and byte-exact
//! comparisons.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Deterministic bytes (xorshift), so fixtures need no /dev/urandom.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A raw disk with every kind of content an image has: incompressible
/// data, explicit zeros, compressible text, a hole, data near an
/// unaligned end. `size` must be a multiple of 512.
pub fn make_raw(path: &Path, size: u64) -> PathBuf {
    let f = File::create(path).expect("create raw");
    f.set_len(size).expect("size");
    let mib = 1u64 << 20;
    f.write_all_at(&noise(1, 3 * mib as usize), 0)
        .expect("write");
    f.write_all_at(&vec![0u8; mib as usize], 3 * mib)
        .expect("write");
    let text: Vec<u8> = b"ferrite streams images; "
        .iter()
        .copied()
        .cycle()
        .take(2 * mib as usize)
        .collect();
    f.write_all_at(&text, 4 * mib).expect("write");
    // Leave a hole, then odd-sized data straddling cluster boundaries.
    f.write_all_at(&noise(2, 777_777), size / 2 + 12_345)
        .expect("write");
    f.write_all_at(&noise(3, 100_000), size - 100_000)
        .expect("write");
    path.to_path_buf()
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `qemu-img convert -O qcow2 <opts> raw out`.
pub fn to_qcow2(raw: &Path, out: &Path, opts: &[&str]) -> PathBuf {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-f", "raw", "-O", "qcow2"])
        .args(opts)
        .arg(raw)
        .arg(out);
    run(&mut cmd);
    out.to_path_buf()
}

/// The oracle: what qemu-img says the guest disk holds.
pub fn to_raw(image: &Path, out: &Path) -> PathBuf {
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(image)
        .arg(out));
    out.to_path_buf()
}

pub fn sha256_file(path: &Path) -> String {
    let mut f = File::open(path).expect("open");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The first `len` bytes of two files/devices are identical.
pub fn same_prefix(a: &Path, b: &Path, len: u64) -> Result<(), String> {
    let (fa, fb) = (
        File::open(a).map_err(|e| e.to_string())?,
        File::open(b).map_err(|e| e.to_string())?,
    );
    let mut off = 0u64;
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    while off < len {
        let n = ((len - off) as usize).min(ba.len());
        fa.read_exact_at(&mut ba[..n], off)
            .map_err(|e| format!("{}: {e}", a.display()))?;
        fb.read_exact_at(&mut bb[..n], off)
            .map_err(|e| format!("{}: {e}", b.display()))?;
        if ba[..n] != bb[..n] {
            let i = (0..n).find(|i| ba[*i] != bb[*i]).unwrap_or(0);
            return Err(format!(
                "{} and {} differ at byte {}",
                a.display(),
                b.display(),
                off + i as u64
            ));
        }
        off += n as u64;
    }
    Ok(())
}

/// A loop device over a sparse file, detached on drop.
pub struct LoopDevice {
    pub path: PathBuf,
    backing: PathBuf,
}

impl LoopDevice {
    /// `size` bytes, filled with a garbage pattern first (a dirty disk)
    /// where `dirty` is set; only the first and last 64 MiB are dirtied
    /// when the disk is large.
    pub fn new(dir: &Path, name: &str, size: u64, dirty: bool) -> Self {
        let backing = dir.join(name);
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&backing)
            .expect("backing");
        f.set_len(size).expect("size");
        if dirty {
            let garbage: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8 | 1).collect();
            let dirty_len = size.min(64 << 20);
            for (start, len) in [(0, dirty_len), (size - dirty_len, dirty_len)] {
                let mut off = start;
                while off < start + len {
                    let n = ((start + len - off) as usize).min(garbage.len());
                    f.write_all_at(&garbage[..n], off).expect("dirty");
                    off += n as u64;
                }
            }
            f.sync_all().expect("sync");
        }
        let out = run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&backing));
        Self {
            path: PathBuf::from(out.trim()),
            backing,
        }
    }

    pub fn backing(&self) -> &Path {
        &self.backing
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
        let _ = fs::remove_file(&self.backing);
    }
}

/// Compress with the crates the agent decodes with (real gzip/zstd/xz streams).
pub fn compress(src: &Path, out: &Path, kind: &str) -> PathBuf {
    let mut input = File::open(src).expect("open");
    let output = File::create(out).expect("create");
    match kind {
        "gz" => {
            let mut w = flate2::write::GzEncoder::new(output, flate2::Compression::fast());
            std::io::copy(&mut input, &mut w).expect("gzip");
            w.finish().expect("gzip");
        }
        "zst" => {
            let mut w = zstd::stream::write::Encoder::new(output, 3).expect("zstd");
            std::io::copy(&mut input, &mut w).expect("zstd");
            w.finish().expect("zstd");
        }
        "xz" => {
            let mut w = liblzma::write::XzEncoder::new(output, 1);
            std::io::copy(&mut input, &mut w).expect("xz");
            w.finish().expect("xz").flush().expect("xz");
        }
        other => panic!("unknown compression {other}"),
    }
    out.to_path_buf()
}
