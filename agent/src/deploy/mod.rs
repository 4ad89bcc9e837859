//! Putting an image on the machine: `image_info` as Ironic sends it, and
//! the whole-disk and partition-image writes behind `standby.prepare_image` and the
//! `write_image` deploy step.

pub mod body;
pub mod configdrive;
pub mod image_info;
pub mod inject;
pub mod partition_image;
pub mod stream;
pub mod target;
pub mod whole_disk;

pub use image_info::ImageInfo;
pub use target::install_device;
pub use whole_disk::{partition_uuids, prepare_image};
