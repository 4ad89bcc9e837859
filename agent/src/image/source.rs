//! Where image bytes come from: HTTP(S) (retries with backoff, resume with
//! Range from the last byte received, restart when the server ignores
//! Range) or a local file. Bytes are delivered in order, in chunks of
//! about 1 MiB, through a bounded channel: the consumer's pace is the
//! download's pace.

use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::header::{CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use reqwest::StatusCode;
use tokio::sync::mpsc;
use tracing::{info, warn};
use url::Url;

use super::chunk::ChunkPool;
use super::progress::Progress;
use super::ImageError;

/// Chunks handed downstream are about this big.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Redirects followed per request (reqwest's default policy).
const MAX_REDIRECTS: usize = 10;
/// Bytes fetched by the first (probing) request.
const PROBE_BYTES: u64 = 64 << 10;

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub insecure: bool,
    /// Extra CA bundle (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// Longest silence between two chunks (IPA: 60 s).
    pub read_timeout: Duration,
    /// Retries after connection errors, 5xx and short reads (IPA: 9).
    pub retries: u32,
    pub retry_interval: Duration,
    /// `Authorization` header value (`image_request_authorization`).
    pub authorization: Option<String>,
    /// Local paths and `file://` URLs are allowed (`ferrite-allow-file-images`).
    pub allow_file: bool,
    /// The whole download's deadline (`ipa-image-download-max-duration`).
    pub max_duration: Option<Duration>,
    /// `image_info.proxies` / `no_proxy`; without them no proxy at all
    /// (the environment's `http_proxy` and friends are ignored).
    pub proxies: Option<Proxies>,
}

pub use ferrite_protocol::image_info::{Proxies, ProxyError};

/// Install `proxies`, and only these, on a client.
fn apply_proxies(
    proxies: &Proxies,
    builder: reqwest::ClientBuilder,
) -> Result<reqwest::ClientBuilder, ProxyError> {
    let no_proxy = || {
        proxies
            .no_proxy
            .as_deref()
            .and_then(reqwest::NoProxy::from_string)
    };
    let mut builder = builder.no_proxy();
    for (which, url) in [("http", &proxies.http), ("https", &proxies.https)] {
        let Some(url) = url else { continue };
        let proxy = match which {
            "http" => reqwest::Proxy::http(url.as_str()),
            _ => reqwest::Proxy::https(url.as_str()),
        }
        .map_err(|e| ProxyError {
            which: which.to_string(),
            reason: e.to_string(),
        })?;
        builder = builder.proxy(proxy.no_proxy(no_proxy()));
    }
    Ok(builder)
}

/// A client for the agent's downloads: rustls, the extra CA bundle if
/// any, the proxies if any, and ferrite's `User-Agent`.
pub fn client_builder(
    insecure: bool,
    ca_file: Option<&std::path::Path>,
    proxies: Option<&Proxies>,
) -> Result<reqwest::ClientBuilder, ImageError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(ferrite_protocol::USER_AGENT)
        .danger_accept_invalid_certs(insecure)
        .no_proxy();
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|e| {
            ImageError::Source(format!("reading the CA bundle {}: {e}", ca.display()))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ImageError::Source(format!("CA bundle {}: {e}", ca.display())))?;
        if certs.is_empty() {
            return Err(ImageError::Source(format!(
                "no certificate in the CA bundle {}",
                ca.display()
            )));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(p) = proxies {
        builder = apply_proxies(p, builder).map_err(|e| ImageError::Source(e.to_string()))?;
    }
    Ok(builder)
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            insecure: false,
            ca_file: None,
            connect_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            retries: 9,
            retry_interval: Duration::from_secs(10),
            authorization: None,
            allow_file: false,
            max_duration: None,
            proxies: None,
        }
    }
}

#[derive(Clone)]
pub enum Source {
    Http {
        url: Url,
        client: reqwest::Client,
        cfg: Box<SourceConfig>,
        /// The whole download ends by then (`max_duration` from parsing).
        deadline: Option<tokio::time::Instant>,
    },
    File {
        path: PathBuf,
    },
}

