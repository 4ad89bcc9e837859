//! Partition images (`image_type=partition`), as IPA's
//! `partition_utils.work_on_disk`: wipe, lay out the partitions, stream
//! the image into root, make the ESP, swap and ephemeral filesystems, write
//! the config drive, and report the UUIDs the conductor installs a
//! bootloader with.

use std::path::Path;

use serde_json::{Map, Value};
use tracing::info;

use super::stream::stream_image;
use super::{configdrive, ImageInfo};
use crate::command_progress::CommandProgress;
use crate::disk::layout::{self, Label, LayoutRequest, Role, Written, MIB};
use crate::disk::{fsinfo, mkfs, wipe};
use crate::errors::RestError;
use crate::state::{AgentContext, PartitionImage, PreparedImage};

/// The partition-image fields of `image_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionParams {
    pub root_mb: u64,
    pub swap_mb: u64,
    pub ephemeral_mb: u64,
    pub ephemeral_format: String,
    pub preserve_ephemeral: bool,
    pub uefi: bool,
    pub label: Label,
}

/// Ironic sends integers; older conductors and hand-made requests send strings.
fn mb(map: &Map<String, Value>, key: &str) -> Result<Option<u64>, RestError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
            RestError::invalid_params(format!("{key} must be a whole number of MiB"))
        }),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| {
            RestError::invalid_params(format!("{key} must be a whole number of MiB, not {s:?}"))
        }),
        Some(_) => Err(RestError::invalid_params(format!(
            "{key} must be a whole number of MiB"
        ))),
    }
}

/// oslo's `bool_from_string` as IPA reads these flags: unknown is false.
fn truthy(v: Option<&Value>) -> bool {
    v.and_then(crate::loose::value_as_bool).unwrap_or(false)
}

impl PartitionParams {
    pub fn parse(image_info: &Value) -> Result<Self, RestError> {
        let map = image_info
            .as_object()
            .ok_or_else(|| RestError::invalid_params("image_info must be an object"))?;
        let root_mb = match mb(map, "root_mb")? {
            Some(v) => v,
            None => mb(map, "root_gb")?.map(|g| g * 1024).ok_or_else(|| {
                RestError::invalid_params("a partition image needs root_mb in image_info")
            })?,
        };
        let text = |k: &str| {
            map.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_ascii_lowercase)
        };
        let uefi = text("deploy_boot_mode").as_deref() == Some("uefi");
        let label = match text("disk_label") {
            Some(l) => Label::parse(&l).ok_or_else(|| {
                RestError::invalid_params(format!("disk_label {l:?} is neither gpt nor msdos"))
            })?,
            None if uefi => Label::Gpt,
            None => Label::Msdos,
        };
        Ok(Self {
            root_mb,
            swap_mb: mb(map, "swap_mb")?.unwrap_or(0),
            ephemeral_mb: mb(map, "ephemeral_mb")?.unwrap_or(0),
            ephemeral_format: text("ephemeral_format").unwrap_or_else(|| "ext4".into()),
            preserve_ephemeral: truthy(map.get("preserve_ephemeral")),
            uefi,
            label,
        })
    }
}

fn find(written: &[Written], role: Role) -> Option<&Written> {
    written.iter().find(|w| w.role == role)
}

/// The filesystem UUID, else the PARTUUID (what `lsblk` would give IPA).
fn uuid_of(w: &Written) -> String {
    fsinfo::probe(&w.region)
        .ok()
        .flatten()
        .and_then(|i| i.uuid)
        .unwrap_or_else(|| w.partuuid.clone())
}

