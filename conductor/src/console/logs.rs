//! The ramdisk logs kept for a node (`[agent]deploy_logs_local_path`),
//! listed on its page and downloaded. Only names found in the listing
//! are served, so a request cannot name another file.

use std::path::{Path, PathBuf};

/// One stored archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub name: String,
    pub size: u64,
}

/// The node's archives, newest name last (names end in a UTC time).
pub async fn list(dir: &Path, uuid: &str) -> Vec<LogFile> {
    let prefix = format!("{uuid}_");
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        // No directory yet: no logs were collected.
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Ok(Some(entry)) = entries.next_entry().await {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !(name.starts_with(&prefix) && name.ends_with(".tar.gz")) {
            continue;
        }
        match entry.metadata().await {
            Ok(meta) if meta.is_file() => out.push(LogFile {
                name,
                size: meta.len(),
            }),
            _ => {}
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The path of `name` if it is one of the node's archives.
pub async fn find(dir: &Path, uuid: &str, name: &str) -> Option<PathBuf> {
    list(dir, uuid)
        .await
        .into_iter()
        .find(|f| f.name == name)
        .map(|f| dir.join(f.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_nodes_archives() {
        let dir = tempfile::tempdir().unwrap();
        let uuid = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123";
        for name in [
            format!("{uuid}_node_2026-01-01-00-00-00.tar.gz"),
            format!("{uuid}_notes.txt"),
            "other_2026-01-01-00-00-00.tar.gz".to_string(),
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let found = list(dir.path(), uuid).await;
        assert_eq!(found.len(), 1);
        assert!(find(dir.path(), uuid, &found[0].name).await.is_some());
        assert!(find(dir.path(), uuid, "../../etc/passwd").await.is_none());
        assert!(find(dir.path(), uuid, "other_2026-01-01-00-00-00.tar.gz")
            .await
            .is_none());
        assert!(list(&dir.path().join("missing"), uuid).await.is_empty());
    }
}
