//! What can go wrong putting an image on the machine. The command layer
//! maps each case to IPA's wire error (`commands/wire_errors.rs`); the
//! deploy code decides with these cases, never with wire type names.

use ferrite_protocol::image_info::ImageInfoError;

use crate::disk::root::DeviceNotFound;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeployError {
    /// Ironic's request is not one a deploy can follow.
    #[error(transparent)]
    ImageInfo(#[from] ImageInfoError),
    #[error("{0}")]
    InvalidParams(String),
    /// No disk fits (the hints, the skip list, the disks present).
    #[error(transparent)]
    NoDevice(#[from] DeviceNotFound),
    #[error("Download of image {image} failed: {reason}")]
    Download { image: String, reason: String },
    #[error("Download of image {image} failed: {reason}")]
    DownloadTimeout { image: String, reason: String },
    /// The bytes written are not the image Ironic named.
    #[error("Image failed to verify against checksum. location: {location}; image ID: {image}; image checksum: {expected}; verification checksum: {actual}")]
    Checksum {
        image: String,
        location: String,
        expected: String,
        actual: String,
    },
    #[error("Writing image to device {device} failed: {reason}")]
    Write { device: String, reason: String },
    /// An image this agent will not write (format, policy, a crafted file).
    #[error("{0}")]
    InvalidImage(String),
    /// Partitioning, filesystems, the config drive: the steps around the image.
    #[error("{0}")]
    Deployment(String),
    /// The agent itself failed (an HTTP client, a thread).
    #[error("{0}")]
    Internal(String),
}

impl DeployError {
    pub fn write(device: &str, reason: impl std::fmt::Display) -> Self {
        Self::Write {
            device: device.to_string(),
            reason: reason.to_string(),
        }
    }

    pub fn download(image: &str, reason: impl std::fmt::Display) -> Self {
        Self::Download {
            image: image.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Whether a target that took some of the image's bytes must be made
    /// unbootable: what is there is unverified or cut short. A download
    /// that failed before its first byte, or a refused request, leaves
    /// nothing to wipe.
    pub fn leaves_unverified_bytes(&self) -> bool {
        matches!(
            self,
            Self::Checksum { .. } | Self::InvalidImage(_) | Self::Write { .. }
        )
    }
}
