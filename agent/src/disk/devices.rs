//! `/sys/block/*` → disks worth deploying to.

use std::fs;
use std::path::{Path, PathBuf};

/// Which disks the agent may touch. In a ramdisk (PID 1) that is every disk;
/// anywhere else only an explicit list, so a test never reaches the host's own disks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskPolicy {
    All,
    Only(Vec<PathBuf>),
}

impl DiskPolicy {
    /// `ferrite-disks=all` or `ferrite-disks=/dev/loop3,/dev/loop4`.
    pub fn parse(value: &str) -> Self {
        if value.trim() == "all" {
            return Self::All;
        }
        Self::Only(
            value
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
        )
    }

    pub fn allows(&self, dev: &Path) -> bool {
        match self {
            Self::All => true,
            Self::Only(list) => list.iter().any(|p| p == dev),
        }
    }

    fn explicitly_lists(&self, dev: &Path) -> bool {
        matches!(self, Self::Only(list) if list.iter().any(|p| p == dev))
    }
}

/// A disk with the attributes IPA reports and root device hints match on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockDevice {
    /// Kernel name (`sda`, `nvme0n1`).
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub rotational: bool,
    pub read_only: bool,
    pub removable: bool,
    pub model: String,
    pub vendor: String,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub wwn_with_extension: Option<String>,
    pub wwn_vendor_extension: Option<String>,
    pub hctl: Option<String>,
    pub by_path: Option<String>,
    pub logical_sectors: u64,
    pub physical_sectors: u64,
    pub tran: Option<String>,
}

/// What [`list_block_devices`] reads under `<sysfs>/block/<name>/`; the
/// hardware capture (`ferrite-agent capture-hardware`) records exactly
/// these, so a fixture tree replays the listing.
pub const SYSFS_BLOCK_FILES: &[&str] = &[
    "size",
    "ro",
    "removable",
    "serial",
    "wwid",
    "queue/rotational",
    "queue/logical_block_size",
    "queue/physical_block_size",
    "device/model",
    "device/vendor",
    "device/serial",
    "device/wwid",
    "device/vpd_pg80",
    "hidden",
];
/// Links it follows (the device's place in the tree gives the transport).
pub const SYSFS_BLOCK_LINKS: &[&str] = &["device"];
/// Directories whose entry names it reads (the SCSI address).
pub const SYSFS_BLOCK_LISTED: &[&str] = &["device/scsi_device"];
/// Kernel names the capture leaves out (never disks, and many on a host).
pub const SYSFS_BLOCK_SKIPPED: &[&str] = &["loop", "ram", "zram"];
/// Under the dev root: the udev links whose names it reports (`by_path`).
pub const DEV_LINK_DIRS: &[&str] = &["disk/by-path"];

/// Kernel names of devices that are never install targets (unless listed
/// explicitly, as tests do with loop devices).
const VIRTUAL_PREFIXES: &[&str] = &["loop", "ram", "zram", "sr", "fd", "nbd", "dm-", "md"];

fn read_trim(path: &Path) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn first_entry(dir: &Path) -> Option<String> {
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .min()
}

/// NVMe and virtio expose `serial`; SCSI disks answer VPD page 0x80.
fn serial_of(dir: &Path) -> Option<String> {
    for f in ["device/serial", "serial"] {
        if let Some(s) = non_empty(read_trim(&dir.join(f))) {
            return Some(s);
        }
    }
    let from_vpd = fs::read(dir.join("device/vpd_pg80")).ok().and_then(|page| {
        let len = *page.get(3)? as usize;
        let raw = page.get(4..4 + len)?;
        non_empty(String::from_utf8_lossy(raw).trim().to_string())
    });
    from_vpd.or_else(|| usb_serial(dir))
}

/// USB mass storage skips VPD pages; udev's `ID_SERIAL_SHORT` is then the
/// USB device's own serial string, in the first ancestor that is a USB
/// device (the one with `idVendor`).
fn usb_serial(dir: &Path) -> Option<String> {
    let device = fs::canonicalize(dir.join("device")).ok()?;
    device
        .ancestors()
        .take(12)
        .find(|d| d.join("idVendor").is_file())
        .and_then(|usb| non_empty(read_trim(&usb.join("serial"))))
}

