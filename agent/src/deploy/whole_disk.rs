//! Whole-disk images: pick the disk, stream the image onto it, report the
//! disk identifier Ironic asks for afterwards.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tracing::info;

use super::ImageInfo;
use crate::api::runner::CommandProgress;
use crate::disk::{choose_root_device, list_block_devices};
use crate::errors::RestError;
use crate::image::{write_image, ImageError, Progress, SourceConfig, WriteRequest};
use crate::state::{AgentContext, PreparedImage};

/// How often the running command's result shows fresh progress.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How often progress goes to the log.
const LOG_EVERY: u32 = 10;

fn map_error(info: &ImageInfo, url: &str, device: &Path, e: ImageError) -> RestError {
    match e {
        ImageError::Source(_) | ImageError::HttpStatus { .. } => {
            RestError::image_download(&info.id, e)
        }
        ImageError::Checksum {
            expected, actual, ..
        } => RestError::image_checksum(&info.id, url, &expected, &actual),
        ImageError::Format(_)
        | ImageError::Qcow2(_)
        | ImageError::DeclaredMismatch { .. }
        | ImageError::Decompress(_) => RestError::invalid_image(format!("Image {}: {e}", info.id)),
        ImageError::TooLarge { .. } | ImageError::Target { .. } => {
            RestError::image_write(&device.display().to_string(), e)
        }
        ImageError::Internal(_) => RestError::command_execution(e.to_string()),
    }
}

/// Root device hints from the node: `instance_info.root_device`, else `properties.root_device`.
pub(crate) fn hints(node: &Map<String, Value>) -> Option<Map<String, Value>> {
    ["instance_info", "properties"]
        .iter()
        .filter_map(|k| node.get(*k)?.get("root_device")?.as_object().cloned())
        .find(|h| !h.is_empty())
}

/// `standby.prepare_image` for whole-disk images. Returns IPA's message.
pub fn prepare_image(
    ctx: &Arc<AgentContext>,
    node: &Map<String, Value>,
    image_info: &Value,
    configdrive: Option<&Value>,
    progress: &CommandProgress,
) -> Result<String, RestError> {
    let md5_enabled = ctx
        .lookup_config()
        .map(|c| c.agent_md5_checksum_enable)
        .unwrap_or(true);
    let info = ImageInfo::parse(image_info, md5_enabled)?;
    if info.image_type.as_deref() == Some("partition") {
        return Err(RestError::invalid_image(format!(
            "Image {}: partition images (image_type=partition) are not supported by this agent yet",
            info.id
        )));
    }
    if configdrive.is_some_and(|c| !c.is_null()) {
        return Err(RestError::invalid_image(
            "config drives are not supported by this agent yet",
        ));
    }
    let cfg = &ctx.config;
    let devices = list_block_devices(&cfg.sysfs_root, &cfg.dev_root, &cfg.disk_policy());
    let device = choose_root_device(&devices, hints(node).as_ref())?;
    info!(image = %info.id, device = %device.path.display(), size = device.size, "deploying whole-disk image");

    let rt = tokio::runtime::Handle::current();
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(cfg.insecure)
        .timeout(cfg.image_download_timeout)
        .build()
        .map_err(|e| RestError::command_execution(format!("HTTP client: {e}")))?;
    let expected = rt.block_on(info.expected(&http, md5_enabled))?;
    let source_cfg = SourceConfig {
        insecure: cfg.insecure,
        ca_file: None,
        connect_timeout: cfg.image_download_timeout,
        read_timeout: cfg.image_download_timeout,
        retries: cfg.image_download_retries,
        retry_interval: cfg.image_download_retry_interval,
        authorization: info.authorization.clone(),
    };

    let mut last_error = None;
    for url in &info.urls {
        let request = WriteRequest {
            source: url.clone(),
            target: device.path.clone(),
            expected: Some(expected.clone()),
            declared_format: info.disk_format.clone(),
            source_cfg: source_cfg.clone(),
        };
        let shared = Arc::new(Progress::default());
        let reporter = spawn_reporter(&rt, shared.clone(), progress.clone());
        let result = write_image(&rt, &request, shared);
        reporter.abort();
        match result {
            Ok(report) => {
                let root_uuid = disk_identifier(&device.path)
                    .map_err(|e| RestError::image_write(&device.path.display().to_string(), e))?;
                ctx.set_prepared(PreparedImage {
                    device: device.path.clone(),
                    root_uuid: root_uuid.clone(),
                });
                info!(image = %info.id, bytes = report.downloaded, %root_uuid, "image deployed");
                return Ok(format!(
                    "image ({}) written to device {} root_uuid={root_uuid}",
                    info.id,
                    device.path.display()
                ));
            }
            // Only a failed download is worth another URL.
            Err(e @ (ImageError::Source(_) | ImageError::HttpStatus { .. })) => {
                tracing::warn!(url = %url, error = %e, "image URL failed; trying the next one");
                last_error = Some(map_error(&info, url, &device.path, e));
            }
            Err(e) => return Err(map_error(&info, url, &device.path, e)),
        }
    }
    Err(last_error.unwrap_or_else(|| RestError::image_download(&info.id, "no URL")))
}

fn spawn_reporter(
    rt: &tokio::runtime::Handle,
    shared: Arc<Progress>,
    progress: CommandProgress,
) -> tokio::task::JoinHandle<()> {
    rt.spawn(async move {
        let mut tick = tokio::time::interval(REPORT_EVERY);
        let mut n = 0u32;
        loop {
            tick.tick().await;
            progress.report(json!({ "progress": shared.snapshot() }));
            n += 1;
            if n.is_multiple_of(LOG_EVERY) {
                info!("image write: {}", shared.summary());
            }
        }
    })
}

/// The MBR disk signature at offset 440, as IPA reports it (`0x%08x`).
pub fn disk_identifier(device: &Path) -> std::io::Result<String> {
    let mut id = [0u8; 4];
    File::open(device)?.read_exact_at(&mut id, 440)?;
    Ok(format!("0x{:08x}", u32::from_le_bytes(id)))
}

/// `standby.get_partition_uuids` for whole-disk images.
pub fn partition_uuids(ctx: &AgentContext) -> Value {
    match ctx.prepared() {
        Some(p) => json!({ "root uuid": p.root_uuid }),
        None => json!({}),
    }
}
