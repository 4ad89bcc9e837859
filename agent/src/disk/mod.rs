//! Block devices: discovery from sysfs, the allow-list that keeps an agent
//! on a host away from that host's disks, and root-device choice.

pub mod ata;
pub mod boot_mode;
pub mod devices;
pub mod discard;
pub mod erase;
pub mod fsinfo;
pub mod gpt_edit;
pub mod guard;
pub mod hints;
pub mod install_target;
pub mod ioctl;
pub mod layout;
pub mod links;
pub mod md;
pub mod mkfs;
pub mod mounts;
pub mod node_disks;
pub mod nvme;
pub mod partitions;
pub mod raid;
pub mod region;
pub mod root;
pub mod skip_list;
pub mod window;
pub mod wipe;

pub use devices::{list_block_devices, BlockDevice, DiskPolicy};
pub use hints::RootDeviceHints;
pub use root::{choose_install_device, choose_root_device};
pub use window::Window;