/// udev's `ID_WWN` family from sysfs `wwid`: `naa.<hex>` → `0x<first 16 hex>`
/// (+ the full value and the vendor extension for 32-digit NAA-6 names);
/// other forms (`eui.`, `t10.`, NVMe) as given.
fn wwn_of(dir: &Path) -> (Option<String>, Option<String>, Option<String>) {
    let wwid = [dir.join("device/wwid"), dir.join("wwid")]
        .iter()
        .map(|p| read_trim(p))
        .find(|s| !s.is_empty());
    let Some(wwid) = wwid else {
        return (None, None, None);
    };
    match wwid.strip_prefix("naa.") {
        Some(hex) if hex.len() >= 16 => {
            let hex = hex.to_ascii_lowercase();
            let wwn = format!("0x{}", &hex[..16]);
            let ext = (hex.len() == 32).then(|| format!("0x{}", &hex[16..]));
            (Some(wwn), Some(format!("0x{hex}")), ext)
        }
        // udev's NVMe rule sets only ID_WWN (= the namespace's `wwid`:
        // `eui.`, `uuid.` or `nvme.<vid>-<serial>-<model>-<nsid>`).
        _ => (Some(wwid), None, None),
    }
}

/// A path device of a multipath NVMe namespace (`nvme0c0n1`): hidden by
/// the kernel (no /dev node, lsblk skips it); the namespace is `nvme0n1`.
fn is_hidden(name: &str, dir: &Path) -> bool {
    if read_trim(&dir.join("hidden")) == "1" {
        return true;
    }
    // Kernels before the `hidden` attribute: the name says it.
    let Some(rest) = name.strip_prefix("nvme") else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    rest.split_once('c')
        .and_then(|(ctrl, rest)| Some((ctrl, rest.split_once('n')?)))
        .is_some_and(|(ctrl, (path, ns))| digits(ctrl) && digits(path) && digits(ns))
}

/// The `/dev/disk/by-path` link that points at this disk.
fn by_path_of(dev_root: &Path, name: &str) -> Option<String> {
    let dir = dev_root.join("disk/by-path");
    fs::read_dir(&dir)
        .ok()?
        .flatten()
        .filter(|e| {
            fs::read_link(e.path())
                .ok()
                .and_then(|t| t.file_name().map(|f| f == name))
                .unwrap_or(false)
        })
        .map(|e| format!("/dev/disk/by-path/{}", e.file_name().to_string_lossy()))
        .min()
}

/// lsblk's TRAN, from where the device sits in the sysfs device tree.
fn transport_of(name: &str, dir: &Path) -> Option<String> {
    if name.starts_with("nvme") {
        return Some("nvme".into());
    }
    let real = fs::canonicalize(dir.join("device"))
        .ok()?
        .to_string_lossy()
        .into_owned();
    let tran = if real.contains("/usb") {
        "usb"
    } else if real.contains("/ata") {
        "sata"
    } else if real.contains("/rport-") {
        "fc"
    } else if real.contains("/session") {
        "iscsi"
    } else if real.contains("/end_device-") || real.contains("/expander-") {
        "sas"
    } else if name.starts_with("mmcblk") {
        "mmc"
    } else {
        return None;
    };
    Some(tran.into())
}

