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
    /// Partition nodes made by `partition_nodes` (no udev here), removed on drop.
    made_nodes: std::cell::RefCell<Vec<PathBuf>>,
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
            .args(["--find", "--show", "--partscan"])
            .arg(&backing));
        Self {
            path: PathBuf::from(out.trim()),
            backing,
            made_nodes: Default::default(),
        }
    }

    pub fn backing(&self) -> &Path {
        &self.backing
    }

    fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Partitions the kernel sees now (`/sys/block/loopN/loopNpK`).
    pub fn kernel_partitions(&self) -> Vec<String> {
        let dir = Path::new("/sys/block").join(self.name());
        let mut parts: Vec<String> = fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().join("partition").exists())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        parts.sort();
        parts
    }

    /// Re-read the partition table and make the /dev nodes udev would make.
    pub fn partition_nodes(&self) -> Vec<PathBuf> {
        let _ = Command::new("partx").arg("-u").arg(&self.path).status();
        let mut out = Vec::new();
        for part in self.kernel_partitions() {
            let node = Path::new("/dev").join(&part);
            if !node.exists() {
                let devnum = fs::read_to_string(
                    Path::new("/sys/block")
                        .join(self.name())
                        .join(&part)
                        .join("dev"),
                )
                .expect("dev");
                let (major, minor) = devnum.trim().split_once(':').expect("major:minor");
                run(Command::new("mknod")
                    .arg(&node)
                    .arg("b")
                    .arg(major)
                    .arg(minor));
                self.made_nodes.borrow_mut().push(node.clone());
            }
            out.push(node);
        }
        out
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        for node in self.made_nodes.borrow().iter() {
            let _ = fs::remove_file(node);
        }
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

/// Write a Linux software-RAID v1.2 member superblock (4 KiB into the
/// device), checksummed as the kernel and libblkid expect. For kernels
/// without md support, where `mdadm --create` cannot run.
pub fn write_md_v12_superblock(dev: &Path, uuid_seed: u8) {
    let max_dev: u32 = 2;
    let len = 256 + 2 * max_dev as usize;
    let mut sb = vec![0u8; len];
    let put32 =
        |sb: &mut [u8], off: usize, v: u32| sb[off..off + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |sb: &mut [u8], off: usize, v: u64| sb[off..off + 8].copy_from_slice(&v.to_le_bytes());
    put32(&mut sb, 0, 0xa92b_4efc); // magic
    put32(&mut sb, 4, 1); // major_version
    for (i, b) in sb[16..32].iter_mut().enumerate() {
        *b = uuid_seed.wrapping_add(i as u8); // set_uuid
    }
    sb[32..32 + 12].copy_from_slice(b"ferrite:test");
    put32(&mut sb, 72, 1); // level: raid1
    put32(&mut sb, 92, 2); // raid_disks
    put64(&mut sb, 128, 2048); // data_offset (sectors)
    put64(&mut sb, 136, 8192); // data_size
    put64(&mut sb, 144, 8); // super_offset: sector 8 = 4 KiB
    put32(&mut sb, 220, max_dev);
    let mut sum: u64 = sb
        .chunks_exact(4)
        .map(|w| u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
        .sum();
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    put32(&mut sb, 216, sum as u32);
    let f = OpenOptions::new()
        .write(true)
        .open(dev)
        .expect("open md member");
    f.write_all_at(&sb, 4096).expect("write md superblock");
    f.sync_all().expect("sync");
}
