//! Software RAID as IPA does it (`create_configuration`,
//! `delete_configuration`, `apply_configuration`): the typed
//! `target_raid_config` and the partition/array plan built from it. The md
//! metadata itself is [`crate::disk::md`]; docs/raid-plan.md has the rest.

pub mod bios_boot;
pub mod config;
pub mod create;
pub mod delete;
pub mod esp;
pub mod lifecycle;
pub mod node;
pub mod plan;
pub mod root_volume;
pub mod running;

pub use config::{LogicalDisk, NodeContext, RaidConfigError, Size, SoftwareRaid};
pub use plan::{plan, BootMode, RaidPlan};
