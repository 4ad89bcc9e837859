//! BIOS or UEFI: how the ramdisk booted, and what a node asks for. Shared
//! by the bootloader and the software RAID layout (ESP or `bios_grub`).

use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    Bios,
    Uefi,
}

impl BootMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bios" => Some(Self::Bios),
            "uefi" => Some(Self::Uefi),
            _ => None,
        }
    }

    /// How this ramdisk was booted: firmware exposes `/sys/firmware/efi` in UEFI.
    pub fn current(sysfs_root: &Path) -> Self {
        if sysfs_root.join("firmware/efi").is_dir() {
            Self::Uefi
        } else {
            Self::Bios
        }
    }
}
