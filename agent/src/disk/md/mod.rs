//! Linux software RAID (md) metadata, written and read natively: version
//! 1.2 superblocks for new RAID-0/1/10 arrays, so the ramdisk needs no
//! `mdadm`. The kernel's md driver assembles what is written here, started
//! through sysfs ([`assemble`]).

pub mod assemble;
pub mod geometry;
pub mod member;
pub mod scan;
pub mod superblock;

#[cfg(test)]
mod examine_oracle;

pub use geometry::{superblocks, ArraySpec, Level, Metadata};
pub use superblock::{Superblock, MAGIC};

/// mdadm's default home host: this machine's name.
pub fn homehost() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
}

/// Seconds since the epoch, for superblock times.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `set_name` as mdadm forms it: `homehost:name`, unless the name already
/// names a host, there is no home host, or the pair would not fit in 32 bytes.
pub fn set_name(homehost: Option<&str>, name: &str) -> String {
    match homehost {
        Some(h) if !h.is_empty() && !name.contains(':') => {
            let full = format!("{h}:{name}");
            if full.len() <= superblock::NAME_LEN {
                full
            } else {
                name.to_string()
            }
        }
        _ => name.to_string(),
    }
}

/// The volume name IPA reads back from a set name
/// (`get_volume_name_of_raid_device`): what follows the host.
pub fn volume_name(set_name: &str) -> &str {
    set_name.split_once(':').map_or(set_name, |(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_names_round_trip_to_volume_names() {
        assert_eq!(set_name(Some("ramdisk"), "root"), "ramdisk:root");
        assert_eq!(set_name(None, "root"), "root");
        assert_eq!(set_name(Some(""), "root"), "root");
        assert_eq!(set_name(Some("h"), "other:root"), "other:root");
        let long = "a".repeat(30);
        assert_eq!(set_name(Some("host"), &long), long);
        assert_eq!(volume_name("ramdisk:root"), "root");
        assert_eq!(volume_name("root"), "root");
    }
}