/// What the first look at a source told us.
pub struct Probe {
    pub head: Bytes,
    pub len: Option<u64>,
    /// Byte ranges can be fetched (qcow2 tables ahead of the data).
    pub ranges: bool,
}

impl Source {
    /// `http(s)://…`, `file://…` or a local path.
    pub fn parse(spec: &str, cfg: &SourceConfig) -> Result<Self, ImageError> {
        if spec.starts_with("http://") || spec.starts_with("https://") {
            let url = Url::parse(spec)
                .map_err(|e| ImageError::Source(format!("invalid URL {spec:?}: {e}")))?;
            if let Some(proxy) = cfg
                .proxies
                .as_ref()
                .and_then(|p| p.for_scheme(url.scheme()))
            {
                info!(url = %url, proxy = %Proxies::describe_url(proxy), no_proxy = ?cfg.proxies.as_ref().and_then(|p| p.no_proxy.as_deref()), "image download through a proxy");
            }
            let client =
                client_builder(cfg.insecure, cfg.ca_file.as_deref(), cfg.proxies.as_ref())?
                    .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
                    .connect_timeout(cfg.connect_timeout)
                    .build()
                    .map_err(|e| ImageError::Source(format!("HTTP client: {e}")))?;
            let deadline = cfg
                .max_duration
                .filter(|d| !d.is_zero())
                .and_then(|d| tokio::time::Instant::now().checked_add(d));
            return Ok(Self::Http {
                url,
                client,
                cfg: Box::new(cfg.clone()),
                deadline,
            });
        }
        if !cfg.allow_file {
            return Err(ImageError::Source(format!(
                "{spec:?} is not an http(s) URL; local files are refused unless ferrite-allow-file-images=1 is set"
            )));
        }
        if !spec.starts_with("file://") && spec.contains("://") {
            return Err(ImageError::Source(format!(
                "{spec:?}: only http(s) URLs, file:// URLs and local paths are supported"
            )));
        }
        let path = match spec.strip_prefix("file://") {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(spec),
        };
        Ok(Self::File { path })
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Http { url, .. } => url.to_string(),
            Self::File { path } => path.display().to_string(),
        }
    }

    fn request(
        &self,
        url: &Url,
        client: &reqwest::Client,
        cfg: &SourceConfig,
    ) -> reqwest::RequestBuilder {
        let mut req = client.get(url.clone());
        if let Some(auth) = &cfg.authorization {
            req = req.header(reqwest::header::AUTHORIZATION, auth);
        }
        req
    }

    /// Run `fut` within the download's deadline, if it has one.
    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, ImageError>>,
    ) -> Result<T, ImageError> {
        match self {
            Self::Http {
                deadline: Some(deadline),
                cfg,
                ..
            } => tokio::time::timeout_at(*deadline, fut)
                .await
                .unwrap_or_else(|_| {
                    Err(ImageError::TimedOut(
                        cfg.max_duration.unwrap_or_default().as_secs_f64(),
                    ))
                }),
            _ => fut.await,
        }
    }

    /// Look at the first bytes and learn the size and Range support.
    pub async fn probe(&self) -> Result<Probe, ImageError> {
        self.bounded(self.probe_unbounded()).await
    }

    async fn probe_unbounded(&self) -> Result<Probe, ImageError> {
        match self {
            Self::File { path } => {
                let meta = tokio::fs::metadata(path)
                    .await
                    .map_err(|e| ImageError::Source(format!("{}: {e}", path.display())))?;
                let head = self.read_range(0, PROBE_BYTES.min(meta.len())).await?;
                Ok(Probe {
                    head,
                    len: Some(meta.len()),
                    ranges: true,
                })
            }
            Self::Http {
                url, client, cfg, ..
            } => {
                let mut last = String::new();
                for attempt in 0..=cfg.retries {
                    if attempt > 0 {
                        tokio::time::sleep(cfg.retry_interval).await;
                    }
                    let resp = match self
                        .request(url, client, cfg)
                        .header(RANGE, format!("bytes=0-{}", PROBE_BYTES - 1))
                        .send()
                        .await
                    {
                        Ok(r) => r,
                        Err(e) if e.is_redirect() => {
                            return Err(ImageError::Source(redirect_error(url)))
                        }
                        Err(e) => {
                            last = error_chain(&e);
                            warn!(url = %url, attempt, error = %last, "image server unreachable");
                            continue;
                        }
                    };
                    let status = resp.status();
                    if status.is_server_error() {
                        last = format!("HTTP {status}");
                        warn!(url = %url, attempt, %status, "image server error");
                        continue;
                    }
                    let ranges = status == StatusCode::PARTIAL_CONTENT;
                    if !ranges && status != StatusCode::OK {
                        return Err(ImageError::HttpStatus {
                            url: url.to_string(),
                            status: status.as_u16(),
                        });
                    }
                    let len = if ranges {
                        total_from_content_range(&resp)
                    } else {
                        resp.content_length()
                    };
                    let head = read_prefix(resp, PROBE_BYTES as usize, cfg.read_timeout).await?;
                    return Ok(Probe { head, len, ranges });
                }
                Err(ImageError::Source(format!(
                    "{url}: gave up after {} retries: {last}",
                    cfg.retries
                )))
            }
        }
    }

    /// Exactly `len` bytes at `offset` (qcow2 tables).
    pub async fn read_range(&self, offset: u64, len: u64) -> Result<Bytes, ImageError> {
        self.bounded(self.read_range_unbounded(offset, len)).await
    }

    async fn read_range_unbounded(&self, offset: u64, len: u64) -> Result<Bytes, ImageError> {
        match self {
            Self::File { path } => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let f = std::fs::File::open(&path)
                        .map_err(|e| ImageError::Source(format!("{}: {e}", path.display())))?;
                    let mut buf = vec![0u8; len as usize];
                    f.read_exact_at(&mut buf, offset).map_err(|e| {
                        ImageError::Source(format!("{} at {offset}+{len}: {e}", path.display()))
                    })?;
                    Ok(Bytes::from(buf))
                })
                .await
                .map_err(|e| ImageError::Internal(e.to_string()))?
            }
            Self::Http {
                url, client, cfg, ..
            } => {
                let mut last = String::new();
                for attempt in 0..=cfg.retries {
                    if attempt > 0 {
                        tokio::time::sleep(cfg.retry_interval).await;
                    }
                    let sent = self
                        .request(url, client, cfg)
                        .header(RANGE, format!("bytes={offset}-{}", offset + len - 1))
                        .send()
                        .await;
                    match sent {
                        Ok(resp) if resp.status() == StatusCode::PARTIAL_CONTENT => {
                            match read_prefix(resp, len as usize, cfg.read_timeout).await {
                                Ok(b) if b.len() as u64 == len => return Ok(b),
                                Ok(b) => {
                                    last = format!("short range read: {} of {len} bytes", b.len())
                                }
                                Err(e) => last = e.to_string(),
                            }
                        }
                        Ok(resp) if resp.status().is_server_error() => {
                            last = format!("HTTP {}", resp.status())
                        }
                        Ok(resp) => {
                            return Err(ImageError::HttpStatus {
                                url: url.to_string(),
                                status: resp.status().as_u16(),
                            })
                        }
                        Err(e) => last = error_chain(&e),
                    }
                }
                Err(ImageError::Source(format!(
                    "{url}: range {offset}+{len}: {last}"
                )))
            }
        }
    }

    /// Deliver the whole image in order into `tx`. Returns the byte count.
    /// Chunks are `CHUNK_BYTES` long (the last one shorter) and come from `pool`.
    pub async fn stream(
        &self,
        tx: mpsc::Sender<Bytes>,
        progress: &Progress,
        pool: &ChunkPool,
    ) -> Result<u64, ImageError> {
        self.bounded(self.stream_unbounded(tx, progress, pool))
            .await
    }

    async fn stream_unbounded(
        &self,
        tx: mpsc::Sender<Bytes>,
        progress: &Progress,
        pool: &ChunkPool,
    ) -> Result<u64, ImageError> {
        match self {
            Self::File { path } => stream_file(path.clone(), tx, progress, pool).await,
            Self::Http {
                url, client, cfg, ..
            } => self.stream_http(url, client, cfg, tx, progress, pool).await,
        }
    }

    async fn stream_http(
        &self,
        url: &Url,
        client: &reqwest::Client,
        cfg: &SourceConfig,
        tx: mpsc::Sender<Bytes>,
        progress: &Progress,
        pool: &ChunkPool,
    ) -> Result<u64, ImageError> {
        let mut delivered: u64 = 0;
        let mut total: Option<u64> = None;
        let mut validator: Option<String> = None;
        let mut failures: u32 = 0;
        loop {
            let mut req = self.request(url, client, cfg);
            if delivered > 0 {
                req = req.header(RANGE, format!("bytes={delivered}-"));
                if let Some(v) = &validator {
                    req = req.header(IF_RANGE, v);
                }
            }
            let outcome: Result<(), Attempt> = async {
                let resp = req.send().await.map_err(|e| {
                    if e.is_redirect() {
                        Attempt::Fatal(ImageError::Source(redirect_error(url)))
                    } else {
                        Attempt::Retry(error_chain(&e))
                    }
                })?;
                let status = resp.status();
                let mut skip: u64 = 0;
                match status {
                    StatusCode::OK => {
                        total = resp.content_length();
                        if delivered > 0 {
                            // No Range support (or the file changed): start over,
                            // dropping what we already passed on.
                            warn!(url = %url, at = delivered, "server ignored Range: restarting and skipping what was delivered");
                            skip = delivered;
                        }
                    }
                    StatusCode::PARTIAL_CONTENT if delivered > 0 => {
                        let start = content_range_start(&resp);
                        if start != Some(delivered) {
                            return Err(Attempt::Retry(format!("server resumed at {start:?}, wanted {delivered}")));
                        }
                        total = total_from_content_range(&resp).or(total);
                        info!(url = %url, at = delivered, "download resumed");
                    }
                    s if s.is_server_error() => return Err(Attempt::Retry(format!("HTTP {s}"))),
                    s => {
                        return Err(Attempt::Fatal(ImageError::HttpStatus {
                            url: url.to_string(),
                            status: s.as_u16(),
                        }))
                    }
                }
                if validator.is_none() {
                    validator = resp
                        .headers()
                        .get(ETAG)
                        .or_else(|| resp.headers().get(LAST_MODIFIED))
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                }
                let mut body = resp.bytes_stream();
                let mut pending = pool.take();
                loop {
                    let next = tokio::time::timeout(cfg.read_timeout, body.next()).await;
                    let piece = match next {
                        Err(_) => Err(format!("no data for {:?}", cfg.read_timeout)),
                        Ok(None) => break,
                        Ok(Some(Err(e))) => Err(e.to_string()),
                        Ok(Some(Ok(b))) => Ok(b),
                    };
                    let mut piece = match piece {
                        Ok(p) => p,
                        Err(e) => {
                            // Hand on what arrived intact; resume after it.
                            delivered += flush(&mut pending, &tx, progress, pool).await?;
                            return Err(Attempt::Retry(e));
                        }
                    };
                    if skip > 0 {
                        let drop = skip.min(piece.len() as u64);
                        let _ = piece.split_to(drop as usize);
                        skip -= drop;
                    }
                    // Exactly CHUNK_BYTES per chunk: chunks start on
                    // MiB boundaries, which zero detection relies on.
                    while !piece.is_empty() {
                        let n = piece.len().min(CHUNK_BYTES - pending.len());
                        pending.extend_from_slice(&piece.split_to(n));
                        if pending.len() == CHUNK_BYTES {
                            delivered += flush(&mut pending, &tx, progress, pool).await?;
                        }
                    }
                }
                delivered += flush(&mut pending, &tx, progress, pool).await?;
                match total {
                    Some(t) if delivered < t => Err(Attempt::Retry(format!("connection closed at byte {delivered} of {t}"))),
                    _ => Ok(()),
                }
            }
            .await;
            match outcome {
                Ok(()) => return Ok(delivered),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(e)) => {
                    failures += 1;
                    progress
                        .retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if failures > cfg.retries {
                        return Err(ImageError::Source(format!(
                            "{url}: gave up after {} retries at byte {delivered}: {e}",
                            cfg.retries
                        )));
                    }
                    warn!(url = %url, at = delivered, attempt = failures, error = %e, "download interrupted; retrying");
                    tokio::time::sleep(cfg.retry_interval).await;
                }
            }
        }
    }
}

