//! `image.install_bootloader`: make the deployed disk boot. As IPA: in
//! UEFI, register the loaders the ESP ships in NVRAM (natively, through
//! efivarfs); for partition images, run the image's own GRUB in a chroot
//! (BIOS only when the conductor allows it), then register UEFI entries.

pub mod efi;
pub mod grub;

use std::path::{Path, PathBuf};

use serde_json::Value;
use tracing::{info, warn};

use crate::disk::fsinfo::{self, FsInfo};
use crate::disk::links;
use crate::disk::mounts::Mounts;
use crate::disk::partitions::{self, Partition, PartitionTable, TableKind};
use crate::disk::region::Region;

pub use crate::disk::boot_mode::BootMode;

/// Why the boot loader was not installed. The command layer gives each
/// case IPA's wire type (`commands/wire_errors.rs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootloaderError {
    #[error("{0}")]
    InvalidParams(String),
    /// The disk, a partition or the ESP is not where the request says.
    #[error("{0}")]
    NoDevice(String),
    /// The image cannot be made to boot this way (policy or contents).
    #[error("{0}")]
    InvalidImage(String),
    #[error("{0}")]
    Failed(String),
}

/// The command's parameters, as the conductor sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub root_uuid: Option<String>,
    pub efi_system_part_uuid: Option<String>,
    pub prep_boot_part_uuid: Option<String>,
    pub target_boot_mode: BootMode,
    pub ignore_failure: bool,
}

impl Request {
    pub fn from_params(params: &serde_json::Map<String, Value>) -> Result<Self, BootloaderError> {
        let text = |k: &str| {
            params
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let target_boot_mode = match text("target_boot_mode") {
            None => BootMode::Bios,
            Some(m) => BootMode::parse(&m).ok_or_else(|| {
                BootloaderError::InvalidParams(format!(
                    "target_boot_mode must be 'bios' or 'uefi', not {m:?}"
                ))
            })?,
        };
        let ignore_failure = match params.get("ignore_bootloader_failure") {
            None | Some(Value::Null) => false,
            Some(v) => ferrite_protocol::loose::value_as_bool(v).ok_or_else(|| {
                BootloaderError::InvalidParams("ignore_bootloader_failure must be a boolean".into())
            })?,
        };
        Ok(Self {
            root_uuid: text("root_uuid"),
            efi_system_part_uuid: text("efi_system_part_uuid"),
            prep_boot_part_uuid: text("prep_boot_part_uuid"),
            target_boot_mode,
            ignore_failure,
        })
    }

    /// A whole-disk image: no root UUID, or the MBR disk identifier.
    fn is_whole_disk(&self) -> bool {
        match &self.root_uuid {
            None => true,
            Some(u) => u.starts_with("0x"),
        }
    }
}

/// What the install needs from the agent around it.
pub struct Environment<'a> {
    pub disk: &'a Path,
    pub sysfs_root: &'a Path,
    /// `[conductor]enable_bios_bootloader_install`, pushed through lookup.
    pub bios_install_allowed: bool,
    /// The agent owns `/dev` (the ramdisk, no udev): make the
    /// `/dev/disk/by-uuid` and `by-partuuid` links the image's tools expect.
    pub make_dev_links: bool,
    /// Loads kernel modules (md, for software RAID ESP mirrors).
    pub load_module: crate::disk::raid::running::LoadModule<'a>,
}

/// A disk's partitions with their filesystems and device nodes.
struct DiskView {
    table: PartitionTable,
    nodes: Vec<(u32, PathBuf)>,
    filesystems: Vec<(u32, Option<FsInfo>)>,
}

impl DiskView {
    fn read(env: &Environment) -> Result<Self, BootloaderError> {
        let disk = env.disk;
        let table =
            partitions::read_table(disk).map_err(|e| BootloaderError::NoDevice(e.to_string()))?;
        let nodes = partitions::expose_partitions(env.sysfs_root, disk, &table)
            .map_err(|e| BootloaderError::NoDevice(e.to_string()))?;
        let filesystems = table
            .partitions
            .iter()
            .map(|p| {
                let region = Region::new(disk, p.number, p.start, p.len);
                (p.number, fsinfo::probe(&region).ok().flatten())
            })
            .collect();
        Ok(Self {
            table,
            nodes,
            filesystems,
        })
    }

