//! Which disk gets the image: the first disk matching Ironic's root device
//! hints, else IPA's rule: the smallest disk of at least 4 GiB.

use serde_json::{Map, Value};

use super::{BlockDevice, RootDeviceHints};

const MIN_ROOT_SIZE: u64 = 4 << 30;

/// No disk fits: the text names the hints and every disk seen (IPA's
/// `DeviceNotFound` details).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DeviceNotFound(pub String);

fn describe(devices: &[BlockDevice]) -> String {
    if devices.is_empty() {
        return "none".into();
    }
    devices
        .iter()
        .map(|d| {
            format!(
                "{} ({} bytes{})",
                d.path.display(),
                d.size,
                if d.read_only { ", read-only" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `hints` is `instance_info.root_device` or `properties.root_device`.
pub fn choose_root_device(
    devices: &[BlockDevice],
    hints: Option<&Map<String, Value>>,
) -> Result<BlockDevice, DeviceNotFound> {
    let usable: Vec<&BlockDevice> = devices.iter().filter(|d| !d.read_only).collect();
    if let Some(raw) = hints.filter(|h| !h.is_empty()) {
        let parsed = RootDeviceHints::parse(raw)
            .map_err(|e| DeviceNotFound(format!("{e}; disks seen: {}", describe(devices))))?;
        return usable
            .iter()
            .find(|d| parsed.matches(d))
            .map(|d| (*d).clone())
            .ok_or_else(|| {
                DeviceNotFound(format!(
                    "No suitable device was found for deployment using these hints {}; disks seen: {}",
                    Value::Object(raw.clone()),
                    describe(devices)
                ))
            });
    }
    smallest_root(usable, |d| (d.size, d.name.as_str()))
        .cloned()
        .ok_or_else(|| {
            DeviceNotFound(format!(
                "No suitable device was found for deployment - root device hints were not provided and all found block devices are smaller than 4GiB; disks seen: {}",
                describe(devices)
            ))
        })
}

/// IPA's rule for a root disk without hints (`utils.guess_root_disk`): the
/// smallest disk of at least 4 GiB, its name breaking ties. Shared by the
/// deploy's choice and the inventory's `root_disk`, so the two agree.
pub fn smallest_root<'a, T>(
    disks: impl IntoIterator<Item = &'a T>,
    size_and_name: impl Fn(&T) -> (u64, &str),
) -> Option<&'a T> {
    disks
        .into_iter()
        .filter(|d| size_and_name(d).0 >= MIN_ROOT_SIZE)
        .min_by(|a, b| size_and_name(a).cmp(&size_and_name(b)))
}

/// IPA's `get_os_install_device` once software RAID was created in this
/// boot: the array marked `is_root_volume: true` wins (over hints too, as
/// IPA warns), arrays marked `false` are never chosen; otherwise
/// [`choose_root_device`].
pub fn choose_install_device(
    devices: &[BlockDevice],
    hints: Option<&Map<String, Value>>,
    root_volumes: &super::raid::root_volume::RootVolumes,
) -> Result<BlockDevice, DeviceNotFound> {
    if let Some(root) = devices
        .iter()
        .find(|d| root_volumes.get(&d.path) == Some(&true))
    {
        if hints.is_some_and(|h| !h.is_empty()) {
            tracing::warn!(device = %root.path.display(),
                "both root device hints and a root volume from the target RAID configuration are defined; the RAID root volume is used");
        }
        return Ok(root.clone());
    }
    let left: Vec<BlockDevice> = devices
        .iter()
        .filter(|d| root_volumes.get(&d.path) != Some(&false))
        .cloned()
        .collect();
    choose_root_device(&left, hints)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;

    fn dev(name: &str, gib: u64, ro: bool) -> BlockDevice {
        BlockDevice {
            name: name.into(),
            path: PathBuf::from(format!("/dev/{name}")),
            size: gib << 30,
            read_only: ro,
            ..BlockDevice::default()
        }
    }

    #[test]
    fn raid_root_volume_wins_and_excluded_arrays_are_never_chosen() {
        let mut md0 = dev("md0", 5, false);
        md0.path = PathBuf::from("/dev/md0");
        let mut md1 = dev("md1", 20, false);
        md1.path = PathBuf::from("/dev/md1");
        let devices = vec![dev("sdc", 10, false), md0, md1];
        let hints = json!({"name": "/dev/sdc"});
        let mut volumes = crate::disk::raid::root_volume::RootVolumes::new();
        volumes.insert("/dev/md1".into(), true);
        let got = choose_install_device(&devices, hints.as_object(), &volumes).unwrap();
        assert_eq!(got.name, "md1");
        volumes.insert("/dev/md1".into(), false);
        volumes.insert("/dev/md0".into(), false);
        let got = choose_install_device(&devices, None, &volumes).unwrap();
        assert_eq!(got.name, "sdc");
        // Nothing recorded: IPA's rule, and md0 is the smallest.
        let got = choose_install_device(&devices, None, &Default::default()).unwrap();
        assert_eq!(got.name, "md0");
    }

    #[test]
    fn smallest_disk_of_at_least_4_gib() {
        let devs = [
            dev("sda", 100, false),
            dev("sdb", 3, false),
            dev("sdc", 8, false),
            dev("sdd", 5, true),
        ];
        assert_eq!(choose_root_device(&devs, None).unwrap().name, "sdc");
        let err = choose_root_device(&[dev("sdb", 3, false)], None).unwrap_err();
        assert!(err.0.contains("/dev/sdb"), "{}", err.0);
    }

    #[test]
    fn name_hint() {
        let devs = [dev("sda", 100, false), dev("sdc", 8, false)];
        let hints = json!({"name": "/dev/sda"});
        assert_eq!(
            choose_root_device(&devs, hints.as_object()).unwrap().name,
            "sda"
        );
        let missing = json!({"name": "/dev/sdx"});
        let err = choose_root_device(&devs, missing.as_object()).unwrap_err();
        assert!(err.0.contains("disks seen: /dev/sda"), "{}", err.0);
        let unknown = json!({"colour": "red"});
        let err = choose_root_device(&devs, unknown.as_object()).unwrap_err();
        assert!(err.0.contains("unknown root device hint"), "{}", err.0);
    }

    /// Root device hints on a captured QEMU guest (NVMe, SCSI, two virtio
    /// disks; see `scripts/capture-qemu-fixture`).
    #[test]
    fn hints_on_the_captured_qemu_guest() {
        let roots = crate::hardware::inventory::fixture("qemu-nvme-multinic");
        let devs = crate::disk::list_block_devices(
            &roots.sysfs,
            &roots.dev,
            &crate::disk::DiskPolicy::All,
        );
        let pick = |hints: Value| choose_root_device(&devs, hints.as_object()).map(|d| d.name);
        assert_eq!(
            pick(json!({})).unwrap(),
            "nvme0n1",
            "smallest of at least 4 GiB"
        );
        assert_eq!(
            pick(json!({"serial": "FERRITE-NVME-1"})).unwrap(),
            "nvme0n1"
        );
        assert_eq!(
            pick(json!({"serial": "ferrite-nvme-1"})).unwrap(),
            "nvme0n1"
        );
        assert_eq!(pick(json!({"name": "/dev/nvme0n1"})).unwrap(), "nvme0n1");
        assert_eq!(
            pick(json!({"model": "<in> NVMe", "tran": "nvme", "rotational": false})).unwrap(),
            "nvme0n1"
        );
        assert_eq!(
            pick(json!({"wwn": "nvme.1b36-464552524954452d4e564d452d31-51454d55204e564d65204374726c-00000001"}))
                .unwrap(),
            "nvme0n1"
        );
        assert_eq!(pick(json!({"wwn": "0x5000c50015ea71ac"})).unwrap(), "sda");
        assert_eq!(
            pick(json!({"hctl": "0:0:0:0", "vendor": "FERRITE"})).unwrap(),
            "sda"
        );
        assert_eq!(
            pick(json!({"rotational": true, "size": ">= 14"})).unwrap(),
            "sda"
        );
        assert_eq!(pick(json!({"size": 12})).unwrap(), "vda");
        assert_eq!(
            pick(json!({"serial": "<or> FERRITE-VD-1 <or> nope"})).unwrap(),
            "vda"
        );
        // The hidden path device is no candidate, and no disk has a by-path link.
        assert!(pick(json!({"name": "/dev/nvme0c0n1"})).is_err());
        assert!(pick(json!({"by_path": "<in> nvme"})).is_err());
    }
}
