//! The `inject_files` deploy step (IPA's `inject_files`): files from the
//! node's `properties.inject_files` and the step's `files` argument are
//! written into, or deleted from, the filesystems of the deployed disk.
//! Every entry is checked before the first mount; each file then gets its
//! own mount, as in IPA.

mod fs_root;
mod locate;
pub mod spec;
mod template;

use std::io::Write;
use std::path::Path;

use futures_util::StreamExt;
use tracing::{info, warn};

use fs_root::Attributes;
pub use locate::DiskEnv;
use spec::{Action, Content, FileSpec, Partition};

/// The largest file fetched from a URL: generous for configuration, and a
/// bound on what a wrong URL can fill the disk with.
const MAX_URL_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The entries are wrong; nothing was done.
    #[error("{0}")]
    Invalid(String),
    /// No partition or device to put a file on.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Mount(String),
    /// One file failed (IPA's "Failed to process file").
    #[error("Failed to process file {path}: {message}")]
    File { path: String, message: String },
}

/// Inject `files` into the filesystems of `disk` (the OS install disk).
pub fn inject(
    env: &DiskEnv,
    disk: &Path,
    files: &[FileSpec],
    http: &reqwest::Client,
) -> Result<(), InjectError> {
    for file in files {
        let mounted = match &file.partition {
            Partition::Number(n) => locate::by_number(env, disk, *n)?,
            Partition::Device(dev) => locate::by_device(env, dev)?,
            Partition::Detect => locate::with_directory(env, disk, &file.first_directory())?,
        };
        let relative = &file.relative;
        let fail = |message: String| InjectError::File {
            path: file.path.clone(),
            message,
        };
        match &file.action {
            Action::Delete => match mounted.root().delete(relative) {
                Ok(true) => {
                    info!(path = %file.path, device = %mounted.device.display(), "file deleted")
                }
                Ok(false) => info!(path = %file.path, "nothing to delete"),
                // IPA's unlink_without_raise: a warning, not a failure.
                Err(e) => warn!(path = %file.path, error = %e, "could not delete the file"),
            },
            Action::Write {
                content,
                mode,
                dirmode,
                owner,
                group,
            } => {
                let attributes = Attributes {
                    mode: *mode,
                    dirmode: *dirmode,
                    owner: *owner,
                    group: *group,
                };
                let written = mounted
                    .root()
                    .write(relative, attributes, |f| match content {
                        Content::Bytes(b) => f.write_all(b).map(|()| b.len() as u64),
                        Content::Url(url) => download(http, url, f),
                    })
                    .map_err(|e| fail(e.to_string()))?;
                info!(path = %file.path, device = %mounted.device.display(), bytes = written, "file injected");
            }
        }
    }
    Ok(())
}

/// Stream `url` into `out`, at most `MAX_URL_BYTES`.
fn download(http: &reqwest::Client, url: &str, out: &mut std::fs::File) -> std::io::Result<u64> {
    let other = |m: String| std::io::Error::other(m);
    tokio::runtime::Handle::current().block_on(async {
        let resp = http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| other(format!("downloading {url}: {e}")))?;
        let mut body = resp.bytes_stream();
        let mut total = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| other(format!("downloading {url}: {e}")))?;
            total += chunk.len() as u64;
            if total > MAX_URL_BYTES {
                return Err(other(format!("{url} is larger than {MAX_URL_BYTES} bytes")));
            }
            out.write_all(&chunk)?;
        }
        Ok(total)
    })
}
