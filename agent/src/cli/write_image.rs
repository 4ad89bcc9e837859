//! `ferrite-agent write-image`: the deploy engine by hand. Streams an image
//! (URL or path; raw, qcow2, gzip/zstd/xz) to a block device or file.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::image::verify::Expected;
use crate::image::{write_image, Progress, SourceConfig, WriteRequest};

#[derive(Args, Debug)]
pub struct WriteImageArgs {
    /// http(s):// URL, file:// URL or local path of the image.
    #[arg(long)]
    pub source: String,
    /// Block device or regular file to write.
    #[arg(long)]
    pub target: PathBuf,
    /// Expected digest: `sha256:<hex>`, `sha512:<hex>`, `md5:<hex>` or bare hex.
    #[arg(long)]
    pub checksum: Option<String>,
    /// Declared format (`raw` or `qcow2`), checked against the content.
    #[arg(long)]
    pub format: Option<String>,
    /// Do not verify the image server's TLS certificate.
    #[arg(long)]
    pub insecure: bool,
    /// Extra CA bundle (PEM) for the image server.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Retries after connection errors and server errors.
    #[arg(long, default_value_t = 9)]
    pub retries: u32,
    /// Seconds between retries.
    #[arg(long, default_value_t = 10.0)]
    pub retry_interval: f64,
    /// Allow a local path or file:// URL as the source (ferrite-allow-file-images).
    #[arg(long)]
    pub allow_file_images: bool,
    /// Seconds the whole download may take (0: no limit).
    #[arg(long, default_value_t = 0.0)]
    pub max_duration: f64,
    /// Seconds without data before a connection counts as broken.
    #[arg(long, default_value_t = 60.0)]
    pub read_timeout: f64,
}

pub fn run(args: WriteImageArgs) -> anyhow::Result<()> {
    let expected = args
        .checksum
        .as_deref()
        .map(Expected::parse_cli)
        .transpose()
        .map_err(anyhow::Error::msg)
        .context("--checksum")?;
    let req = WriteRequest {
        source: args.source.clone(),
        target: args.target.clone(),
        expected,
        declared_format: args.format.clone(),
        source_cfg: SourceConfig {
            insecure: args.insecure,
            ca_file: args.ca_file.clone(),
            retries: args.retries,
            retry_interval: Duration::from_secs_f64(args.retry_interval.max(0.0)),
            read_timeout: Duration::from_secs_f64(args.read_timeout.max(0.1)),
            allow_file: args.allow_file_images,
            max_duration: Duration::try_from_secs_f64(args.max_duration)
                .ok()
                .filter(|d| !d.is_zero()),
            ..SourceConfig::default()
        },
        window: None,
        formats: crate::image::FormatPolicy::default(),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let progress = Arc::new(Progress::default());
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{bytes}/{total_bytes} {wide_bar} {bytes_per_sec} {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let ticker = {
        let progress = progress.clone();
        let bar = bar.clone();
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(if bar.is_some() {
                200
            } else {
                5000
            }));
            tick.tick().await;
            loop {
                tick.tick().await;
                match &bar {
                    Some(bar) => {
                        bar.set_length(progress.total.load(Ordering::Relaxed));
                        bar.set_position(progress.received.load(Ordering::Relaxed));
                    }
                    None => tracing::info!("{}", progress.summary()),
                }
            }
        })
    };
    let handle = runtime.handle().clone();
    let result = write_image(&handle, &req, progress.clone());
    ticker.abort();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report =
        result.with_context(|| format!("writing {} to {}", args.source, args.target.display()))?;
    println!(
        "wrote {} ({}{}) to {}: {} bytes downloaded, {} bytes of disk{}",
        args.source,
        report.format,
        if report.inner != report.format {
            format!(" of {}", report.inner)
        } else {
            String::new()
        },
        args.target.display(),
        report.downloaded,
        report.image_size,
        report
            .digest
            .map(|d| format!(", digest {d} verified"))
            .unwrap_or_default()
    );
    Ok(())
}
