//! IPA's optional inspection collectors, natively: `pci-devices`,
//! `numa-topology`, `dmi-decode`, `usb-devices` and `extra-hardware`. Each
//! reads sysfs, procfs or the SMBIOS table under the agent's roots and
//! returns the value IPA puts under its key of the inspection data
//! (`pci_devices`, `numa_topology`, `dmi`, `usb_devices`, `data`). A
//! collector that cannot read its source returns an error; the caller logs
//! it and leaves the key out, so a collector never fails an inspection.

pub mod dmi;
pub mod extra;
pub mod numa;
pub mod pci;
pub mod usb;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Longest sysfs/procfs attribute a collector reads (a page, as the kernel
/// hands out; `meminfo` and `cpuinfo` lines are read in full elsewhere).
pub const ATTR_LIMIT: u64 = 4096;
/// Longest SMBIOS table read (SMBIOS 3 tables of large servers stay far below).
pub const TABLE_LIMIT: u64 = 4 << 20;

/// Why a collector has nothing to report.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("unexpected content in {path}: {what}")]
    Format { path: PathBuf, what: String },
}

impl CollectorError {
    pub fn read(path: &Path, source: io::Error) -> Self {
        Self::Read {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn format(path: &Path, what: impl Into<String>) -> Self {
        Self::Format {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }
}

/// Read at most `limit` bytes of a file as (lossy) UTF-8.
pub fn read_bounded(path: &Path, limit: u64) -> Result<String, CollectorError> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|f| f.take(limit).read_to_end(&mut buf))
        .map_err(|e| CollectorError::read(path, e))?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// A binary table (the SMBIOS table), bounded by [`TABLE_LIMIT`].
pub fn read_table(path: &Path) -> Result<Vec<u8>, CollectorError> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|f| f.take(TABLE_LIMIT).read_to_end(&mut buf))
        .map_err(|e| CollectorError::read(path, e))?;
    Ok(buf)
}

/// A sysfs attribute, trimmed.
pub fn read_attr(path: &Path) -> Result<String, CollectorError> {
    Ok(read_bounded(path, ATTR_LIMIT)?.trim().to_string())
}

/// The entry names of a directory, sorted (sysfs order is not stable).
pub fn list_dir(dir: &Path) -> Result<Vec<String>, CollectorError> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| CollectorError::read(dir, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by(|a, b| natural_cmp(a, b));
    Ok(names)
}

/// `cpu2` before `cpu10`: compare digit runs as numbers.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(s: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut text = String::new();
        let mut num: Option<u64> = None;
        for c in s.chars() {
            match (c.to_digit(10), num) {
                (Some(d), Some(n)) => num = Some(n.saturating_mul(10).saturating_add(d.into())),
                (Some(d), None) => num = Some(d.into()),
                (None, Some(n)) => {
                    out.push((std::mem::take(&mut text), n));
                    num = None;
                    text.push(c);
                }
                (None, None) => text.push(c),
            }
        }
        out.push((text, num.unwrap_or(0)));
        out
    }
    key(a).cmp(&key(b)).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big");
        std::fs::write(&f, vec![b'x'; 10_000]).unwrap();
        assert_eq!(read_attr(&f).unwrap().len(), ATTR_LIMIT as usize);
        assert!(matches!(
            read_attr(&dir.path().join("missing")),
            Err(CollectorError::Read { .. })
        ));
    }

    /// IPA 13's own collectors on the same captured tree
    /// (scripts/ipa-collectors-reference) report what ours do, up to the
    /// order of directory listings.
    #[test]
    fn matches_ipa_13_on_a_captured_machine() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let ipa: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(base.join("collectors/ferrite-ci-host.ipa-13.json")).unwrap(),
        )
        .unwrap();
        let sys = base.join("hardware/ferrite-ci-host/sys");
        let sorted = |v: &serde_json::Value, keys: &[&str]| {
            let mut items = v.as_array().cloned().unwrap_or_default();
            items.sort_by_key(|i| keys.iter().map(|k| i[k].to_string()).collect::<Vec<_>>());
            items
        };
        let ours = serde_json::to_value(pci::collect(&sys).unwrap()).unwrap();
        assert_eq!(ours.as_array().map(Vec::len), Some(6));
        assert_eq!(
            sorted(&ours, &["bus"]),
            sorted(&ipa["pci_devices"], &["bus"])
        );
        let ours = serde_json::to_value(numa::collect(&sys).unwrap().unwrap()).unwrap();
        let ipa = &ipa["numa_topology"];
        assert_eq!(ours["ram"], ipa["ram"]);
        assert_eq!(ours["nics"], ipa["nics"]);
        assert_eq!(
            sorted(&ours["cpus"], &["numa_node", "cpu"]),
            sorted(&ipa["cpus"], &["numa_node", "cpu"])
        );
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["cpu10", "cpu2", "node1", "cpu1", "cpu"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["cpu", "cpu1", "cpu2", "cpu10", "node1"]);
    }
}
