//! `file://` image sources: Ironic's `[conductor]file_url_allowed_paths`
//! (OSSA-2025-001). A local path must sit under an allowed directory and
//! never under the system directories, so that an API user cannot make a
//! deploy read `/etc/shadow` or a device node.

use std::path::{Component, Path, PathBuf};

/// Refused whatever the allow-list says (Ironic's fixed deny-list).
const DENIED: &[&str] = &["/dev", "/sys", "/proc", "/boot", "/run", "/etc"];

/// `Err` with the reason when `source` may not be used.
pub fn check(source: &str, allowed: &[PathBuf]) -> Result<(), String> {
    let path = url::Url::parse(source)
        .ok()
        .and_then(|u| u.to_file_path().ok())
        .ok_or_else(|| "it is not a local absolute path".to_string())?;
    // Lexical checks only: `..` could climb out of an allowed directory.
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err("the path has '.' or '..' components".into());
    }
    if let Some(denied) = DENIED.iter().find(|d| path.starts_with(Path::new(d))) {
        return Err(format!("files under {denied} are never allowed"));
    }
    if allowed.is_empty() {
        return Err(
            "file:// image sources are disabled (allow directories with --file-url-allowed-paths)"
                .into(),
        );
    }
    if allowed.iter().any(|dir| path.starts_with(dir)) {
        return Ok(());
    }
    let dirs: Vec<String> = allowed.iter().map(|d| d.display().to_string()).collect();
    Err(format!(
        "it is not under an allowed directory ({})",
        dirs.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_and_deny_list() {
        let allowed = [PathBuf::from("/srv/images"), PathBuf::from("/etc")];
        assert!(check("file:///srv/images/a.qcow2", &allowed).is_ok());
        assert!(check("file:///srv/images-other/a", &allowed).is_err());
        assert!(check("file:///srv/images/../../etc/shadow", &allowed).is_err());
        assert!(check("file:///etc/shadow", &allowed)
            .unwrap_err()
            .contains("never allowed"));
        assert!(check("file:///srv/images/a", &[])
            .unwrap_err()
            .contains("disabled"));
    }
}
