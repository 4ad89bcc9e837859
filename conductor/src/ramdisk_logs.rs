//! Ramdisk logs kept on the conductor, as Ironic's `local` storage backend
//! keeps them (`ironic/drivers/utils.py:store_ramdisk_logs`): the agent's
//! base64 tar.gz, decoded and written under one file per collection.

use std::fs;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use chrono::{DateTime, Utc};
use ferrite_protocol::node::Node;

/// Largest archive kept (decoded). A ramdisk's logs are a few MiB; more
/// is a broken or hostile agent.
pub const MAX_LOGS_BYTES: usize = 100 << 20;

/// Largest `collect_system_logs` reply read: the base64 of
/// [`MAX_LOGS_BYTES`] plus the JSON around it.
pub const MAX_REPLY_BYTES: usize = MAX_LOGS_BYTES / 3 * 4 + (1 << 20);

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("the agent's reply has no system_logs")]
    Missing,
    #[error("the logs are larger than the {} MiB limit", MAX_LOGS_BYTES >> 20)]
    TooLarge,
    #[error("the logs are not valid base64 ({0})")]
    Base64(#[from] base64::DecodeError),
    #[error("the logs are not a gzip archive")]
    NotGzip,
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Ironic's file name: `<uuid>[_<name>][_<instance uuid>][_<label>]_<UTC
/// %Y-%m-%d-%H-%M-%S>.tar.gz`. Fields are made path-safe (a name could
/// hold a `/`).
pub fn file_name(node: &Node, label: Option<&str>, now: DateTime<Utc>) -> String {
    let mut fields = vec![node.uuid.as_str()];
    fields.extend(node.name.as_deref().filter(|n| !n.is_empty()));
    fields.extend(node.instance_uuid.as_deref().filter(|n| !n.is_empty()));
    fields.extend(label);
    let mut name: Vec<String> = fields.into_iter().map(path_safe).collect();
    name.push(now.format("%Y-%m-%d-%H-%M-%S").to_string());
    format!("{}.tar.gz", name.join("_"))
}

/// Keep RFC 3986's unreserved characters (what Ironic allows in names).
fn path_safe(field: &str) -> String {
    field
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '.' | '_' | '~' => c,
            _ => '_',
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

/// The archive from `system_logs`, size-checked before and after decoding.
pub fn decode(encoded: &str) -> Result<Vec<u8>, LogsError> {
    // Python's base64 pads; accept either, as its decoder does.
    let engine = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    if encoded.len() / 4 * 3 > MAX_LOGS_BYTES + 3 {
        return Err(LogsError::TooLarge);
    }
    let data = engine.decode(encoded.trim())?;
    if data.len() > MAX_LOGS_BYTES {
        return Err(LogsError::TooLarge);
    }
    if !data.starts_with(&[0x1f, 0x8b]) {
        return Err(LogsError::NotGzip);
    }
    Ok(data)
}

/// Write `data` as `dir/name`, atomically (a temporary file in `dir`,
/// synced, renamed) and readable by the conductor's user only.
pub fn store(dir: &Path, name: &str, data: &[u8]) -> Result<PathBuf, LogsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LogsError::Io { path, source }
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let path = dir.join(name);
    // NamedTempFile is created 0600.
    let mut tmp = tempfile::Builder::new()
        .prefix(".ramdisk-logs-")
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(io(dir))?;
    tmp.write_all(data).map_err(io(tmp.path()))?;
    tmp.as_file().sync_all().map_err(io(tmp.path()))?;
    tmp.persist(&path).map_err(|e| LogsError::Io {
        path: path.clone(),
        source: e.error,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn node(name: Option<&str>, instance: Option<&str>) -> Node {
        Node {
            uuid: "1be26c0b-03f2-4d2e-ae87-c02d7f33c123".into(),
            name: name.map(str::to_string),
            instance_uuid: instance.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn names_follow_ironic() {
        let now = DateTime::parse_from_rfc3339("2026-12-02T14:05:09Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            file_name(&node(None, None), None, now),
            "1be26c0b-03f2-4d2e-ae87-c02d7f33c123_2026-12-02-14-05-09.tar.gz"
        );
        assert_eq!(
            file_name(&node(Some("web-1"), Some("inst")), Some("cleaning"), now),
            "1be26c0b-03f2-4d2e-ae87-c02d7f33c123_web-1_inst_cleaning_2026-12-02-14-05-09.tar.gz"
        );
        // No way out of the directory through a name.
        let sneaky = file_name(&node(Some("../../etc/x"), None), None, now);
        assert!(!sneaky.contains('/'), "{sneaky}");
    }

    #[test]
    fn decode_checks_base64_gzip_and_size() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let gz = [0x1f, 0x8b, 8, 0, 0, 0];
        assert_eq!(decode(&b64.encode(gz)).unwrap(), gz);
        // Unpadded, as some encoders send.
        assert_eq!(decode(b64.encode(gz).trim_end_matches('=')).unwrap(), gz);
        assert!(matches!(
            decode("!!not base64!!"),
            Err(LogsError::Base64(_))
        ));
        assert!(matches!(
            decode(&b64.encode(b"plain text")),
            Err(LogsError::NotGzip)
        ));
        let huge = "A".repeat(MAX_LOGS_BYTES / 3 * 4 + 16);
        assert!(matches!(decode(&huge), Err(LogsError::TooLarge)));
    }

    #[test]
    fn store_is_private_and_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("ramdisk-logs");
        let path = store(&logs, "n_2026.tar.gz", b"\x1f\x8bdata").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"\x1f\x8bdata");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Only the file: no temporary left beside it.
        let names: Vec<_> = fs::read_dir(&logs).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }
}
