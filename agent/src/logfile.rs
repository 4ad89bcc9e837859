//! The agent's log as a file in the ramdisk (`/run/ferrite/agent.log`), for
//! the operator at the debug shell. Bounded: past [`MAX_BYTES`] the file
//! becomes `agent.log.1` (replacing the previous one) and a new one starts.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const AGENT_LOG: &str = "/run/ferrite/agent.log";
pub const MAX_BYTES: u64 = 2 * 1024 * 1024;

#[derive(Clone)]
pub struct LogFile {
    path: PathBuf,
    max: u64,
    inner: Arc<Mutex<Option<(File, u64)>>>,
}

impl LogFile {
    pub fn create(path: &Path, max: u64) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        let size = f.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            max,
            inner: Arc::new(Mutex::new(Some((f, size)))),
        })
    }

    pub fn append(&self, data: &[u8]) {
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if guard
            .as_ref()
            .is_some_and(|(_, size)| size + data.len() as u64 > self.max)
        {
            *guard = None;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            let _ = std::fs::rename(&self.path, old);
            *guard = File::create(&self.path).ok().map(|f| (f, 0));
        }
        if let Some((f, size)) = guard.as_mut() {
            if f.write_all(data).is_ok() {
                *size += data.len() as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/agent.log");
        let log = LogFile::create(&path, 100).unwrap();
        for i in 0..30 {
            log.append(format!("line {i:02}\n").as_bytes()); // 8 bytes each
        }
        let now = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(dir.path().join("run/agent.log.1")).unwrap();
        assert!(now.len() <= 100 && old.len() <= 100);
        // Nothing lost at the seam: the old file ends where the new begins.
        let all: Vec<&str> = old.lines().chain(now.lines()).collect();
        let expect: Vec<String> = (30 - all.len()..30)
            .map(|i| format!("line {i:02}"))
            .collect();
        assert_eq!(all, expect);
        assert!(now.ends_with("line 29\n"), "{now}");
    }
}
