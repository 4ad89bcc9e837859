//! `clean_uefi_nvram` (IPA's, a clean and deploy step of priority 0):
//! delete the `Boot####` entries whose device path, as `efibootmgr -v`
//! prints it, matches one of `match_patterns` (regular expressions, case
//! insensitive, searched anywhere in the path), and take them out of
//! `BootOrder`. Natively through efivarfs, no efibootmgr.

use std::path::Path;

use regex::{Regex, RegexBuilder};
use serde_json::Value;
use tracing::{debug, info};

use super::manager::StepCall;
use crate::bootloader::efi::EfiVars;
use crate::errors::RestError;

/// IPA's `DEFAULT_CLEAN_UEFI_NVRAM_MATCH_PATTERNS`: entries on a disk, and
/// shim or GRUB loaders wherever they are.
pub const DEFAULT_PATTERNS: [&str; 3] = [r"^HD\(", r"shim.*\.efi", r"grub.*\.efi"];

/// A compiled pattern may not grow past this (a hostile pattern is refused,
/// not run).
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// `match_patterns`: a list of strings, each a valid regular expression;
/// anything else is IPA's `InvalidCommandParamsError`.
pub fn parse_patterns(arg: Option<&Value>) -> Result<Vec<Regex>, RestError> {
    let invalid = |v: &Value| {
        RestError::invalid_params(format!("The match_patterns must be a list of strings: {v}"))
    };
    let texts: Vec<String> = match arg.filter(|v| !v.is_null()) {
        None => DEFAULT_PATTERNS.iter().map(|s| s.to_string()).collect(),
        Some(v @ Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or_else(|| invalid(v)))
            .collect::<Result<_, _>>()?,
        Some(v) => return Err(invalid(v)),
    };
    texts
        .iter()
        .map(|t| {
            RegexBuilder::new(t)
                .case_insensitive(true)
                .size_limit(PATTERN_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    RestError::invalid_params(format!(
                        "The match_patterns must be a list of strings: {texts:?} ({t:?}: {e})"
                    ))
                })
        })
        .collect()
}

/// Delete the matching entries from the NVRAM behind `efivars`; returns
/// the numbers deleted.
pub fn clean(efivars: &Path, patterns: &[Regex]) -> Result<Vec<u16>, RestError> {
    let vars = EfiVars::new(efivars).map_err(|e| {
        RestError::cleaning(format!(
            "cannot clean the UEFI NVRAM: {e} (was this machine booted in UEFI mode?)"
        ))
    })?;
    let records = vars
        .boot_records()
        .map_err(|e| RestError::cleaning(format!("reading the UEFI boot entries: {e}")))?;
    let mut doomed = Vec::new();
    for record in records {
        match patterns.iter().find(|p| p.is_match(&record.path)) {
            Some(p) => {
                info!(entry = format!("Boot{:04X}", record.number), description = %record.description,
                    path = %record.path, pattern = p.as_str(), "deleting UEFI boot entry");
                doomed.push(record.number);
            }
            None => {
                debug!(entry = format!("Boot{:04X}", record.number), path = %record.path, "kept")
            }
        }
    }
    vars.remove_entries(&doomed)
        .map_err(|e| RestError::cleaning(format!("deleting UEFI boot entries: {e}")))?;
    Ok(doomed)
}

/// IPA's `DEPLOY_CLEAN_UEFI_NVRAM_ARGSINFO`.
pub fn argsinfo() -> Value {
    serde_json::json!({"match_patterns": {
        "description": format!(
            "Json blob contains a list of regex patterns where any UEFI NVRAM entry matching that \
             pattern will be deleted. Default value is '[\"{}\"]'",
            DEFAULT_PATTERNS.join("\", \"")
        ),
        "required": false,
    }})
}

