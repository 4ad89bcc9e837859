//! The agent token survives a restart of the agent process within one boot.
//!
//! Ironic hands the token out once; a later lookup gets `******`. PID 1
//! restarts a crashed agent child, which must carry on with the token it
//! had, as IPA (which keeps it in memory for its process's life and never
//! loses it short of a reboot) effectively does. The token goes to
//! `<run-dir>/agent-token`, 0600, on the ramdisk's /run tmpfs: it lives
//! exactly as long as the boot, and the same `--run-dir` in host tests.
//! A file rather than PID 1's memory: the child needs no channel to PID 1,
//! and a restarted agent on a host behaves the same as in the ramdisk.

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::secret_file;

/// Ironic's tokens are 32+ characters; anything shorter on file is stale junk.
const MIN_LEN: usize = 32;

pub fn path(run_dir: &Path) -> PathBuf {
    run_dir.join("agent-token")
}

/// The token an earlier agent process of this boot kept, if any.
pub fn load(run_dir: &Path) -> Option<String> {
    let path = path(run_dir);
    match secret_file::read_private(&path) {
        Ok(Some(bytes)) => {
            let token = String::from_utf8(bytes).ok()?.trim().to_string();
            if token.len() < MIN_LEN {
                warn!(path = %path.display(), "ignoring a stored agent token that is too short");
                return None;
            }
            warn!(
                path = %path.display(),
                "the agent process restarted within this boot (a crash?): carrying on with the stored agent token"
            );
            Some(token)
        }
        Ok(None) => None,
        Err(e) => {
            warn!(error = %e, "cannot use the stored agent token");
            None
        }
    }
}

pub fn save(run_dir: &Path, token: &str) {
    let path = path(run_dir);
    match secret_file::write_private(&path, token.as_bytes()) {
        Ok(()) => info!(path = %path.display(), "agent token kept for a restart within this boot"),
        Err(e) => warn!(error = %e, "cannot keep the agent token for a restart"),
    }
}