/// How one download attempt ended badly.
enum Attempt {
    /// Worth another try (connection trouble, 5xx, short read).
    Retry(String),
    /// Retrying cannot help (4xx, the consumer stopped).
    Fatal(ImageError),
}

async fn flush(
    pending: &mut Vec<u8>,
    tx: &mpsc::Sender<Bytes>,
    progress: &Progress,
    pool: &ChunkPool,
) -> Result<u64, Attempt> {
    if pending.is_empty() {
        return Ok(0);
    }
    let chunk = pool.freeze(std::mem::replace(pending, pool.take()));
    let n = chunk.len() as u64;
    tx.send(chunk)
        .await
        .map_err(|_| Attempt::Fatal(ImageError::Internal("the image consumer stopped".into())))?;
    progress.add_received(n);
    Ok(n)
}

async fn stream_file(
    path: PathBuf,
    tx: mpsc::Sender<Bytes>,
    progress: &Progress,
    pool: &ChunkPool,
) -> Result<u64, ImageError> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ImageError::Source(format!("{}: {e}", path.display())))?;
    let mut total = 0u64;
    loop {
        let mut buf = pool.take_filled();
        let mut filled = 0;
        while filled < buf.len() {
            let n = file
                .read(&mut buf[filled..])
                .await
                .map_err(|e| ImageError::Source(format!("{}: {e}", path.display())))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            return Ok(total);
        }
        buf.truncate(filled);
        total += filled as u64;
        progress.add_received(filled as u64);
        tx.send(pool.freeze(buf))
            .await
            .map_err(|_| ImageError::Internal("the image consumer stopped".into()))?;
    }
}

