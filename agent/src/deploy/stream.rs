//! One image streamed onto a target (a disk, or a partition as a window of
//! its disk), trying each URL, with progress in the command's result.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tracing::info;

use super::{DeployError, ImageInfo};
use crate::command_progress::CommandProgress;
use crate::image::format::IPA_PERMITTED_FORMATS;
use crate::image::source::{client_builder, Proxies};
use crate::image::{
    write_image, FormatPolicy, ImageError, Progress, SourceConfig, Window, WriteReport,
    WriteRequest,
};
use crate::state::AgentContext;

/// How often the running command's result shows fresh progress.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How often progress goes to the log.
const LOG_EVERY: u32 = 10;

fn map_error(info: &ImageInfo, url: &str, target: &str, e: ImageError) -> DeployError {
    match e {
        ImageError::Source(_) | ImageError::HttpStatus { .. } => DeployError::download(&info.id, e),
        ImageError::Checksum {
            expected, actual, ..
        } => DeployError::Checksum {
            image: info.id.clone(),
            location: url.to_string(),
            expected,
            actual,
        },
        ImageError::Format(_)
        | ImageError::Qcow2(_)
        | ImageError::DeclaredMismatch { .. }
        | ImageError::NotPermitted { .. }
        | ImageError::Decompress(_) => DeployError::InvalidImage(format!("Image {}: {e}", info.id)),
        ImageError::TooLarge { .. } | ImageError::Target { .. } => DeployError::write(target, e),
        ImageError::TimedOut(_) => DeployError::DownloadTimeout {
            image: info.id.clone(),
            reason: e.to_string(),
        },
        ImageError::Internal(_) => DeployError::Internal(e.to_string()),
    }
}

/// The HTTP client for what a deploy downloads besides the image: the
/// agent's TLS settings (`ipa-insecure`, `ipa-cafile`), ferrite's
/// `User-Agent`, and `proxies` when given (IPA fetches a checksum file
/// through the image's proxies, a config drive without them).
pub fn http_client_with(
    ctx: &AgentContext,
    proxies: Option<&Proxies>,
) -> Result<reqwest::Client, DeployError> {
    build_client(ctx, ctx.config.insecure, proxies)
}

/// [`http_client_with`] without proxies (config drives).
pub fn http_client(ctx: &AgentContext) -> Result<reqwest::Client, DeployError> {
    http_client_with(ctx, None)
}

/// [`http_client`] with certificate checks off for this client only when
/// a step says `verify_ca: false`; `true` keeps the agent's own setting.
pub fn http_client_verifying(
    ctx: &AgentContext,
    verify_ca: bool,
) -> Result<reqwest::Client, DeployError> {
    build_client(ctx, ctx.config.insecure || !verify_ca, None)
}

fn build_client(
    ctx: &AgentContext,
    insecure: bool,
    proxies: Option<&Proxies>,
) -> Result<reqwest::Client, DeployError> {
    let failed = |e: &dyn std::fmt::Display| DeployError::Internal(format!("HTTP client: {e}"));
    client_builder(insecure, ctx.config.cafile.as_deref(), proxies)
        .map_err(|e| failed(&e))?
        .timeout(ctx.config.image_download_timeout)
        .build()
        .map_err(|e| failed(&e))
}

pub fn md5_enabled(ctx: &AgentContext) -> bool {
    ctx.lookup_config()
        .map(|c| c.agent_md5_checksum_enable)
        .unwrap_or(true)
}

/// Ironic's format policy from the lookup `config`; IPA's defaults when
/// there was none (or it lacks the list).
pub fn format_policy(ctx: &AgentContext) -> FormatPolicy {
    let config = ctx.lookup_config();
    FormatPolicy {
        inspection_disabled: config
            .as_ref()
            .is_some_and(|c| c.disable_deep_image_inspection),
        permitted: Some(
            config
                .and_then(|c| c.permitted_image_formats)
                .unwrap_or_else(|| {
                    IPA_PERMITTED_FORMATS
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                }),
        ),
    }
}

/// A failed [`stream_image`]: what went wrong, and whether the target may
/// hold part of an image (a refusal from the first bytes leaves it as it
/// was).
#[derive(Debug)]
pub struct StreamFailure {
    pub error: DeployError,
    pub target_touched: bool,
}

impl From<DeployError> for StreamFailure {
    fn from(error: DeployError) -> Self {
        Self {
            error,
            target_touched: false,
        }
    }
}

