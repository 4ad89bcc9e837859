//! Where IPA's `create_configuration` puts software RAID, as a pure
//! function of the disks, the validated config and the boot mode.
//!
//! IPA's choices, kept:
//! - Holder disks: each logical disk's `physical_disks` hints pick one disk
//!   each, in list order, never the same disk twice for one logical disk;
//!   without hints a logical disk spans every disk.
//! - One fresh table per holder: GPT for UEFI, else `disk_label` (msdos by
//!   default).
//! - The first RAID partition starts after room for the boot partitions the
//!   bootloader step adds later: 551 MiB for UEFI (a 550 MiB ESP at 1 MiB),
//!   8 MiB for BIOS on GPT (a 2 MiB `bios_grub` at 1 MiB), 1 MiB on msdos.
//! - Logical disks are laid out with the `MAX` one last, and md devices are
//!   numbered in that order (`/dev/md0` is the first laid out).
//! - A disk's first RAID partition *ends* at `size_gb` GiB from the disk's
//!   start (so it is smaller than `size_gb` by the boot room); later ones
//!   are `size_gb` GiB long and start where the previous one ended.
//!
//! Unlike parted, a `MAX` partition ends on a MiB boundary below the usable
//! end rather than on the very last usable sector.

use std::path::PathBuf;

use super::config::{LogicalDisk, Size, SoftwareRaid};
use crate::disk::layout::{gpt_tail, Label, MIB};
use crate::disk::md::Level;
use crate::disk::BlockDevice;

const GIB: u64 = 1 << 30;
/// `raid_utils.ESP_SIZE_MIB`.
pub const ESP_MIB: u64 = 550;
/// The `bios_grub` partition IPA adds on GPT for BIOS boot.
pub const BIOS_GRUB_MIB: u64 = 2;
/// msdos addresses 2^32 sectors.
const MBR_MAX_SECTORS: u64 = 1 << 32;

pub use crate::disk::boot_mode::BootMode;

