//! Config drives given as JSON (`meta_data`, `user_data`, `network_data`,
//! `vendor_data`): built into a `config-2` ISO9660 image the way Ironic
//! (through openstacksdk's builder) does, then gzip+base64 as the agent
//! expects. A string configdrive passes through untouched.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use serde_json::{Map, Value};

/// The metadata versions written, as openstacksdk does.
const VERSIONS: &[&str] = &["2012-08-10", "latest"];
const KEYS: &[&str] = &["meta_data", "user_data", "network_data", "vendor_data"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    #[error("Invalid configdrive: {0}")]
    Invalid(String),
    #[error("building the config drive failed: {0}")]
    Build(String),
}

/// Check a configdrive from the API (Ironic's schema): a string, or an
/// object with only the known keys.
pub fn validate(cd: &Value) -> Result<(), ConfigDriveError> {
    match cd {
        Value::String(_) => Ok(()),
        Value::Object(m) => {
            if let Some(bad) = m.keys().find(|k| !KEYS.contains(&k.as_str())) {
                return Err(ConfigDriveError::Invalid(format!(
                    "unknown key {bad}; allowed: {}",
                    KEYS.join(", ")
                )));
            }
            for key in ["meta_data", "network_data", "vendor_data"] {
                if m.get(key).is_some_and(|v| !v.is_object() && !v.is_null()) {
                    return Err(ConfigDriveError::Invalid(format!(
                        "{key} must be an object"
                    )));
                }
            }
            if m.get("user_data")
                .is_some_and(|v| !(v.is_string() || v.is_object() || v.is_array() || v.is_null()))
            {
                return Err(ConfigDriveError::Invalid(
                    "user_data must be a string, object or list".into(),
                ));
            }
            Ok(())
        }
        _ => Err(ConfigDriveError::Invalid(
            "must be a string or an object".into(),
        )),
    }
}

fn write(path: &Path, data: &[u8]) -> Result<(), ConfigDriveError> {
    std::fs::write(path, data)
        .map_err(|e| ConfigDriveError::Build(format!("{}: {e}", path.display())))
}

/// The ISO tool Ironic would use: genisoimage, mkisofs or xorrisofs.
fn iso_tool() -> Option<&'static str> {
    ["genisoimage", "mkisofs", "xorrisofs"]
        .into_iter()
        .find(|t| {
            Command::new(t)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success() || !o.stdout.is_empty() || !o.stderr.is_empty())
        })
}

/// Build the ISO for `node_uuid` from a JSON configdrive; gzip+base64.
pub fn build(node_uuid: &str, cd: &Map<String, Value>) -> Result<String, ConfigDriveError> {
    let dir = tempfile::tempdir().map_err(|e| ConfigDriveError::Build(e.to_string()))?;
    let mut meta = cd
        .get("meta_data")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    meta.entry("uuid")
        .or_insert_with(|| Value::String(node_uuid.to_string()));
    for version in VERSIONS {
        let base = dir.path().join("openstack").join(version);
        std::fs::create_dir_all(&base).map_err(|e| ConfigDriveError::Build(e.to_string()))?;
        write(
            &base.join("meta_data.json"),
            Value::Object(meta.clone()).to_string().as_bytes(),
        )?;
        if let Some(net) = cd.get("network_data").filter(|v| v.is_object()) {
            write(&base.join("network_data.json"), net.to_string().as_bytes())?;
        }
        if let Some(vendor) = cd.get("vendor_data").filter(|v| v.is_object()) {
            write(
                &base.join("vendor_data2.json"),
                vendor.to_string().as_bytes(),
            )?;
        }
        match cd.get("user_data") {
            Some(Value::String(s)) => write(&base.join("user_data"), s.as_bytes())?,
            Some(v @ (Value::Object(_) | Value::Array(_))) => {
                write(&base.join("user_data"), v.to_string().as_bytes())?
            }
            _ => {}
        }
    }
    let tool = iso_tool().ok_or_else(|| {
        ConfigDriveError::Build("no ISO tool: install genisoimage (or mkisofs, xorrisofs)".into())
    })?;
    let iso = dir.path().join("configdrive.iso");
    let out = Command::new(tool)
        .arg("-o")
        .arg(&iso)
        .args([
            "-ldots",
            "-allow-lowercase",
            "-allow-multidot",
            "-l",
            "-publisher",
            "ferrite-conductor",
            "-quiet",
            "-J",
            "-r",
            "-V",
            "config-2",
        ])
        .arg(dir.path().join("openstack").parent().unwrap_or(dir.path()))
        .output()
        .map_err(|e| ConfigDriveError::Build(format!("{tool}: {e}")))?;
    if !out.status.success() {
        return Err(ConfigDriveError::Build(format!(
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let data = std::fs::read(&iso).map_err(|e| ConfigDriveError::Build(e.to_string()))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&data)
        .and_then(|_| gz.finish())
        .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
        .map_err(|e| ConfigDriveError::Build(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use serde_json::json;

    use super::*;

    #[test]
    fn validation() {
        assert!(validate(&json!("H4sI...")).is_ok());
        assert!(
            validate(&json!({"meta_data": {"hostname": "a"}, "user_data": "#!/bin/sh"})).is_ok()
        );
        assert!(validate(&json!({"colour": 1})).is_err());
        assert!(validate(&json!({"meta_data": "x"})).is_err());
        assert!(validate(&json!(42)).is_err());
    }

    #[test]
    fn builds_a_config_2_iso() {
        let cd = json!({"meta_data": {"hostname": "web-1", "public_keys": {"k": "ssh-ed25519 AAAA"}},
                        "user_data": "#cloud-config\n", "network_data": {"links": []}});
        let b64 = build("node-1", cd.as_object().unwrap()).expect("genisoimage (scripts/setup)");
        let gz = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let mut iso = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut iso)
            .unwrap();
        assert_eq!(&iso[32769..32774], b"CD001");
        assert_eq!(String::from_utf8_lossy(&iso[32808..32816]), "config-2");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cd.iso");
        std::fs::write(&path, &iso).unwrap();
        // The files inside, read back with the ISO tool's sibling (isoinfo).
        let listing = Command::new("isoinfo")
            .args(["-R", "-f", "-i"])
            .arg(&path)
            .output()
            .expect("isoinfo (genisoimage, scripts/setup)");
        let text = String::from_utf8_lossy(&listing.stdout);
        assert!(text.contains("/openstack/latest/meta_data.json"), "{text}");
        assert!(text.contains("/openstack/2012-08-10/user_data"), "{text}");
        let meta = Command::new("isoinfo")
            .args(["-R", "-x", "/openstack/latest/meta_data.json", "-i"])
            .arg(&path)
            .output()
            .unwrap();
        let meta: Value = serde_json::from_slice(&meta.stdout).unwrap();
        assert_eq!(meta["uuid"], "node-1");
        assert_eq!(meta["hostname"], "web-1");
    }
}
