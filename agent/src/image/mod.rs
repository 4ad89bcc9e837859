//! The image engine: one pass from the source to the disk, whatever the
//! format, with memory bounded by a few buffers.
//!
//! ```text
//! source (async: HTTP with resume, or file) ──chunks──▶ hash + decode
//!   (raw | gzip/zstd/xz | qcow2 stream engine) ──ops──▶ writer thread
//!   (aligned O_DIRECT writes, BLKZEROOUT) ──▶ fsync, partition re-read
//! ```

pub mod chunk;
mod decode;
mod decompress;
pub mod format;
mod ops;
pub mod pipeline;
pub mod progress;
pub mod qcow2;
pub mod sink;
pub mod source;
pub mod verify;

use std::path::PathBuf;

pub use crate::disk::Window;
pub use format::FormatPolicy;
pub use pipeline::{write_image, WriteReport, WriteRequest};
pub use progress::Progress;
pub use source::SourceConfig;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("download failed: {0}")]
    Source(String),
    #[error("download of {url} failed: the server answered HTTP {status}")]
    HttpStatus { url: String, status: u16 },
    #[error(transparent)]
    Format(#[from] format::FormatError),
    #[error(transparent)]
    Qcow2(#[from] qcow2::Qcow2Error),
    #[error("the image is declared {declared} but its content is {detected}")]
    DeclaredMismatch { declared: String, detected: String },
    /// IPA's words, so operators find them in Ironic's documentation.
    #[error("Security: Detected image format was {detected}, but only {} are allowed ([conductor]permitted_image_formats)", permitted.join(", "))]
    NotPermitted {
        detected: String,
        permitted: Vec<String>,
    },
    #[error("decompressing the image failed: {0}")]
    Decompress(String),
    #[error("checksum mismatch: expected {algo} {expected}, got {actual}")]
    Checksum {
        algo: verify::Algo,
        expected: String,
        actual: String,
    },
    #[error("the image needs {needed} bytes but {} holds only {available}", target.display())]
    TooLarge {
        needed: u64,
        available: u64,
        target: PathBuf,
    },
    #[error("{what} on {}: {source}", path.display())]
    Target {
        path: PathBuf,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the download took longer than ipa-image-download-max-duration ({0} s)")]
    TimedOut(f64),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ImageError {
    /// Refusals decided from the image's first bytes, before anything
    /// was written: the target is as it was.
    pub fn refused_before_write(&self) -> bool {
        matches!(
            self,
            Self::NotPermitted { .. } | Self::DeclaredMismatch { .. } | Self::Format(_)
        )
    }
}
