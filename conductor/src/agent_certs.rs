//! The certificates agents send with their heartbeats (auto-TLS). The
//! database holds each one, so that every conductor can verify the agent;
//! `<data-dir>/certificates/<node>.crt` is this conductor's local copy,
//! which the TLS client reads.

use std::io::Write;
use std::path::{Path, PathBuf};

pub fn cache_path(dir: &Path, node_uuid: &str) -> PathBuf {
    dir.join(format!("{node_uuid}.crt"))
}

pub fn read_cache(dir: &Path, node_uuid: &str) -> Option<String> {
    std::fs::read_to_string(cache_path(dir, node_uuid)).ok()
}

/// Write the local copy whole (a temporary file and a rename), so that a
/// reader never sees half a certificate.
pub fn write_cache(dir: &Path, node_uuid: &str, pem: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = cache_path(dir, node_uuid);
    let mut tmp = tempfile::Builder::new()
        .prefix(".agent-cert-")
        .suffix(".partial")
        .tempfile_in(dir)?;
    tmp.write_all(pem.as_bytes())?;
    tmp.persist(&path).map_err(|e| e.error)?;
    Ok(path)
}