impl From<StreamFailure> for DeployError {
    fn from(f: StreamFailure) -> Self {
        f.error
    }
}

/// Stream `info`'s image to `target` (within `window` if given). `name` is
/// how errors name the target (`/dev/sda2` for a partition).
///
/// Each URL is tried in turn on download errors. A checksum mismatch
/// starts everything again, up to `ipa-image-download-connection-retries`
/// times, `…-retry-interval` apart, as IPA does since 2023 (its
/// `_stream_raw_image_onto_device` retries on `ImageChecksumError`): the
/// checksum (a checksum file too) is fetched again, the image downloaded
/// again from its first byte and written over the whole target range
/// (data and zero ranges alike), so nothing of a bad attempt survives. A
/// failed attempt leaves the target's first and last MiB zeroed (the
/// pipeline's invalidation), so a machine that reboots between attempts
/// does not boot half an image; the caller wipes the disk only once the
/// retries are spent.
pub fn stream_image(
    ctx: &AgentContext,
    info: &ImageInfo,
    target: &Path,
    window: Option<Window>,
    name: &str,
    progress: &CommandProgress,
) -> Result<WriteReport, StreamFailure> {
    let cfg = &ctx.config;
    let md5_enabled = md5_enabled(ctx);
    let rt = tokio::runtime::Handle::current();
    let checksum_http = http_client_with(ctx, info.proxies.as_ref())?;
    let source_cfg = SourceConfig {
        insecure: cfg.insecure,
        ca_file: cfg.cafile.clone(),
        connect_timeout: cfg.image_download_timeout,
        read_timeout: cfg.image_download_timeout,
        retries: cfg.image_download_retries,
        retry_interval: cfg.image_download_retry_interval,
        authorization: info.authorization.clone(),
        allow_file: cfg.allow_file_images,
        max_duration: Some(cfg.image_download_max_duration).filter(|d| !d.is_zero()),
        proxies: info.proxies.clone(),
    };
    let formats = format_policy(ctx);
    let attempts = cfg.image_download_retries.saturating_add(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let expected = rt.block_on(super::checksum::expected(info, &checksum_http, md5_enabled))?;
        let mut last_error = None;
        let mut touched = false;
        let mut mismatch = None;
        for url in &info.urls {
            let request = WriteRequest {
                source: url.clone(),
                target: target.to_path_buf(),
                expected: Some(expected.clone()),
                declared_format: info.disk_format.clone(),
                source_cfg: source_cfg.clone(),
                window,
                formats: formats.clone(),
            };
            let shared = Arc::new(Progress::default());
            let reporter = spawn_reporter(&rt, shared.clone(), progress.clone());
            let result = write_image(&rt, &request, shared);
            reporter.abort();
            let e = match result {
                Ok(report) => {
                    if attempt > 1 {
                        info!(image = %info.id, attempt, "image verified after a checksum retry");
                    }
                    return Ok(report);
                }
                Err(e) => e,
            };
            touched |= !e.refused_before_write();
            let failure = |error| StreamFailure {
                error,
                target_touched: touched,
            };
            match e {
                // Only a failed download is worth another URL.
                e @ (ImageError::Source(_) | ImageError::HttpStatus { .. }) => {
                    tracing::warn!(url = %url, error = %e, "image URL failed; trying the next one");
                    last_error = Some(map_error(info, url, name, e));
                }
                e @ ImageError::Checksum { .. } => {
                    mismatch = Some(map_error(info, url, name, e));
                    break;
                }
                // A window is a partition: name it, not the disk it is reached through.
                ImageError::TooLarge {
                    needed, available, ..
                } if window.is_some() => {
                    return Err(failure(DeployError::write(
                        name,
                        format!("the image needs {needed} bytes but {name} holds only {available}"),
                    )))
                }
                e => return Err(failure(map_error(info, url, name, e))),
            }
        }
        let Some(error) = mismatch else {
            return Err(StreamFailure {
                error: last_error.unwrap_or_else(|| DeployError::download(&info.id, "no URL")),
                target_touched: touched,
            });
        };
        if attempt >= attempts {
            return Err(StreamFailure {
                error,
                target_touched: true,
            });
        }
        tracing::warn!(image = %info.id, attempt, of = attempts, error = %error,
            "image checksum mismatch; downloading and writing it again");
        std::thread::sleep(cfg.image_download_retry_interval);
    }
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
