//! In-line checksums: the downloaded bytes are hashed as they pass, so
//! verification costs no second read. Accepts what Ironic sends:
//! `os_hash_algo`/`os_hash_value`, a bare legacy `checksum` (algorithm by
//! length), or `checksum` as a URL of a checksums file.
//!
//! The digest runs on a thread of its own ([`HashThread`]): SHA-256 at
//! hardware speed is still about as fast as the disk, so it must overlap
//! the decode and the writes instead of adding to them.

use std::fmt;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

use md5::{Digest, Md5};
use sha2::Sha512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    Md5,
    Sha256,
    Sha512,
}

impl Algo {
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "md5" => Some(Self::Md5),
            "sha256" => Some(Self::Sha256),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// IPA picks the algorithm of a bare checksum by its length.
    pub fn by_hex_len(len: usize) -> Option<Self> {
        match len {
            32 => Some(Self::Md5),
            64 => Some(Self::Sha256),
            128 => Some(Self::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for Algo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Md5 => "md5",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        })
    }
}

/// An expected digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub algo: Algo,
    pub hex: String,
}

impl Expected {
    pub fn new(algo: Algo, hex: &str) -> Result<Self, String> {
        let hex = hex.trim().to_ascii_lowercase();
        let want = match algo {
            Algo::Md5 => 32,
            Algo::Sha256 => 64,
            Algo::Sha512 => 128,
        };
        if hex.len() != want || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "{algo} checksum must be {want} hex digits, got {hex:?}"
            ));
        }
        Ok(Self { algo, hex })
    }

    /// `algo:hex` (the CLI form) or a bare hex digest.
    pub fn parse_cli(spec: &str) -> Result<Self, String> {
        match spec.split_once(':') {
            Some((algo, hex)) => Self::new(
                Algo::parse(algo).ok_or_else(|| format!("unknown checksum algorithm {algo:?}"))?,
                hex,
            ),
            None => Self::new(
                Algo::by_hex_len(spec.trim().len())
                    .ok_or_else(|| format!("cannot tell the algorithm of checksum {spec:?}"))?,
                spec,
            ),
        }
    }
}

