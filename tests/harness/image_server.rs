//! An HTTP image server on 127.0.0.1 for tests: serves files with Range
//! support (like nginx), and injects faults on request: connections cut
//! after N body bytes, Range ignored, error statuses, a bandwidth limit.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

#[derive(Default)]
pub struct Faults {
    /// For successive streaming requests (not probes or table reads): cut
    /// the connection after this many body bytes.
    pub cut_after: VecDeque<u64>,
    /// Answer every request with 200 and the whole file.
    pub ignore_range: bool,
    /// Answer the next N requests with this status.
    pub status: Option<(u16, u32)>,
    /// Bytes per second (0: unlimited).
    pub rate: u64,
    /// Flip one byte in the middle of the next N whole-body (streaming)
    /// responses: a transfer that arrives complete but wrong.
    pub corrupt: u32,
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub path: String,
    pub range: Option<String>,
    pub status: u16,
    pub user_agent: Option<String>,
    /// The body was corrupted on purpose ([`Faults::corrupt`]).
    pub corrupted: bool,
}

struct Shared {
    dir: PathBuf,
    faults: Mutex<Faults>,
    log: Mutex<Vec<Logged>>,
}

pub struct ImageServer {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl ImageServer {
    pub async fn start(dir: PathBuf) -> Self {
        Self::start_on(dir, 0).await
    }

    pub async fn start_on(dir: PathBuf, port: u16) -> Self {
        let shared = Arc::new(Shared {
            dir,
            faults: Mutex::new(Faults::default()),
            log: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/{*path}", get(serve))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, shared, task }
    }

    /// The same server over HTTPS (`https://127.0.0.1:<port>`) with this
    /// certificate and key (PEM files).
    pub async fn start_tls(dir: PathBuf, cert: &std::path::Path, key: &std::path::Path) -> Self {
        let shared = Arc::new(Shared {
            dir,
            faults: Mutex::new(Faults::default()),
            log: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/{*path}", get(serve))
            .with_state(shared.clone());
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
            .await
            .expect("image server TLS");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("https://{}", listener.local_addr().expect("addr"));
        let server = axum_server::from_tcp_rustls(listener, tls)
            .expect("TLS listener")
            .serve(app.into_make_service());
        let task = tokio::spawn(async move {
            let _ = server.await;
        });
        Self { url, shared, task }
    }

    pub fn url_of(&self, name: &str) -> String {
        format!("{}/{name}", self.url)
    }

    pub fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.shared.faults.lock().expect("faults")
    }

    pub fn log(&self) -> Vec<Logged> {
        self.shared.log.lock().expect("log").clone()
    }
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn parse_range(value: &str, len: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end: u64 = if b.trim().is_empty() {
        len.checked_sub(1)?
    } else {
        b.trim().parse::<u64>().ok()?.min(len.checked_sub(1)?)
    };
    (start <= end).then_some((start, end))
}

async fn serve(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let respond_as = |status: u16, corrupted: bool| {
        shared.log.lock().expect("log").push(Logged {
            path: path.clone(),
            range: range.clone(),
            status,
            user_agent: user_agent.clone(),
            corrupted,
        });
    };
    let respond = |status: u16| respond_as(status, false);
    let (ignore_range, rate) = {
        let mut f = shared.faults.lock().expect("faults");
        if let Some((code, left)) = f.status {
            f.status = (left > 1).then_some((code, left - 1));
            drop(f);
            respond(code);
            return Response::builder()
                .status(code)
                .body(Body::from(format!("injected {code}\n")))
                .expect("response");
        }
        (f.ignore_range, f.rate)
    };
    let file_path = shared.dir.join(&path);
    let Ok(mut file) = tokio::fs::File::open(&file_path).await else {
        respond(404);
        return Response::builder()
            .status(404)
            .body(Body::from("not found\n"))
            .expect("response");
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let (status, start, end) = match range
        .as_deref()
        .filter(|_| !ignore_range)
        .map(|r| parse_range(r, len))
    {
        Some(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e),
        Some(None) => {
            respond(416);
            return Response::builder()
                .status(416)
                .body(Body::empty())
                .expect("response");
        }
        None => (StatusCode::OK, 0, len.saturating_sub(1)),
    };
    let body_len = if len == 0 { 0 } else { end - start + 1 };
    // Only streaming requests (no Range, or an open-ended one) get cut, not
    // probes or table reads (closed ranges).
    let streaming = range.as_deref().is_none_or(|r| r.ends_with('-'));
    let (cut, corrupt) = if streaming && body_len > 0 {
        let mut f = shared.faults.lock().expect("faults");
        let corrupt = (f.corrupt > 0).then(|| {
            f.corrupt -= 1;
            body_len / 2
        });
        (f.cut_after.pop_front(), corrupt)
    } else {
        (None, None)
    };
    respond_as(status.as_u16(), corrupt.is_some());
    if file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return Response::builder()
            .status(500)
            .body(Body::empty())
            .expect("response");
    }
    let stream = async_stream(file, body_len, cut, rate, corrupt);
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, body_len)
        .header(
            header::ACCEPT_RANGES,
            if ignore_range { "none" } else { "bytes" },
        )
        .header(header::ETAG, "\"fixture\"");
    if status == StatusCode::PARTIAL_CONTENT {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
    }
    resp.body(Body::from_stream(stream)).expect("response")
}

/// The body: 64 KiB pieces, optionally rate-limited, optionally ending in
/// an I/O error after `cut` bytes (hyper then drops the connection),
/// optionally with the byte at `corrupt` inverted.
fn async_stream(
    file: tokio::fs::File,
    len: u64,
    cut: Option<u64>,
    rate: u64,
    corrupt: Option<u64>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures_util::stream::unfold((file, 0u64), move |(mut file, sent)| async move {
        if sent >= len {
            return None;
        }
        if let Some(c) = cut {
            if sent >= c {
                return Some((
                    Err(std::io::Error::other("injected connection cut")),
                    (file, len),
                ));
            }
        }
        let mut want = (64u64 << 10).min(len - sent);
        if let Some(c) = cut {
            want = want.min(c - sent);
        }
        let mut buf = vec![0u8; want as usize];
        if let Err(e) = file.read_exact(&mut buf).await {
            return Some((Err(e), (file, len)));
        }
        if let Some(at) = corrupt.filter(|at| (sent..sent + want).contains(at)) {
            buf[(at - sent) as usize] ^= 0xff;
        }
        if rate > 0 {
            tokio::time::sleep(Duration::from_secs_f64(want as f64 / rate as f64)).await;
        }
        Some((Ok(Bytes::from(buf)), (file, sent + want)))
    })
}
