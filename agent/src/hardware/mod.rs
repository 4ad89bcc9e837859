//! Hardware managers (IPA's model): each offers clean/deploy/service steps
//! and a version; the agent dispatches a step to the first manager that has it.

pub mod burnin;
pub mod capture;
pub mod collectors;
pub mod disk_wait;
pub mod erasure;
pub mod generic;
pub mod inject_files;
pub mod inventory;
pub mod manager;
pub mod nics;
pub mod pstore;
pub mod raid;
pub mod uefi_nvram;

pub use manager::{HardwareManager, HardwareManagers, StepCall, StepDef, StepKind};