/// An error with its causes: reqwest's own text names only the URL
/// ("error sending request for url (…)"), the cause (a refused
/// certificate, a refused connection) is further down.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// reqwest's own text ("error following redirect") does not say why.
fn redirect_error(url: &Url) -> String {
    format!("{url}: too many redirects (more than {MAX_REDIRECTS}), or a redirect loop")
}

async fn read_prefix(
    resp: reqwest::Response,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, ImageError> {
    let mut body = resp.bytes_stream();
    let mut out = BytesMut::new();
    while out.len() < max {
        match tokio::time::timeout(timeout, body.next()).await {
            Err(_) => return Err(ImageError::Source(format!("no data for {timeout:?}"))),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ImageError::Source(e.to_string())),
            Ok(Some(Ok(b))) => out.extend_from_slice(&b),
        }
    }
    out.truncate(max);
    Ok(out.freeze())
}

/// `Content-Range: bytes 0-65535/1234567` → 1234567.
fn total_from_content_range(resp: &reqwest::Response) -> Option<u64> {
    let v = resp.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    v.rsplit_once('/')?.1.trim().parse().ok()
}

fn content_range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = resp.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    v.trim()
        .strip_prefix("bytes ")?
        .split_once('-')?
        .0
        .trim()
        .parse()
        .ok()
}