/// IPA's `get_partition_table_type_from_specs`: UEFI forces GPT.
pub fn table_label(boot: BootMode, disk_label: Option<Label>) -> Label {
    match boot {
        BootMode::Uefi => Label::Gpt,
        BootMode::Bios => disk_label.unwrap_or(Label::Msdos),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPartKind {
    /// `ef00`, named `uefi-holder-<i>`; the ESPs form a RAID-1 (metadata 1.0) named `esp`.
    Esp,
    /// `ef02`, named `bios-boot-part-<i>`.
    BiosGrub,
}

/// A partition, bytes from the disk's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub number: u32,
    pub start: u64,
    pub len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderPlan {
    pub disk: PathBuf,
    /// RAID members, numbered from 1 in creation order.
    pub raid_parts: Vec<Part>,
    /// What the bootloader step adds in the room left before the first
    /// RAID partition, on holders of the root volume.
    pub boot_part: Option<(BootPartKind, Part)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayPlan {
    /// `/dev/md<index>`.
    pub index: usize,
    /// `volume_name`, or `md<index>`.
    pub name: String,
    pub level: Level,
    /// (index into `holders`, partition number), in role order.
    pub members: Vec<(usize, u32)>,
    pub is_root_volume: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaidPlan {
    pub label: Label,
    pub holders: Vec<HolderPlan>,
    pub arrays: Vec<ArrayPlan>,
    /// The array the image goes to: the one marked `is_root_volume`, else md0.
    pub root: usize,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("No candidates for physical disk {hints} from the list {devices}")]
    NoCandidates { hints: String, devices: String },
    #[error(
        "No candidates left for physical disk {hints} from the list {candidates} after \
         picking {matching} for previous volumes"
    )]
    NoneLeft {
        hints: String,
        candidates: String,
        matching: String,
    },
    #[error("{level:?} over {got} disk(s) needs at least {min}")]
    TooFewDisks {
        level: Level,
        min: usize,
        got: usize,
    },
    #[error("logical disk {volume}: size_gb {gib} ends before the first {start_mib} MiB of {disk} that stay free for booting")]
    FirstTooSmall {
        volume: String,
        gib: u64,
        start_mib: u64,
        disk: String,
    },
    #[error("logical disk {volume} does not fit on {disk}: it needs up to byte {end}, the disk's usable space ends at {usable}")]
    NoSpace {
        volume: String,
        disk: String,
        end: u64,
        usable: u64,
    },
    #[error("an msdos label cannot address {disk} past 2 TiB; use disk_label=gpt")]
    MbrTooLarge { disk: String },
}

/// Where the first RAID partition starts (IPA's `calculate_raid_start`).
pub fn raid_start(boot: BootMode, label: Label) -> u64 {
    match (boot, label) {
        (BootMode::Uefi, _) => (ESP_MIB + 1) * MIB,
        (BootMode::Bios, Label::Gpt) => 8 * MIB,
        (BootMode::Bios, Label::Msdos) => MIB,
    }
}

/// Each logical disk's holder disks (IPA's `get_block_devices_for_raid`),
/// as indexes into `disks`.
pub fn holders(disks: &[BlockDevice], raid: &SoftwareRaid) -> Result<Vec<Vec<usize>>, PlanError> {
    let names = || {
        let v: Vec<_> = disks.iter().map(|d| d.path.display().to_string()).collect();
        format!("{v:?}")
    };
    let mut per_ld = Vec::new();
    for ld in &raid.logical_disks {
        let Some(wanted) = &ld.physical_disks else {
            per_ld.push((0..disks.len()).collect());
            continue;
        };
        let mut matching: Vec<usize> = Vec::new();
        for pd in wanted {
            let candidates: Vec<usize> = (0..disks.len())
                .filter(|i| pd.hints.matches(&disks[*i]))
                .collect();
            if candidates.is_empty() {
                return Err(PlanError::NoCandidates {
                    hints: pd.raw.to_string(),
                    devices: names(),
                });
            }
            match candidates.iter().find(|c| !matching.contains(c)) {
                Some(c) => matching.push(*c),
                None => {
                    let show = |v: &[usize]| {
                        let p: Vec<_> = v
                            .iter()
                            .map(|i| disks[*i].path.display().to_string())
                            .collect();
                        format!("{p:?}")
                    };
                    return Err(PlanError::NoneLeft {
                        hints: pd.raw.to_string(),
                        candidates: show(&candidates),
                        matching: show(&matching),
                    });
                }
            }
        }
        per_ld.push(matching);
    }
    Ok(per_ld)
}

/// The whole plan.
pub fn plan(
    disks: &[BlockDevice],
    raid: &SoftwareRaid,
    boot: BootMode,
    disk_label: Option<Label>,
) -> Result<RaidPlan, PlanError> {
    let label = table_label(boot, disk_label);
    let per_ld = holders(disks, raid)?;
    // `MAX` last; a stable order otherwise.
    let mut order: Vec<usize> = (0..raid.logical_disks.len()).collect();
    order.sort_by_key(|i| raid.logical_disks[*i].size == Size::Max);

    let mut holder_of_disk: Vec<Option<usize>> = vec![None; disks.len()];
    let mut holders: Vec<HolderPlan> = Vec::new();
    let mut next_start: Vec<u64> = Vec::new();
    let mut arrays = Vec::new();
    for (index, ld_index) in order.iter().copied().enumerate() {
        let ld = &raid.logical_disks[ld_index];
        let name = ld
            .volume_name
            .clone()
            .unwrap_or_else(|| format!("md{index}"));
        let members_disks = &per_ld[ld_index];
        if members_disks.len() < ld.level.min_members() {
            return Err(PlanError::TooFewDisks {
                level: ld.level,
                min: ld.level.min_members(),
                got: members_disks.len(),
            });
        }
        let mut members = Vec::new();
        for &d in members_disks {
            let h = *holder_of_disk[d].get_or_insert_with(|| {
                holders.push(HolderPlan {
                    disk: disks[d].path.clone(),
                    raid_parts: Vec::new(),
                    boot_part: None,
                });
                next_start.push(raid_start(boot, label));
                holders.len() - 1
            });
            let part = place(
                ld,
                &name,
                &disks[d],
                label,
                next_start[h],
                holders[h].raid_parts.is_empty(),
                boot,
            )?;
            next_start[h] = part.start + part.len;
            let number = holders[h].raid_parts.len() as u32 + 1;
            holders[h].raid_parts.push(Part { number, ..part });
            members.push((h, number));
        }
        arrays.push(ArrayPlan {
            index,
            name,
            level: ld.level,
            members,
            is_root_volume: ld.is_root_volume,
        });
    }
    let root = arrays
        .iter()
        .position(|a| a.is_root_volume == Some(true))
        .unwrap_or(0);
    let boot_kind = match (boot, label) {
        (BootMode::Uefi, _) => Some((BootPartKind::Esp, ESP_MIB)),
        (BootMode::Bios, Label::Gpt) => Some((BootPartKind::BiosGrub, BIOS_GRUB_MIB)),
        (BootMode::Bios, Label::Msdos) => None,
    };
    if let (Some((kind, mib)), Some(root_array)) = (boot_kind, arrays.get(root)) {
        for &(h, _) in &root_array.members {
            let number = holders[h].raid_parts.len() as u32 + 1;
            holders[h].boot_part = Some((
                kind,
                Part {
                    number,
                    start: MIB,
                    len: mib * MIB,
                },
            ));
        }
    }
    Ok(RaidPlan {
        label,
        holders,
        arrays,
        root,
    })
}

/// One logical disk's partition on one holder, from `start`.
fn place(
    ld: &LogicalDisk,
    volume: &str,
    disk: &BlockDevice,
    label: Label,
    start: u64,
    first: bool,
    boot: BootMode,
) -> Result<Part, PlanError> {
    let sector = disk.logical_sectors.max(512);
    let disk_name = disk.path.display().to_string();
    let usable = match label {
        Label::Gpt => disk.size.saturating_sub(gpt_tail(sector)),
        Label::Msdos => {
            if disk.size > MBR_MAX_SECTORS * sector && ld.size == Size::Max {
                return Err(PlanError::MbrTooLarge { disk: disk_name });
            }
            disk.size
        }
    } / MIB
        * MIB;
    let end = match ld.size {
        Size::Max => usable,
        Size::Gib(g) if first => {
            let end = g.saturating_mul(GIB);
            if end <= start {
                return Err(PlanError::FirstTooSmall {
                    volume: volume.to_string(),
                    gib: g,
                    start_mib: raid_start(boot, label) / MIB,
                    disk: disk_name,
                });
            }
            end
        }
        Size::Gib(g) => start.saturating_add(g.saturating_mul(GIB)),
    };
    if end > usable || end <= start {
        return Err(PlanError::NoSpace {
            volume: volume.to_string(),
            disk: disk_name,
            end,
            usable,
        });
    }
    if label == Label::Msdos && end > MBR_MAX_SECTORS * sector {
        return Err(PlanError::MbrTooLarge { disk: disk_name });
    }
    Ok(Part {
        number: 0,
        start,
        len: end - start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::raid::config::{validate, NodeContext};
    use serde_json::{json, Value};

    fn disk(name: &str, gib: u64) -> BlockDevice {
        BlockDevice {
            name: name.into(),
            path: PathBuf::from(format!("/dev/{name}")),
            size: gib * GIB,
            logical_sectors: 512,
            physical_sectors: 512,
            serial: Some(format!("serial-{name}")),
            ..Default::default()
        }
    }

    fn raid(lds: Value) -> SoftwareRaid {
        let node = NodeContext {
            uuid: "n",
            raid_skip_list: false,
        };
        validate(&json!({ "logical_disks": lds }), node)
            .unwrap()
            .unwrap()
    }

    fn sw(level: &str, size: Value) -> Value {
        json!({"raid_level": level, "size_gb": size, "controller": "software"})
    }

    #[test]
    fn one_raid1_max_over_two_disks_uefi() {
        let disks = [disk("vda", 10), disk("vdb", 10)];
        let p = plan(
            &disks,
            &raid(json!([sw("1", json!("MAX"))])),
            BootMode::Uefi,
            None,
        )
        .unwrap();
        assert_eq!(p.label, Label::Gpt);
        assert_eq!(p.arrays.len(), 1);
        assert_eq!(p.arrays[0].name, "md0");
        assert_eq!(p.arrays[0].members, vec![(0, 1), (1, 1)]);
        assert_eq!(p.root, 0);
        for h in &p.holders {
            let usable = (10 * GIB - gpt_tail(512)) / MIB * MIB;
            assert_eq!(
                h.raid_parts,
                vec![Part {
                    number: 1,
                    start: 551 * MIB,
                    len: usable - 551 * MIB
                }]
            );
            assert_eq!(
                h.boot_part,
                Some((
                    BootPartKind::Esp,
                    Part {
                        number: 2,
                        start: MIB,
                        len: 550 * MIB
                    }
                ))
            );
        }
    }

    #[test]
    fn max_goes_last_and_numbers_follow_creation() {
        // IPA's docs example: a RAID-1 root of 100 GiB... here 2 GiB, then RAID-0 MAX.
        let mut root = sw("1", json!(2));
        root["is_root_volume"] = json!(true);
        let disks = [disk("sda", 20), disk("sdb", 20)];
        let p = plan(
            &disks,
            &raid(json!([root, sw("0", json!("MAX"))])),
            BootMode::Bios,
            None,
        )
        .unwrap();
        assert_eq!(p.label, Label::Msdos);
        let h = &p.holders[0];
        assert_eq!(
            h.raid_parts[0],
            Part {
                number: 1,
                start: MIB,
                len: 2 * GIB - MIB
            }
        );
        assert_eq!(
            h.raid_parts[1],
            Part {
                number: 2,
                start: 2 * GIB,
                len: 18 * GIB
            }
        );
        assert_eq!(h.boot_part, None, "msdos: grub embeds after the MBR");
        assert_eq!(
            (p.arrays[0].name.as_str(), p.arrays[1].name.as_str()),
            ("md0", "md1")
        );
        assert_eq!(p.arrays[1].level, Level::Raid0);
        assert_eq!(p.root, 0);

        // MAX first in the config is still laid out (and numbered) last.
        let mut max_root = sw("1", json!("MAX"));
        max_root["is_root_volume"] = json!(true);
        max_root["volume_name"] = json!("root");
        let p = plan(
            &disks,
            &raid(json!([max_root, sw("0", json!(4))])),
            BootMode::Bios,
            Some(Label::Gpt),
        )
        .unwrap();
        assert_eq!(p.arrays[0].level, Level::Raid0);
        assert_eq!(p.arrays[0].name, "md0");
        assert_eq!(p.arrays[1].name, "root");
        assert_eq!(p.root, 1);
        let h = &p.holders[1];
        assert_eq!(
            h.raid_parts[0],
            Part {
                number: 1,
                start: 8 * MIB,
                len: 4 * GIB - 8 * MIB
            }
        );
        assert_eq!(h.raid_parts[1].start, 4 * GIB);
        assert_eq!(
            h.boot_part,
            Some((
                BootPartKind::BiosGrub,
                Part {
                    number: 3,
                    start: MIB,
                    len: 2 * MIB
                }
            ))
        );
    }

    #[test]
    fn physical_disks_pick_distinct_holders() {
        let disks = [
            disk("sda", 8),
            disk("sdb", 8),
            disk("sdc", 8),
            disk("sdd", 8),
        ];
        let mut root = sw("1", json!(2));
        root["physical_disks"] = json!([{"name": "sdc"}, {"serial": "serial-sda"}]);
        let mut data = sw("1+0", json!("MAX"));
        data["physical_disks"] =
            json!([{"size": ">= 1"}, {"size": ">= 1"}, {"size": ">= 1"}, {"size": ">= 1"}]);
        let p = plan(&disks, &raid(json!([root, data])), BootMode::Bios, None).unwrap();
        let paths: Vec<_> = p
            .holders
            .iter()
            .map(|h| h.disk.display().to_string())
            .collect();
        assert_eq!(paths, ["/dev/sdc", "/dev/sda", "/dev/sdb", "/dev/sdd"]);
        assert_eq!(p.arrays[0].members, vec![(0, 1), (1, 1)]);
        // The RAID-10 spans all four; its partition is the second on sdc and sda.
        assert_eq!(p.arrays[1].members, vec![(1, 2), (2, 1), (0, 2), (3, 1)]);
        assert_eq!(
            p.holders[2].raid_parts[0].start, MIB,
            "sdb's first partition"
        );
    }

    #[test]
    fn hint_failures_use_ipas_words() {
        let disks = [disk("sda", 8), disk("sdb", 8)];
        let mut ld = sw("1", json!(2));
        ld["physical_disks"] = json!([{"name": "sdz"}, {"name": "sda"}]);
        let err = plan(&disks, &raid(json!([ld])), BootMode::Bios, None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("No candidates for physical disk {\"name\":\"sdz\"} from the list"),
            "{err}"
        );
        let mut ld = sw("1", json!(2));
        ld["physical_disks"] = json!([{"name": "sda"}, {"name": "sda"}]);
        let err = plan(&disks, &raid(json!([ld])), BootMode::Bios, None).unwrap_err();
        assert!(matches!(err, PlanError::NoneLeft { .. }), "{err}");
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let disks = [disk("sda", 8), disk("sdb", 8)];
        let err = plan(
            &disks,
            &raid(json!([sw("1", json!(9))])),
            BootMode::Bios,
            None,
        )
        .unwrap_err();
        assert!(matches!(err, PlanError::NoSpace { .. }), "{err}");
        let err = plan(
            &disks,
            &raid(json!([sw("1", json!(0))])),
            BootMode::Uefi,
            None,
        )
        .unwrap_err();
        assert!(
            matches!(err, PlanError::FirstTooSmall { start_mib: 551, .. }),
            "{err}"
        );
        // IPA forces a one-disk mirror through; RAID-10 needs two disks.
        let one = [disk("sda", 8)];
        let p = plan(
            &one,
            &raid(json!([sw("1", json!(2))])),
            BootMode::Bios,
            None,
        )
        .unwrap();
        assert_eq!(p.arrays[0].members, vec![(0, 1)]);
        let err = plan(
            &one,
            &raid(json!([sw("1", json!(2)), sw("1+0", json!("MAX"))])),
            BootMode::Bios,
            None,
        )
        .unwrap_err();
        assert!(
            matches!(err, PlanError::TooFewDisks { got: 1, .. }),
            "{err}"
        );
        let big = [disk("sda", 3000), disk("sdb", 3000)];
        let err = plan(
            &big,
            &raid(json!([sw("1", json!("MAX"))])),
            BootMode::Bios,
            None,
        )
        .unwrap_err();
        assert!(matches!(err, PlanError::MbrTooLarge { .. }), "{err}");
        assert!(plan(
            &big,
            &raid(json!([sw("1", json!("MAX"))])),
            BootMode::Bios,
            Some(Label::Gpt)
        )
        .is_ok());
    }

    #[test]
    fn labels_follow_boot_mode() {
        assert_eq!(table_label(BootMode::Uefi, Some(Label::Msdos)), Label::Gpt);
        assert_eq!(table_label(BootMode::Bios, None), Label::Msdos);
        assert_eq!(table_label(BootMode::Bios, Some(Label::Gpt)), Label::Gpt);
    }
}
