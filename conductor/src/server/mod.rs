//! The listeners: an accept loop of our own over hyper's HTTP/1 server so
//! that every connection, TLS or plain, API or boot files, shares one cap,
//! a header-read deadline (which also reaps half-open connections) and a
//! bounded TLS handshake.

pub mod layers;
pub mod limits;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use limits::CapLog;

/// How long in-flight requests get to finish at shutdown.
const DRAIN_AT_SHUTDOWN: Duration = Duration::from_secs(10);

pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<TlsAcceptor>,
    pub app: Router,
}

#[derive(Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

struct Shared {
    limits: Limits,
    slots: Arc<Semaphore>,
    cap_log: CapLog,
    /// Bumped when the cap is reached: every connection closes once its
    /// request in flight (if any) is answered, so idle keep-alive
    /// connections give their slots to new clients.
    shed: watch::Sender<u64>,
}

/// Serve every listener until `shutdown` completes, then let in-flight
/// connections finish (bounded).
pub async fn serve(
    listeners: Vec<Listener>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        limits,
        slots: Arc::new(Semaphore::new(limits.max_connections)),
        cap_log: CapLog::new(Duration::from_secs(10)),
        shed: watch::channel(0).0,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loops = tokio::task::JoinSet::new();
    for listener in listeners {
        loops.spawn(accept_loop(listener, shared.clone(), stop_rx.clone()));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    loops.abort_all();
    // Every connection holds a slot: all slots back means all done.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_AT_SHUTDOWN, shared.slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open at shutdown; closing them");
    }
    Ok(())
}

/// A listener with our backlog: std's and tokio's `bind` ask for 1024,
/// which a boot storm of a few thousand agents overflows; the dropped SYNs
/// then cost each agent a TCP retransmit (1 s, 3 s, ...).
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind`: a restarted conductor rebinds at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

async fn accept_loop(listener: Listener, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    loop {
        let permit = match shared.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Agents keep a connection per agent open between beats
                // (as IPA's session does): at the cap, those idle ones
                // make way rather than new clients wait for them.
                shared.cap_log.bite(shared.limits.max_connections);
                shared.shed.send_modify(|generation| *generation += 1);
                match shared.slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                }
            }
        };
        let (stream, peer) = match listener.tcp.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            listener.tls.clone(),
            listener.app.clone(),
            shared.limits,
            permit,
            Signals {
                stop: stop.clone(),
                shed: shared.shed.subscribe(),
                slots: shared.slots.clone(),
                cap: shared.limits.max_connections,
            },
        ));
        tracing::trace!(%peer, "connection accepted");
    }
}

/// What a connection is told from outside: shut down, or make way; and
/// how many connections there are.
struct Signals {
    stop: watch::Receiver<bool>,
    shed: watch::Receiver<u64>,
    slots: Arc<Semaphore>,
    cap: usize,
}

/// A connection's requests, for deciding when it may be closed without
/// racing a client that is about to reuse it.
#[derive(Default)]
struct Usage {
    started: AtomicU64,
    answered: AtomicU64,
    /// Milliseconds from the connection's start to its last answer.
    last_answer_ms: AtomicU64,
}

/// Above this share of the cap in use, answers say `Connection: close`:
/// clients close cleanly after them instead of idling on a slot.
const CLOSE_ABOVE: f64 = 0.75;

/// At the cap, an idle connection is closed only after this long without a
/// request: a client reusing it right after an answer would race the close.
const SHED_IDLE: Duration = Duration::from_secs(1);

async fn connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    _permit: OwnedSemaphorePermit,
    signals: Signals,
) {
    match tls {
        None => http(TokioIo::new(stream), app, limits, signals).await,
        Some(acceptor) => {
            match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => http(TokioIo::new(stream), app, limits, signals).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    }
}

async fn http<I>(io: I, app: Router, limits: Limits, signals: Signals)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let born = std::time::Instant::now();
    let usage = Arc::new(Usage::default());
    let busy_above = signals.cap - (signals.cap as f64 * CLOSE_ABOVE) as usize;
    let service = TowerToHyperService::new({
        let (started, answered) = (usage.clone(), usage.clone());
        let slots = signals.slots.clone();
        app.map_request(move |req: hyper::Request<hyper::body::Incoming>| {
            started.started.fetch_add(1, Ordering::Relaxed);
            req
        })
        .map_response(move |mut resp: axum::response::Response| {
            answered.answered.fetch_add(1, Ordering::Relaxed);
            answered
                .last_answer_ms
                .store(born.elapsed().as_millis() as u64, Ordering::Relaxed);
            if slots.available_permits() < busy_above {
                resp.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            resp
        })
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let Signals {
        mut stop, mut shed, ..
    } = signals;
    // Only a cap reached after this connection was accepted sheds it.
    shed.mark_unchanged();
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended");
                }
                return;
            }
            _ = stop.wait_for(|s| *s) => break,
            changed = shed.changed() => {
                if changed.is_err() || sheddable(&usage, born) {
                    break;
                }
            }
        }
    }
    // An idle keep-alive connection closes now; one in a request closes
    // once it is answered.
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// May this connection be closed to make way? One in a request (it closes
/// after the answer, which says so), or idle for [`SHED_IDLE`]; not one
/// that has not sent a request yet (it is new, not idle).
fn sheddable(usage: &Usage, born: std::time::Instant) -> bool {
    let started = usage.started.load(Ordering::Relaxed);
    let answered = usage.answered.load(Ordering::Relaxed);
    if started == 0 {
        return false;
    }
    if started > answered {
        return true;
    }
    let idle_ms = (born.elapsed().as_millis() as u64)
        .saturating_sub(usage.last_answer_ms.load(Ordering::Relaxed));
    idle_ms >= SHED_IDLE.as_millis() as u64
}
