//! Partition images (`image_type=partition`), as IPA's
//! `partition_utils.work_on_disk`: wipe, lay out the partitions, stream
//! the image into root, make the ESP, swap and ephemeral filesystems, write
//! the config drive, and report the UUIDs the conductor installs a
//! bootloader with.

use std::path::Path;

use ferrite_protocol::image_info::PartitionParams;
use serde_json::Value;
use tracing::info;

use super::stream::stream_image;
use super::{configdrive, DeployError, ImageInfo};
use crate::command_progress::CommandProgress;
use crate::disk::layout::{self, LayoutRequest, Role, Written, MIB};
use crate::disk::{fsinfo, mkfs, wipe};
use crate::state::{AgentContext, PartitionImage, PreparedImage};

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
    params: &PartitionParams,
    disk: &Path,
    configdrive: Option<&Value>,
    node_uuid: &str,
    progress: &CommandProgress,
) -> Result<String, DeployError> {
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
        &std::fs::File::open(disk).map_err(|e| DeployError::write(&dev, e))?,
    )
    .map_err(|e| DeployError::write(&dev, e))?;
    let sector = std::fs::File::open(disk)
        .map(|f| crate::disk::ioctl::sector_size(&f))
        .unwrap_or(512);
    let plan = layout::plan(&request, size, sector).map_err(|e| {
        DeployError::Deployment(format!("Cannot partition {dev} for image {}: {e}", info.id))
    })?;
    if !params.preserve_ephemeral {
        let wiped = wipe::wipe_device(disk).map_err(|e| {
            DeployError::Deployment(format!("Destroying the metadata of {dev} failed: {e}"))
        })?;
        info!(device = %dev, signatures = ?wiped.signatures, "disk metadata destroyed");
    }
    let written = layout::write_layout(disk, params.label, &plan, params.uefi)
        .map_err(|e| DeployError::Deployment(e.to_string()))?;
    info!(device = %dev, partitions = ?written.iter().map(|w| (w.role, w.region.path())).collect::<Vec<_>>(), "partitions created");
    let part = |role| {
        find(&written, role).ok_or_else(|| {
            DeployError::Internal(format!("the layout has no {} partition", role.key()))
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

    let fs_error = |e: mkfs::MkfsError| DeployError::Deployment(e.to_string());
    if let Some(esp) = find(&written, Role::Esp) {
        mkfs::mkfs(&esp.region, "vfat", "efi-part").map_err(fs_error)?;
    }
    if let (Some(cd), Some(iso)) = (find(&written, Role::ConfigDrive), &iso) {
        cd.region.write_all(iso).map_err(|e| {
            DeployError::Deployment(format!(
                "Writing the config drive to {} failed: {e}",
                cd.region.path().display()
            ))
        })?;
    }
    if let Some(swap) = find(&written, Role::Swap) {
        fsinfo::make_swap(&swap.region, "swap1").map_err(|e| {
            DeployError::Deployment(format!(
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
