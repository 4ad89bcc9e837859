//! Throughput of each checksum implementation the agent could use, on this
//! CPU, in the build it runs (`scripts/bench-hash` runs it from the static
//! musl release build). Not a test: a measurement.

use std::time::Instant;

use md5::Md5;
use sha2::{Digest, Sha256, Sha512};

const MIB: usize = 1 << 20;

fn measure(name: &str, total: usize, chunk: &[u8], mut f: impl FnMut(&[u8])) {
    // One pass to warm up caches and lazy CPU-feature detection.
    f(chunk);
    let rounds = total / chunk.len();
    let t = Instant::now();
    for _ in 0..rounds {
        f(chunk);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{name:<22} {:>8.0} MB/s",
        (rounds * chunk.len()) as f64 / secs / 1e6
    );
}

fn main() {
    let total_mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2048);
    let total = total_mib * MIB;
    // Not zeros: some implementations are data-independent, but be fair.
    let chunk: Vec<u8> = (0..MIB as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    println!("hashing {total_mib} MiB in 1 MiB updates");

    let mut h = Sha256::new();
    measure("sha256 (sha2 crate)", total, &chunk, |c| h.update(c));
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    measure("sha256 (ring)", total, &chunk, |c| h.update(c));
    let mut h = Sha512::new();
    measure("sha512 (sha2 crate)", total, &chunk, |c| h.update(c));
    let mut h = ring::digest::Context::new(&ring::digest::SHA512);
    measure("sha512 (ring)", total, &chunk, |c| h.update(c));
    let mut h = Md5::new();
    measure("md5 (md-5 crate)", total, &chunk, |c| h.update(c));
    // What the memory system allows: the ceiling for any single pass.
    let mut sink = vec![0u8; MIB];
    measure("memcpy (reference)", total, &chunk, |c| {
        sink.copy_from_slice(c)
    });
}
