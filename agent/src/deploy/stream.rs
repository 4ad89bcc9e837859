//! One image streamed onto a target (a disk, or a partition as a window of
//! its disk), trying each URL, with progress in the command's result.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tracing::info;

use super::ImageInfo;
use crate::api::runner::CommandProgress;
use crate::errors::RestError;
use crate::image::{
    write_image, ImageError, Progress, SourceConfig, Window, WriteReport, WriteRequest,
};
use crate::state::AgentContext;

/// How often the running command's result shows fresh progress.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How often progress goes to the log.
const LOG_EVERY: u32 = 10;

fn map_error(info: &ImageInfo, url: &str, target: &str, e: ImageError) -> RestError {
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
            RestError::image_write(target, e)
        }
        ImageError::TimedOut(_) => RestError::image_download_timeout(&info.id, e),
        ImageError::Internal(_) => RestError::command_execution(e.to_string()),
    }
}

/// The HTTP client for everything a deploy downloads besides the image
/// (checksum files, config drives): the agent's TLS settings.
pub fn http_client(ctx: &AgentContext) -> Result<reqwest::Client, RestError> {
    http_client_for(ctx, false)
}

/// The agent's download client; `skip_verify` turns certificate checks off
/// for this client only (a step's `verify_ca: false`).
pub fn http_client_for(
    ctx: &AgentContext,
    skip_verify: bool,
) -> Result<reqwest::Client, RestError> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(ctx.config.insecure || skip_verify)
        .timeout(ctx.config.image_download_timeout)
        .build()
        .map_err(|e| RestError::command_execution(format!("HTTP client: {e}")))
}

pub fn md5_enabled(ctx: &AgentContext) -> bool {
    ctx.lookup_config()
        .map(|c| c.agent_md5_checksum_enable)
        .unwrap_or(true)
}

/// Stream `info`'s image to `target` (within `window` if given). `name` is
/// how errors name the target (`/dev/sda2` for a partition).
pub fn stream_image(
    ctx: &AgentContext,
    info: &ImageInfo,
    target: &Path,
    window: Option<Window>,
    name: &str,
    progress: &CommandProgress,
) -> Result<WriteReport, RestError> {
    let cfg = &ctx.config;
    let md5_enabled = md5_enabled(ctx);
    let rt = tokio::runtime::Handle::current();
    let http = http_client(ctx)?;
    let expected = rt.block_on(info.expected(&http, md5_enabled))?;
    let source_cfg = SourceConfig {
        insecure: cfg.insecure,
        ca_file: None,
        connect_timeout: cfg.image_download_timeout,
        read_timeout: cfg.image_download_timeout,
        retries: cfg.image_download_retries,
        retry_interval: cfg.image_download_retry_interval,
        authorization: info.authorization.clone(),
        allow_file: cfg.allow_file_images,
        max_duration: Some(cfg.image_download_max_duration).filter(|d| !d.is_zero()),
    };
    let mut last_error = None;
    for url in &info.urls {
        let request = WriteRequest {
            source: url.clone(),
            target: target.to_path_buf(),
            expected: Some(expected.clone()),
            declared_format: info.disk_format.clone(),
            source_cfg: source_cfg.clone(),
            window,
        };
        let shared = Arc::new(Progress::default());
        let reporter = spawn_reporter(&rt, shared.clone(), progress.clone());
        let result = write_image(&rt, &request, shared);
        reporter.abort();
        match result {
            Ok(report) => return Ok(report),
            // Only a failed download is worth another URL.
            Err(e @ (ImageError::Source(_) | ImageError::HttpStatus { .. })) => {
                tracing::warn!(url = %url, error = %e, "image URL failed; trying the next one");
                last_error = Some(map_error(info, url, name, e));
            }
            // A window is a partition: name it, not the disk it is reached through.
            Err(ImageError::TooLarge {
                needed, available, ..
            }) if window.is_some() => {
                return Err(RestError::image_write(
                    name,
                    format!("the image needs {needed} bytes but {name} holds only {available}"),
                ))
            }
            Err(e) => return Err(map_error(info, url, name, e)),
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
