//! Putting an image on the machine: the whole-disk and partition-image
//! writes behind `standby.prepare_image` and the `write_image` deploy
//! step, from an `image_info` the command layer has already parsed.

pub mod body;
pub mod checksum;
pub mod configdrive;
pub mod error;
pub mod inject;
pub mod partition_image;
pub mod stream;
pub mod target;
pub mod whole_disk;

pub use error::DeployError;
pub use ferrite_protocol::image_info::ImageInfo;
pub use target::install_device;
pub use whole_disk::{partition_uuids, prepare_image};
