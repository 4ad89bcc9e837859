//! UEFI boot entries, natively: find the loaders an ESP ships and register
//! them in NVRAM through efivarfs.

pub mod device_path;
pub mod load_option;
pub mod loaders;
pub mod vars;

pub use load_option::{DiskSignature, HardDrive, LoadOption};
pub use loaders::Loader;
pub use vars::EfiVars;