pub fn clean_uefi_nvram(call: &StepCall) -> Result<Value, RestError> {
    let patterns = parse_patterns(call.args.get("match_patterns"))?;
    let cfg = &call.ctx.config;
    // The host's own boot entries are not ours: only the ramdisk's init (or
    // an agent on a fixture sysfs) may change them.
    if !crate::power::in_ramdisk() && cfg.sysfs_root == Path::new("/sys") {
        return Err(RestError::cleaning(
            "refusing to clean the UEFI NVRAM: the agent is not running as the ramdisk's init (PID 1)",
        ));
    }
    clean(&cfg.sysfs_root.join("firmware/efi/efivars"), &patterns)?;
    Ok(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

    fn put(dir: &Path, name: &str, data: &[u8]) {
        let mut buf = vec![7, 0, 0, 0];
        buf.extend_from_slice(data);
        std::fs::write(dir.join(format!("{name}-{GLOBAL}")), buf).unwrap();
    }

    fn disk_entry(label: &str, loader: &str) -> Vec<u8> {
        crate::bootloader::efi::load_option::test_entry(label, loader).encode()
    }

    /// An OVMF-style firmware entry: `Fv(...)/FvFile(...)` (the UEFI shell).
    fn firmware_entry(label: &str) -> Vec<u8> {
        let mut d = vec![1, 0, 0, 0];
        let path_len: u16 = 20 + 20 + 4;
        d.extend_from_slice(&path_len.to_le_bytes());
        d.extend(label.encode_utf16().chain([0]).flat_map(u16::to_le_bytes));
        d.extend_from_slice(&[0x04, 0x07, 20, 0]);
        d.extend_from_slice(&[0x11; 16]);
        d.extend_from_slice(&[0x04, 0x06, 20, 0]);
        d.extend_from_slice(&[0x22; 16]);
        d.extend_from_slice(&[0x7f, 0xff, 4, 0]);
        d
    }

    #[test]
    fn default_patterns_delete_disk_and_loader_entries_only() {
        let dir = tempfile::tempdir().unwrap();
        put(
            dir.path(),
            "Boot0000",
            &firmware_entry("EFI Internal Shell"),
        );
        put(
            dir.path(),
            "Boot0001",
            &disk_entry("debian", r"\EFI\debian\shimx64.efi"),
        );
        put(dir.path(), "Boot0002", &firmware_entry("UEFI PXEv4"));
        put(
            dir.path(),
            "Boot0003",
            &disk_entry("ironic1", r"\EFI\BOOT\BOOTX64.EFI"),
        );
        put(dir.path(), "BootOrder", &[1, 0, 3, 0, 2, 0, 0, 0]);
        let deleted = clean(dir.path(), &parse_patterns(None).unwrap()).unwrap();
        assert_eq!(deleted, vec![1, 3]);
        let vars = EfiVars::new(dir.path()).unwrap();
        assert_eq!(vars.boot_entries().unwrap(), vec![0, 2]);
        assert_eq!(vars.boot_order().unwrap(), vec![2, 0]);
    }

    #[test]
    fn operator_patterns_are_case_insensitive_searches() {
        let dir = tempfile::tempdir().unwrap();
        put(
            dir.path(),
            "Boot0001",
            &disk_entry("a", r"\EFI\centos\GRUBX64.EFI"),
        );
        put(
            dir.path(),
            "Boot0002",
            &disk_entry("b", r"\EFI\debian\shimx64.efi"),
        );
        put(dir.path(), "BootOrder", &[1, 0, 2, 0]);
        let patterns = parse_patterns(Some(&json!(["grubx64"]))).unwrap();
        assert_eq!(clean(dir.path(), &patterns).unwrap(), vec![1]);
        assert_eq!(
            EfiVars::new(dir.path()).unwrap().boot_order().unwrap(),
            vec![2]
        );
    }

    #[test]
    fn bad_patterns_are_ipas_invalid_params() {
        for bad in [json!("^HD\\("), json!([1]), json!(["("]), json!({"a": 1})] {
            let e = parse_patterns(Some(&bad)).unwrap_err();
            assert_eq!(
                e.to_command_error().kind,
                "InvalidCommandParamsError",
                "{bad}"
            );
            assert!(
                e.to_string()
                    .contains("The match_patterns must be a list of strings"),
                "{e}"
            );
        }
    }

    #[test]
    fn no_efivarfs_is_a_clear_error() {
        let e = clean(Path::new("/nonexistent/efivars"), &[]).unwrap_err();
        assert!(e.to_string().contains("booted in UEFI mode"), "{e}");
    }
}