    fn node(&self, number: u32) -> Option<&Path> {
        self.nodes
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, p)| p.as_path())
    }

    fn fs(&self, number: u32) -> Option<&FsInfo> {
        self.filesystems
            .iter()
            .find(|(n, _)| *n == number)
            .and_then(|(_, f)| f.as_ref())
    }

    /// The partition whose filesystem UUID or PARTUUID is `uuid`.
    fn by_uuid(&self, uuid: &str) -> Option<&Partition> {
        self.table.partitions.iter().find(|p| {
            p.part_uuid.eq_ignore_ascii_case(uuid)
                || self
                    .fs(p.number)
                    .and_then(|f| f.uuid.as_deref())
                    .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
        })
    }

    /// The ESP: by type (GPT/MBR), else by the UUID Ironic gave.
    fn esp(&self, hint: Option<&str>) -> Option<&Partition> {
        self.table
            .partitions
            .iter()
            .find(|p| p.is_esp())
            .or_else(|| hint.and_then(|u| self.by_uuid(u)))
    }

    /// udev's `/dev/disk/by-uuid` and `by-partuuid` links for this disk.
    fn dev_links(&self) -> Vec<links::Link> {
        let mut out = Vec::new();
        for p in &self.table.partitions {
            let Some(node) = self.node(p.number) else {
                continue;
            };
            if let Some(uuid) = self.fs(p.number).and_then(|f| f.uuid.as_deref()) {
                out.push(links::Link::by_uuid(uuid, node));
            }
            out.push(links::Link::by_partuuid(&p.part_uuid, node));
        }
        out
    }

    fn describe(&self) -> String {
        self.table
            .partitions
            .iter()
            .map(|p| {
                let fs = self.fs(p.number);
                format!(
                    "{} (PARTUUID {}, {} UUID {})",
                    p.number,
                    p.part_uuid,
                    fs.map(|f| f.fstype).unwrap_or("no filesystem"),
                    fs.and_then(|f| f.uuid.clone()).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn temp_mount_point(tag: &str) -> Result<PathBuf, BootloaderError> {
    nix::unistd::mkdtemp(&std::env::temp_dir().join(format!("ferrite-{tag}-XXXXXX")))
        .map_err(|e| BootloaderError::Failed(format!("creating a mount point: {e}")))
}

/// Write a `Boot####` entry, first in `BootOrder`, for each loader.
fn register_loaders(
    env: &Environment,
    view: &DiskView,
    esp: &Partition,
    found: &[efi::Loader],
) -> Result<(), String> {
    let signature = match view.table.kind {
        TableKind::Gpt { .. } => efi::DiskSignature::Gpt(
            uuid::Uuid::parse_str(&esp.part_uuid)
                .map_err(|e| format!("ESP PARTUUID {}: {e}", esp.part_uuid))?,
        ),
        TableKind::Mbr { signature } => efi::DiskSignature::Mbr(signature),
    };
    let sector = view.table.sector;
    let hard_drive = efi::HardDrive {
        partition_number: esp.number,
        start_lba: esp.start / sector,
        size_lba: esp.len / sector,
        signature,
    };
    let entries: Vec<(efi::HardDrive, &efi::Loader, String)> = found
        .iter()
        .map(|l| (hard_drive, l, l.label.clone()))
        .collect();
    add_entries(env, &entries)
}

/// `Boot####` entries, each first in `BootOrder` as it is written.
fn add_entries(
    env: &Environment,
    entries: &[(efi::HardDrive, &efi::Loader, String)],
) -> Result<(), String> {
    let vars = efi::EfiVars::new(env.sysfs_root.join("firmware/efi/efivars"))
        .map_err(|e| format!("UEFI variables: {e}"))?;
    for (hard_drive, loader, description) in entries {
        let option = efi::LoadOption {
            attributes: efi::load_option::ACTIVE,
            description: description.clone(),
            hard_drive: *hard_drive,
            loader: loader.path.clone(),
        };
        let n = vars
            .add_first(&option)
            .map_err(|e| format!("writing Boot entry {description}: {e}"))?;
        info!(entry = format!("Boot{n:04X}"), label = %description, loader = %loader.path, "UEFI boot entry registered");
    }
    Ok(())
}

/// The md array the image went to, when the install device is one.
fn root_array(env: &Environment) -> Option<crate::disk::raid::running::RunningArray> {
    crate::disk::raid::running::arrays(env.sysfs_root)
        .into_iter()
        .find(|a| a.path == env.disk && !a.holders.is_empty())
}

/// IPA's `_configure_grub` for dracut images on md: `rd.md.uuid=` for
/// every array the kernel runs, so the image's initramfs assembles them.
fn add_rd_md_uuids(env: &Environment, root: &Path) -> Result<(), String> {
    let uuids: Vec<String> = crate::disk::raid::running::arrays(env.sysfs_root)
        .iter()
        .filter_map(|a| {
            let member = Path::new("/dev").join(a.members.first()?);
            crate::disk::md::scan::scan(&[member])
                .first()
                .map(|f| format!("rd.md.uuid={}", grub::mdadm_uuid(&f.sb.set_uuid)))
        })
        .collect();
    if uuids.is_empty() {
        return Ok(());
    }
    let path = root.join("etc/default/grub");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    std::fs::write(&path, grub::append_to_cmdline(&text, &uuids.join(" ")))
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    info!(
        ?uuids,
        "rd.md.uuid kernel parameters set for the image's dracut"
    );
    Ok(())
}

/// The array's holder disks as device nodes, in the array's order.
fn holder_disks(array: &crate::disk::raid::running::RunningArray) -> Vec<PathBuf> {
    array
        .holders
        .iter()
        .map(|h| Path::new("/dev").join(h))
        .collect()
}

/// Where GRUB's BIOS boot code goes: the install disk, or, when the image
/// is on an md array, every holder disk of it (IPA's `_install_grub2`), each
/// given room for core.img first (IPA's `prepare_boot_partitions_for_softraid`).
fn bios_grub_disks(env: &Environment) -> Result<Vec<PathBuf>, String> {
    let Some(array) = root_array(env) else {
        return Ok(vec![env.disk.to_path_buf()]);
    };
    let holders = holder_disks(&array);
    crate::disk::raid::bios_boot::prepare(&holders).map_err(|e| {
        format!(
            "BIOS boot partitions on the holders of {}: {e}",
            array.name()
        )
    })?;
    info!(array = %array.name(), disks = ?holders, "GRUB2 will be installed on the holder disks");
    Ok(holders)
}

/// IPA's software RAID UEFI setup: the image (on an md array) keeps its
/// ESP inside the array, where firmware cannot see it; each holder gets an
/// ESP of its own, mirrored, holding the image's ESP, and an NVRAM entry
/// per holder (`<label> (RAID, part<i>)`) so either disk boots alone.
fn softraid_efi_setup(
    env: &Environment,
    array: &crate::disk::raid::running::RunningArray,
    req: &Request,
) -> Result<(), BootloaderError> {
    let view = DiskView::read(env)?;
    let esp = find_esp(env, &view, req)?;
    let found = efi::loaders::find(env.disk, esp.start, esp.len)
        .map_err(|e| BootloaderError::Failed(format!("reading the EFI system partition: {e}")))?;
    if found.is_empty() {
        return Err(BootloaderError::Failed(format!(
            "the image's EFI system partition on {} holds no boot loader",
            env.disk.display()
        )));
    }
    let holders = holder_disks(array);
    let esps = crate::disk::raid::esp::prepare(
        env.sysfs_root,
        &holders,
        (env.disk, esp.start, esp.len),
        crate::disk::md::homehost().as_deref(),
        crate::disk::md::now(),
        env.load_module,
    )
    .map_err(|e| BootloaderError::Failed(format!("software RAID ESPs: {e}")))?;
    let mut entries = Vec::new();
    // Reverse, so the first holder ends up first in BootOrder.
    for (i, e) in esps.iter().enumerate().rev() {
        for loader in &found {
            entries.push((
                efi::HardDrive {
                    partition_number: e.number,
                    start_lba: e.start / e.sector,
                    size_lba: e.len / e.sector,
                    signature: efi::DiskSignature::Gpt(e.part_uuid),
                },
                loader,
                format!("{} (RAID, part{i})", loader.label),
            ));
        }
    }
    add_entries(env, &entries).map_err(BootloaderError::Failed)
}

fn find_esp<'v>(
    env: &Environment,
    view: &'v DiskView,
    req: &Request,
) -> Result<&'v Partition, BootloaderError> {
    view.esp(req.efi_system_part_uuid.as_deref())
        .ok_or_else(|| {
            BootloaderError::NoDevice(format!(
                "No EFI system partition found on {}: are you using a UEFI-compatible image? \
             Partitions: {}",
                env.disk.display(),
                view.describe()
            ))
        })
}

/// IPA's `_efi_boot_setup`: true when entries were written, false when the
/// ESP ships no loader yet, an error when there is no ESP.
fn efi_boot_setup(
    env: &Environment,
    view: &DiskView,
    req: &Request,
) -> Result<bool, BootloaderError> {
    let esp = find_esp(env, view, req)?;
    let found = efi::loaders::find(env.disk, esp.start, esp.len)
        .map_err(|e| BootloaderError::Failed(format!("reading the EFI system partition: {e}")))?;
    if found.is_empty() {
        return Ok(false);
    }
    register_loaders(env, view, esp, &found).map_err(BootloaderError::Failed)?;
    Ok(true)
}

/// Install GRUB from the image at the partition Ironic named; returns the
/// directory name GRUB got under `\EFI` (the distribution's ID).
fn install_grub(env: &Environment, view: &DiskView, req: &Request) -> Result<String, String> {
    let root_uuid = req.root_uuid.as_deref().unwrap_or_default();
    let root = view.by_uuid(root_uuid).ok_or_else(|| {
        format!(
            "no partition on {} has UUID {root_uuid}; partitions: {}",
            env.disk.display(),
            view.describe()
        )
    })?;
    let root_fs = view
        .fs(root.number)
        .ok_or_else(|| format!("partition {} holds no filesystem", root.number))?;
    let root_node = view
        .node(root.number)
        .ok_or_else(|| format!("partition {} has no device node", root.number))?;
    let uefi = req.target_boot_mode == BootMode::Uefi;
    let esp = if uefi {
        Some(
            view.esp(req.efi_system_part_uuid.as_deref())
                .ok_or_else(|| {
                    format!(
                        "UEFI install but no EFI system partition on {}",
                        env.disk.display()
                    )
                })?,
        )
    } else {
        None
    };

    let bios_disks = if uefi {
        Vec::new()
    } else {
        bios_grub_disks(env)?
    };
    let point = temp_mount_point("root").map_err(|e| e.to_string())?;
    let mut mounts = Mounts::default();
    let result = (|| -> Result<String, String> {
        mounts.mount(root_node, &point, root_fs.fstype)?;
        for fs in ["dev", "proc", "sys", "run"] {
            mounts.bind(&Path::new("/").join(fs), &point.join(fs))?;
        }
        if env.make_dev_links {
            // Without them grub-mkconfig names root by the ramdisk's device
            // name (root=/dev/vda1) instead of root=UUID=...
            let made = links::ensure(Path::new("/dev"), &view.dev_links())
                .map_err(|e| format!("making /dev/disk links: {e}"))?;
            info!(
                links = made.len(),
                "/dev/disk links made for the image's tools"
            );
        }
        if let Some(esp) = esp {
            let node = view
                .node(esp.number)
                .ok_or_else(|| "ESP device node missing".to_string())?;
            mounts.mount(node, &point.join("boot/efi"), "vfat")?;
        }
        let tools = grub::find_tools(&point).ok_or_else(|| {
            "the image has no grub-install/grub2-install and grub-mkconfig".to_string()
        })?;
        let id = grub::distribution_id(&point).unwrap_or_else(|| "ironic".into());
        let arch = grub::FirmwareArch::this_machine()?;
        if uefi {
            grub::install_uefi(&point, &tools, arch, &id)?;
        } else {
            for disk in &bios_disks {
                grub::install_bios(&point, &tools, arch, disk)?;
            }
        }
        if root_array(env).is_some() && grub::has_dracut(&point) {
            add_rd_md_uuids(env, &point)?;
        }
        grub::make_config(&point, &tools)?;
        nix::unistd::sync();
        Ok(id)
    })();
    let unmounted = mounts.unmount_all();
    let _ = std::fs::remove_dir(&point);
    let id = result?;
    unmounted?;
    Ok(id)
}

/// What grub-install put under `\EFI\<id>`: shim when the image has it
/// (Secure Boot), else GRUB itself.
fn installed_loader(
    env: &Environment,
    esp: &Partition,
    arch: grub::FirmwareArch,
    id: &str,
) -> std::io::Result<efi::Loader> {
    for name in ["shim", "grub"] {
        let path = format!("\\EFI\\{id}\\{name}{}.efi", arch.efi_suffix);
        if efi::loaders::exists(env.disk, esp.start, esp.len, &path)? {
            return Ok(efi::Loader {
                path,
                label: id.to_string(),
            });
        }
    }
    Ok(efi::Loader {
        path: arch.removable_loader(),
        label: id.to_string(),
    })
}

/// The whole command. `Ok(Value::Null)` on success, as IPA.
pub fn install_bootloader(env: &Environment, req: &Request) -> Result<Value, BootloaderError> {
    let current = BootMode::current(env.sysfs_root);
    info!(disk = %env.disk.display(), ?current, target = ?req.target_boot_mode, root_uuid = ?req.root_uuid, "installing the bootloader");
    if req.prep_boot_part_uuid.is_some() {
        warn!("prep_boot_part_uuid given: PReP (ppc64) boot partitions are not handled on this architecture");
    }
    if current == BootMode::Uefi {
        if let Some(array) = root_array(env) {
            softraid_efi_setup(env, &array, req)?;
            return Ok(Value::Null);
        }
    }
    if current == BootMode::Uefi && efi_boot_setup(env, &DiskView::read(env)?, req)? {
        return Ok(Value::Null);
    }
    if req.is_whole_disk() {
        // A whole-disk image carries its own boot loader, whatever its
        // partitioning (or none): nothing on it needs reading. Ironic asks
        // anyway for whole-disk images in UEFI mode.
        return Ok(Value::Null);
    }
    if req.target_boot_mode == BootMode::Bios && !env.bios_install_allowed {
        let msg = "Installing a BIOS boot loader with the image's grub-install is disabled by the \
                   conductor ([conductor]enable_bios_bootloader_install = False); use a \
                   whole-disk image or enable it";
        return if req.ignore_failure {
            warn!("{msg}; ignored as requested");
            Ok(Value::Null)
        } else {
            Err(BootloaderError::InvalidImage(msg.into()))
        };
    }
    let view = DiskView::read(env)?;
    let id = match install_grub(env, &view, req) {
        Ok(id) => id,
        Err(e) if req.ignore_failure => {
            warn!("bootloader install failed, ignored as requested: {e}");
            return Ok(Value::Null);
        }
        Err(e) => {
            return Err(BootloaderError::Failed(format!(
                "Installing GRUB2 boot loader to device {} failed with {e}",
                env.disk.display()
            )))
        }
    };
    // grub-install ran with --no-nvram: register the loader it installed.
    if req.target_boot_mode == BootMode::Uefi {
        if current == BootMode::Uefi {
            let view = DiskView::read(env)?;
            let esp = find_esp(env, &view, req)?;
            let arch = grub::FirmwareArch::this_machine().map_err(BootloaderError::Failed)?;
            let loader = installed_loader(env, esp, arch, &id)
                .map_err(|e| BootloaderError::Failed(format!("reading the ESP: {e}")))?;
            register_loaders(env, &view, esp, &[loader]).map_err(BootloaderError::Failed)?;
        } else {
            warn!("not booted in UEFI mode: no NVRAM entry written; firmware will use the removable-media loader (\\EFI\\BOOT\\BOOT<arch>.EFI)");
        }
    }
    Ok(Value::Null)
}