/// Disks under `<sysfs>/block`, sorted by name, filtered by the policy.
pub fn list_block_devices(
    sysfs_root: &Path,
    dev_root: &Path,
    policy: &DiskPolicy,
) -> Vec<BlockDevice> {
    let Ok(entries) = fs::read_dir(sysfs_root.join("block")) else {
        return Vec::new();
    };
    let mut devices: Vec<BlockDevice> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Device nodes are always /dev/<name>; `dev_root` only locates udev links.
            let path = Path::new("/dev").join(&name);
            if !policy.allows(&path) {
                return None;
            }
            let virtual_dev = VIRTUAL_PREFIXES.iter().any(|p| name.starts_with(p))
                || name.contains("boot")
                || name.ends_with("rpmb");
            if virtual_dev && !policy.explicitly_lists(&path) {
                return None;
            }
            let dir = entry.path();
            let sectors: u64 = read_trim(&dir.join("size")).parse().unwrap_or(0);
            if sectors == 0 || is_hidden(&name, &dir) {
                return None;
            }
            let (wwn, wwn_with_extension, wwn_vendor_extension) = wwn_of(&dir);
            Some(BlockDevice {
                size: sectors * 512,
                rotational: read_trim(&dir.join("queue/rotational")) == "1",
                read_only: read_trim(&dir.join("ro")) == "1",
                removable: read_trim(&dir.join("removable")) == "1",
                model: read_trim(&dir.join("device/model")),
                vendor: read_trim(&dir.join("device/vendor")),
                serial: serial_of(&dir),
                wwn,
                wwn_with_extension,
                wwn_vendor_extension,
                hctl: first_entry(&dir.join("device/scsi_device")),
                by_path: by_path_of(dev_root, &name),
                logical_sectors: read_trim(&dir.join("queue/logical_block_size"))
                    .parse()
                    .unwrap_or(512),
                physical_sectors: read_trim(&dir.join("queue/physical_block_size"))
                    .parse()
                    .unwrap_or(512),
                tran: transport_of(&name, &dir),
                name,
                path,
            })
        })
        .collect();
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    devices
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(root: &Path, name: &str, sectors: u64, ro: bool) {
        let d = root.join("block").join(name);
        fs::create_dir_all(d.join("queue")).unwrap();
        fs::write(d.join("size"), format!("{sectors}\n")).unwrap();
        fs::write(d.join("ro"), if ro { "1\n" } else { "0\n" }).unwrap();
        fs::write(d.join("queue/rotational"), "0\n").unwrap();
    }

    #[test]
    fn usb_disks_take_the_usb_device_serial() {
        let sys = tempfile::tempdir().unwrap();
        let dev = tempfile::tempdir().unwrap();
        disk(sys.path(), "sdb", 100 << 21, false);
        let usb = sys.path().join("devices/pci0000:00/0000:00:04.0/usb2/2-1");
        let scsi = usb.join("2-1:1.0/host3/target3:0:0/3:0:0:0");
        fs::create_dir_all(&scsi).unwrap();
        fs::write(usb.join("idVendor"), "46f4\n").unwrap();
        fs::write(usb.join("serial"), "FERRITE-USB-6\n").unwrap();
        let sdb = sys.path().join("block/sdb");
        std::os::unix::fs::symlink(&scsi, sdb.join("device")).unwrap();
        let devs = list_block_devices(sys.path(), dev.path(), &DiskPolicy::All);
        assert_eq!(devs[0].serial.as_deref(), Some("FERRITE-USB-6"));
    }

    #[test]
    fn scsi_and_nvme_attributes() {
        let sys = tempfile::tempdir().unwrap();
        let dev = tempfile::tempdir().unwrap();
        disk(sys.path(), "sda", 100 << 21, false);
        disk(sys.path(), "nvme0n1", 200 << 21, false);
        let sda = sys.path().join("block/sda");
        fs::create_dir_all(sda.join("device/scsi_device/2:0:1:0")).unwrap();
        fs::write(
            sda.join("device/wwid"),
            "naa.5000c500a1b2c3d4e5f6a7b8c9d0e1f2\n",
        )
        .unwrap();
        fs::write(sda.join("device/model"), "PERC H740P      \n").unwrap();
        fs::write(sda.join("device/vendor"), "DELL    \n").unwrap();
        let mut vpd = vec![0u8, 0x80, 0, 8];
        vpd.extend_from_slice(b"ZA1B2C3D");
        fs::write(sda.join("device/vpd_pg80"), vpd).unwrap();
        fs::write(sda.join("queue/logical_block_size"), "512\n").unwrap();
        fs::write(sda.join("queue/physical_block_size"), "4096\n").unwrap();
        let nvme = sys.path().join("block/nvme0n1");
        fs::create_dir_all(nvme.join("device")).unwrap();
        fs::write(nvme.join("device/serial"), "S4EVNX0M123456  \n").unwrap();
        fs::write(nvme.join("wwid"), "eui.0025388b71b2c3d4\n").unwrap();
        fs::create_dir_all(dev.path().join("disk/by-path")).unwrap();
        std::os::unix::fs::symlink(
            "../../sda",
            dev.path()
                .join("disk/by-path/pci-0000:18:00.0-scsi-0:2:1:0"),
        )
        .unwrap();

        let devs = list_block_devices(sys.path(), dev.path(), &DiskPolicy::All);
        let (nv, sd) = (&devs[0], &devs[1]);
        assert_eq!(sd.serial.as_deref(), Some("ZA1B2C3D"));
        assert_eq!(sd.wwn.as_deref(), Some("0x5000c500a1b2c3d4"));
        assert_eq!(
            sd.wwn_with_extension.as_deref(),
            Some("0x5000c500a1b2c3d4e5f6a7b8c9d0e1f2")
        );
        assert_eq!(
            sd.wwn_vendor_extension.as_deref(),
            Some("0xe5f6a7b8c9d0e1f2")
        );
        assert_eq!(sd.hctl.as_deref(), Some("2:0:1:0"));
        assert_eq!(
            sd.by_path.as_deref(),
            Some("/dev/disk/by-path/pci-0000:18:00.0-scsi-0:2:1:0")
        );
        assert_eq!(
            (sd.model.as_str(), sd.vendor.as_str()),
            ("PERC H740P", "DELL")
        );
        assert_eq!((sd.logical_sectors, sd.physical_sectors), (512, 4096));
        assert_eq!(nv.serial.as_deref(), Some("S4EVNX0M123456"));
        assert_eq!(nv.wwn.as_deref(), Some("eui.0025388b71b2c3d4"));
        assert_eq!(
            (
                nv.wwn_with_extension.as_deref(),
                nv.wwn_vendor_extension.as_deref()
            ),
            (None, None),
            "udev sets only ID_WWN for NVMe"
        );
        assert_eq!(nv.tran.as_deref(), Some("nvme"));
    }

    /// Multipath NVMe: the namespace `nvme0n1` is the disk; its path
    /// devices (`nvme0c0n1`, hidden, no /dev node) are not.
    #[test]
    fn nvme_path_devices_are_not_disks() {
        let sys = tempfile::tempdir().unwrap();
        disk(sys.path(), "nvme0n1", 100 << 21, false);
        disk(sys.path(), "nvme0c0n1", 100 << 21, false);
        fs::write(sys.path().join("block/nvme0c0n1/hidden"), "1\n").unwrap();
        fs::write(sys.path().join("block/nvme0n1/hidden"), "0\n").unwrap();
        // An older kernel without the attribute.
        disk(sys.path(), "nvme1c12n3", 100 << 21, false);
        disk(sys.path(), "nvme1n3", 100 << 21, false);
        let all = list_block_devices(sys.path(), Path::new("/dev"), &DiskPolicy::All);
        let names: Vec<_> = all.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["nvme0n1", "nvme1n3"]);
        assert!(!is_hidden("nvme10n1", Path::new("/nonexistent")));
        assert!(!is_hidden("nvmecn1", Path::new("/nonexistent")));
    }

    #[test]
    fn policy_and_filters() {
        let sys = tempfile::tempdir().unwrap();
        disk(sys.path(), "sda", 100 << 21, false);
        disk(sys.path(), "vda", 10 << 21, false);
        disk(sys.path(), "loop0", 10 << 21, false);
        disk(sys.path(), "sr0", 10 << 21, false);
        disk(sys.path(), "sdz", 0, false);
        let all = list_block_devices(sys.path(), Path::new("/dev"), &DiskPolicy::All);
        let names: Vec<_> = all.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["sda", "vda"]);
        let only = list_block_devices(
            sys.path(),
            Path::new("/dev"),
            &DiskPolicy::parse("/dev/loop0"),
        );
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].path, PathBuf::from("/dev/loop0"));
        assert_eq!(only[0].size, 10 << 30);
        let none = list_block_devices(sys.path(), Path::new("/dev"), &DiskPolicy::Only(vec![]));
        assert!(none.is_empty());
    }
}
