//! Whole-disk images: pick the disk, stream the image onto it, report the
//! disk identifier Ironic asks for afterwards.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use ferrite_protocol::LookupNode;
use serde_json::{json, Map, Value};
use tracing::info;

use super::stream::{http_client, stream_image, StreamFailure};
use super::{configdrive, partition_image, DeployError, ImageInfo};
use crate::command_progress::CommandProgress;
use crate::disk::install_target::install_device;
use crate::disk::node_disks::NodeDisks;
use crate::state::{AgentContext, PreparedImage};

/// `standby.prepare_image`: whole-disk images here, partition images in
/// `partition_image`. Returns IPA's message.
pub fn prepare_image(
    ctx: &Arc<AgentContext>,
    node: &LookupNode,
    info: &ImageInfo,
    configdrive: Option<&Value>,
    progress: &CommandProgress,
) -> Result<String, DeployError> {
    let configdrive = configdrive.filter(|c| !c.is_null());
    let node_uuid = node.uuid.clone();
    let cfg = &ctx.config;
    let disks = NodeDisks::of(node).map_err(DeployError::InvalidParams)?;
    let policy = cfg.disk_policy();
    let device = install_device(super::target::install_scope(cfg, &policy), &disks)?;
    if let Some(params) = &info.partition {
        info!(image = %info.id, device = %device.path.display(), size = device.size, "deploying partition image");
        return partition_image::prepare(
            ctx,
            info,
            params,
            &device.path,
            configdrive,
            &node_uuid,
            progress,
        );
    }
    info!(image = %info.id, device = %device.path.display(), size = device.size, "deploying whole-disk image");
    // A bad config drive fails the deploy before the disk is touched.
    let iso = match configdrive {
        Some(c) => Some(
            tokio::runtime::Handle::current().block_on(configdrive::fetch(
                &http_client(ctx)?,
                c,
                &node_uuid,
                configdrive::WHOLE_DISK_MAX,
            ))?,
        ),
        None => None,
    };
    let dev = device.path.display().to_string();
    let report = match stream_image(ctx, info, &device.path, None, &dev, progress) {
        Ok(report) => report,
        Err(StreamFailure {
            error: e,
            target_touched,
        }) => {
            // Bytes that failed verification (or a stream that broke off in
            // the middle) must not boot: make the disk blank to firmware.
            // An image refused from its first bytes wrote nothing.
            if target_touched && e.leaves_unverified_bytes() {
                match crate::disk::wipe::wipe_device(&device.path) {
                    Ok(_) => {
                        tracing::warn!(device = %dev, "unverified image made unbootable (metadata wiped)")
                    }
                    Err(w) => {
                        tracing::error!(device = %dev, error = %w, "could not wipe the unverified image")
                    }
                }
            }
            return Err(e);
        }
    };
    // IPA's fix_gpt_partition: an image smaller than the disk leaves its
    // backup GPT mid-disk, which firmware and tools flag as damage.
    match crate::disk::gpt_edit::fix_backup(&device.path) {
        Ok(true) => info!(device = %dev, "backup GPT header moved to the end of the disk"),
        Ok(false) => {}
        // IPA fails the deploy here too (InstanceDeployFailure); an image
        // whose GPT does not validate is not one to boot.
        Err(e) => {
            return Err(DeployError::write(
                &dev,
                format!("the image's GPT could not be fixed up: {e}"),
            ))
        }
    }
    if let Some(iso) = &iso {
        configdrive::write_whole_disk(&device.path, iso, &node_uuid)?;
    }
    let root_uuid = disk_identifier(&device.path).map_err(|e| DeployError::write(&dev, e))?;
    ctx.set_prepared(PreparedImage {
        device: device.path.clone(),
        root_uuid: root_uuid.clone(),
        partition: None,
    });
    info!(image = %info.id, bytes = report.downloaded, %root_uuid, "image deployed");
    Ok(format!(
        "image ({}) written to device {dev} root_uuid={root_uuid}",
        info.id
    ))
}

/// The MBR disk signature at offset 440, as IPA reports it (`0x%08x`).
pub fn disk_identifier(device: &Path) -> std::io::Result<String> {
    let mut id = [0u8; 4];
    File::open(device)?.read_exact_at(&mut id, 440)?;
    Ok(format!("0x{:08x}", u32::from_le_bytes(id)))
}

/// `standby.get_partition_uuids`: IPA's shape for either kind of image.
pub fn partition_uuids(ctx: &AgentContext) -> Value {
    match ctx.prepared() {
        Some(PreparedImage {
            root_uuid,
            partition: Some(part),
            ..
        }) => {
            let partitions: Map<String, Value> = part
                .partitions
                .iter()
                .map(|(k, p)| (k.clone(), json!(p.display().to_string())))
                .collect();
            json!({
                "root uuid": root_uuid,
                "efi system partition uuid": part.efi_system_partition_uuid,
                "partitions": partitions,
            })
        }
        Some(p) => json!({ "root uuid": p.root_uuid }),
        None => json!({}),
    }
}