/// The implementations are the fastest measured on x86_64 by
/// `scripts/bench-hash`: ring's SHA-256 uses SHA-NI (about 1 GB/s, 3.5x
/// the sha2 crate's in the static build); for SHA-512, which no common
/// CPU accelerates, the sha2 crate is slightly ahead of ring.
pub enum Hasher {
    Md5(Md5),
    Sha256(ring::digest::Context),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algo: Algo) -> Self {
        match algo {
            Algo::Md5 => Self::Md5(Md5::new()),
            Algo::Sha256 => Self::Sha256(ring::digest::Context::new(&ring::digest::SHA256)),
            Algo::Sha512 => Self::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Md5(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    pub fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Self::Md5(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finish().as_ref().to_vec(),
            Self::Sha512(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Downloaded chunks waiting for the hash thread. Each holds a reference to
/// a chunk the decoder also holds, so this bounds how far the decoder may
/// run ahead of the digest (and the memory that costs: this many MiB).
const HASH_QUEUE: usize = 4;

/// A [`Hasher`] on its own thread, fed chunks by reference (no copy).
pub struct HashThread {
    tx: Option<SyncSender<Bytes>>,
    handle: Option<JoinHandle<(String, Duration)>>,
}

impl HashThread {
    pub fn start(algo: Algo) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Bytes>(HASH_QUEUE);
        let handle = std::thread::Builder::new()
            .name(format!("image-{algo}"))
            .spawn(move || {
                let mut h = Hasher::new(algo);
                let mut busy = Duration::ZERO;
                for chunk in rx {
                    let t = Instant::now();
                    h.update(&chunk);
                    busy += t.elapsed();
                }
                (h.hex(), busy)
            })?;
        Ok(Self {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// Queue a chunk; waits only when the hash is `HASH_QUEUE` chunks behind.
    pub fn update(&mut self, chunk: Bytes) {
        if let Some(tx) = &self.tx {
            // The thread only stops when `tx` is dropped: a send cannot fail.
            let _ = tx.send(chunk);
        }
    }

    /// The digest of everything queued, and the time spent hashing.
    pub fn finish(mut self) -> Option<(String, Duration)> {
        drop(self.tx.take());
        self.handle.take()?.join().ok()
    }
}

impl Drop for HashThread {
    /// On an abandoned write the thread drains its queue and ends by itself.
    fn drop(&mut self) {
        drop(self.tx.take());
    }
}

/// Find the digest for `file_name` in a checksums file: one bare hash,
/// `HASH  name`, `HASH *name`, `name HASH`, or `ALGO (name) = HASH`.
pub fn find_in_checksums_file(text: &str, file_name: &str) -> Option<String> {
    let is_hex =
        |s: &str| !s.is_empty() && s.len() >= 32 && s.chars().all(|c| c.is_ascii_hexdigit());
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if let [only] = lines.as_slice() {
        if is_hex(only) {
            return Some(only.to_string());
        }
    }
    for line in lines {
        // BSD/CentOS style: SHA256 (name) = HASH
        if let Some((left, hash)) = line.split_once(") = ") {
            if let Some((_, name)) = left.split_once(" (") {
                if name == file_name && is_hex(hash.trim()) {
                    return Some(hash.trim().to_string());
                }
            }
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(a), Some(b)) = (parts.next(), parts.next()) else {
            continue;
        };
        let b = b.trim_start_matches('*');
        if is_hex(a) && b == file_name {
            return Some(a.to_string());
        }
        if a.trim_start_matches('*') == file_name && is_hex(b) {
            return Some(b.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_known_vectors() {
        let mut h = Hasher::new(Algo::Sha256);
        h.update(b"abc");
        assert_eq!(
            h.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut m = Hasher::new(Algo::Md5);
        m.update(b"abc");
        assert_eq!(m.hex(), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn the_hash_thread_agrees_with_the_inline_hasher() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        for algo in [Algo::Md5, Algo::Sha256, Algo::Sha512] {
            let mut inline = Hasher::new(algo);
            inline.update(&data);
            let mut threaded = HashThread::start(algo).unwrap();
            for piece in data.chunks(1 << 20) {
                threaded.update(Bytes::copy_from_slice(piece));
            }
            assert_eq!(threaded.finish().unwrap().0, inline.hex(), "{algo}");
        }
    }

    #[test]
    fn checksum_files() {
        let h = "a".repeat(64);
        assert_eq!(
            find_in_checksums_file(&format!("{h}\n"), "x.img").as_deref(),
            Some(h.as_str())
        );
        let multi = format!("# comment\n{}  other.img\n{h} *disk.img\n", "b".repeat(64));
        assert_eq!(
            find_in_checksums_file(&multi, "disk.img").as_deref(),
            Some(h.as_str())
        );
        let reversed = format!("disk.img {h}\n");
        assert_eq!(
            find_in_checksums_file(&reversed, "disk.img").as_deref(),
            Some(h.as_str())
        );
        let bsd = format!(
            "SHA256 (disk.img) = {h}\nSHA256 (o.img) = {}\n",
            "c".repeat(64)
        );
        assert_eq!(
            find_in_checksums_file(&bsd, "disk.img").as_deref(),
            Some(h.as_str())
        );
        assert_eq!(find_in_checksums_file(&bsd, "missing.img"), None);
    }

    #[test]
    fn cli_specs() {
        assert_eq!(
            Expected::parse_cli(&format!("sha512:{}", "A".repeat(128)))
                .unwrap()
                .algo,
            Algo::Sha512
        );
        assert_eq!(
            Expected::parse_cli(&"f".repeat(32)).unwrap().algo,
            Algo::Md5
        );
        assert!(Expected::parse_cli("sha256:abc").is_err());
        assert!(Expected::parse_cli("crc32:abcd").is_err());
    }
}