/// `standby.prepare_image` for a partition image on `disk`. Returns IPA's message.
pub fn prepare(
    ctx: &AgentContext,
    info: &ImageInfo,
    image_info: &Value,
    disk: &Path,
    configdrive: Option<&Value>,
    node_uuid: &str,
    progress: &CommandProgress,
) -> Result<String, RestError> {
    let params = PartitionParams::parse(image_info)?;
    let dev = disk.display().to_string();
    let rt = tokio::runtime::Handle::current();
    // Fetch the config drive before touching the disk: a bad one costs nothing.
    let iso = match configdrive.filter(|c| !c.is_null()) {
        Some(c) => Some(rt.block_on(configdrive::fetch(
            &super::stream::http_client(ctx)?,
            c,
            node_uuid,
            configdrive::PARTITION_MAX,
        ))?),
        None => None,
    };
    let request = LayoutRequest {
        label: params.label,
        uefi: params.uefi,
        root_mb: params.root_mb,
        swap_mb: params.swap_mb,
        ephemeral_mb: params.ephemeral_mb,
        configdrive_mb: iso.as_ref().map_or(0, |i| (i.len() as u64).div_ceil(MIB)),
    };
    let size = crate::disk::ioctl::device_size(
        &std::fs::File::open(disk).map_err(|e| RestError::image_write(&dev, e))?,
    )
    .map_err(|e| RestError::image_write(&dev, e))?;
    let sector = std::fs::File::open(disk)
        .map(|f| crate::disk::ioctl::sector_size(&f))
        .unwrap_or(512);
    let plan = layout::plan(&request, size, sector).map_err(|e| {
        RestError::deployment(format!("Cannot partition {dev} for image {}: {e}", info.id))
    })?;
    if !params.preserve_ephemeral {
        let wiped = wipe::wipe_device(disk).map_err(|e| {
            RestError::deployment(format!("Destroying the metadata of {dev} failed: {e}"))
        })?;
        info!(device = %dev, signatures = ?wiped.signatures, "disk metadata destroyed");
    }
    let written = layout::write_layout(disk, params.label, &plan, params.uefi)
        .map_err(|e| RestError::deployment(e.to_string()))?;
    info!(device = %dev, partitions = ?written.iter().map(|w| (w.role, w.region.path())).collect::<Vec<_>>(), "partitions created");
    let part = |role| {
        find(&written, role).ok_or_else(|| {
            RestError::command_execution(format!("the layout has no {} partition", role.key()))
        })
    };

    let root = part(Role::Root)?;
    let root_name = root.region.path().display().to_string();
    stream_image(
        ctx,
        info,
        disk,
        Some(root.region.window()),
        &root_name,
        progress,
    )?;

    let fs_error = |e: mkfs::MkfsError| RestError::deployment(e.to_string());
    if let Some(esp) = find(&written, Role::Esp) {
        mkfs::mkfs(&esp.region, "vfat", "efi-part").map_err(fs_error)?;
    }
    if let (Some(cd), Some(iso)) = (find(&written, Role::ConfigDrive), &iso) {
        cd.region.write_all(iso).map_err(|e| {
            RestError::deployment(format!(
                "Writing the config drive to {} failed: {e}",
                cd.region.path().display()
            ))
        })?;
    }
    if let Some(swap) = find(&written, Role::Swap) {
        fsinfo::make_swap(&swap.region, "swap1").map_err(|e| {
            RestError::deployment(format!(
                "Making swap on {} failed: {e}",
                swap.region.path().display()
            ))
        })?;
    }
    if let Some(eph) = find(&written, Role::Ephemeral) {
        if !params.preserve_ephemeral {
            mkfs::mkfs(&eph.region, &params.ephemeral_format, "ephemeral0").map_err(fs_error)?;
        }
    }
    nix::unistd::sync();

    let root_uuid = uuid_of(root);
    let esp_uuid = find(&written, Role::Esp).map(uuid_of);
    ctx.set_prepared(PreparedImage {
        device: disk.to_path_buf(),
        root_uuid: root_uuid.clone(),
        partition: Some(PartitionImage {
            efi_system_partition_uuid: esp_uuid.clone(),
            partitions: written
                .iter()
                .map(|w| (w.role.key().to_string(), w.region.path()))
                .collect(),
        }),
    });
    info!(image = %info.id, device = %dev, %root_uuid, esp_uuid = ?esp_uuid, "partition image deployed");
    let mut msg = format!(
        "image ({}) written to device {dev} root_uuid={root_uuid}",
        info.id
    );
    if let Some(esp) = esp_uuid {
        msg.push_str(&format!(" efi_system_partition_uuid={esp}"));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_ironic_fields_with_ipa_defaults() {
        let p = PartitionParams::parse(&json!({"root_mb": 10240, "swap_mb": "512",
            "deploy_boot_mode": "uefi", "preserve_ephemeral": "True"}))
        .unwrap();
        assert_eq!(p.root_mb, 10240);
        assert_eq!(p.swap_mb, 512);
        assert_eq!(p.label, Label::Gpt);
        assert!(p.uefi && p.preserve_ephemeral);
        assert_eq!(p.ephemeral_format, "ext4");
        let p = PartitionParams::parse(&json!({"root_gb": 2, "disk_label": "gpt"})).unwrap();
        assert_eq!((p.root_mb, p.label, p.uefi), (2048, Label::Gpt, false));
        let p = PartitionParams::parse(&json!({"root_mb": 1})).unwrap();
        assert_eq!(p.label, Label::Msdos);
        assert!(PartitionParams::parse(&json!({"swap_mb": 1})).is_err());
        assert!(PartitionParams::parse(&json!({"root_mb": "x"})).is_err());
        assert!(PartitionParams::parse(&json!({"root_mb": 1, "disk_label": "sun"})).is_err());
    }
}
