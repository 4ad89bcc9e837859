//! `log.collect_system_logs`: a base64 tar.gz of the agent's own log and
//! the kernel/system state a person debugging a failed deploy wants.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::json;

use crate::api::registry::{Mode, Registry};
use crate::errors::RestError;
use crate::state::AgentContext;

/// procfs files copied into the archive when present.
const PROC_FILES: &[&str] = &[
    "cmdline",
    "mounts",
    "meminfo",
    "partitions",
    "mdstat",
    "cpuinfo",
    "modules",
];
/// Cap on kernel log bytes read from /dev/kmsg.
const KMSG_LIMIT: usize = 1024 * 1024;

pub fn register(reg: &mut Registry) {
    reg.blocking(
        "log",
        "collect_system_logs",
        Mode::Sync,
        |ctx, _params, _progress| {
            let archive = build_archive(&ctx).map_err(|e| {
                RestError::command_execution(format!("collecting logs failed: {e}"))
            })?;
            Ok(json!({ "system_logs": base64::engine::general_purpose::STANDARD.encode(archive) }))
        },
    );
}

/// The archive `collect_system_logs` returns; inspection's `logs` collector
/// sends the same.
pub fn build_archive(ctx: &AgentContext) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    append(&mut tar, "ferrite-agent.log", &ctx.logs.snapshot())?;
    for name in PROC_FILES {
        if let Ok(data) = fs::read(ctx.config.procfs_root.join(name)) {
            append(&mut tar, &format!("proc/{name}"), &data)?;
        }
    }
    if let Ok(kmsg) = read_kmsg(Path::new("/dev/kmsg")) {
        append(&mut tar, "dmesg", &kmsg)?;
    }
    tar.into_inner()?.finish()
}

fn append<W: io::Write>(tar: &mut tar::Builder<W>, name: &str, data: &[u8]) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    header.set_cksum();
    tar.append_data(&mut header, name, data)
}

/// Read the kernel ring buffer without blocking: each read is one record,
/// EAGAIN means we have them all.
fn read_kmsg(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = File::options()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    let mut out = Vec::new();
    let mut record = vec![0u8; 8192];
    while out.len() < KMSG_LIMIT {
        match file.read(&mut record) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&record[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // EPIPE: records were overwritten while reading; keep going.
            Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
