//! `burnin_network`: IPA's fio `net` job between two nodes, natively. The
//! writer listens on its own address and sends on 16 TCP streams for the
//! runtime; the reader connects to it and receives. IPA's fio gives no
//! way to tell a partner that died from one that finished, so each stream
//! here is framed: chunks with a length, then an end marker with the byte
//! count, which the reader acknowledges. A stream that breaks, stalls, or
//! ends without the marker fails the direction.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde::Serialize;

/// IPA's `--port 9000`.
pub const DEFAULT_PORT: u16 = 9000;
/// IPA's `--numjobs 16`.
pub const STREAMS: usize = 16;
/// Sent by the reader on every stream, so the writer never feeds a
/// stranger that happened to connect to the port.
const HELLO: &[u8; 8] = b"FERNETB1";
const CHUNK: usize = 256 << 10;
/// A chunk header of 0 ends the stream; the byte count follows.
const END: u32 = 0;
/// How often a reader retries a writer that is not listening yet.
const RETRY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Writer,
    Reader,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "writer" => Some(Self::Writer),
            "reader" => Some(Self::Reader),
            _ => None,
        }
    }

    pub fn other(self) -> Self {
        match self {
            Self::Writer => Self::Reader,
            Self::Reader => Self::Writer,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Self::Writer => "writer",
            Self::Reader => "reader",
        }
    }
}

/// One direction's settings.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// How long the writer sends (fio's `--runtime`, `time_based`).
    pub runtime: Duration,
    pub port: u16,
    /// How long the two sides wait for each other to connect.
    pub connect_within: Duration,
    /// No byte moving on a stream for this long is a failure.
    pub stall: Duration,
}

/// One direction, as the output file and the log report it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DirectionReport {
    pub role: Role,
    pub local: String,
    pub partner: String,
    pub streams: usize,
    pub runtime_s: f64,
    /// Bytes the reader received (and acknowledged to the writer).
    pub bytes: u64,
    pub seconds: f64,
    pub mib_per_s: f64,
    pub per_stream_bytes: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("the reader did not connect to {addr} within {secs} s ({got} of {STREAMS} streams)")]
    NoReader {
        addr: SocketAddr,
        secs: u64,
        got: usize,
    },
    #[error("could not reach the writer at {addr} within {secs} s: {last}")]
    NoWriter {
        addr: SocketAddr,
        secs: u64,
        last: String,
    },
    #[error("stream {stream} with {peer} broke after {after:.1} s and {bytes} bytes: {reason}")]
    Broke {
        stream: usize,
        peer: SocketAddr,
        after: f64,
        bytes: u64,
        reason: String,
    },
}

/// Listen on `listen` and send for the runtime on every stream. An
/// unspecified address listens on all of them, as fio's `--listen` does:
/// the reader may reach this node on any NIC (a static partner on a
/// burn-in network, an advertised address behind NAT), not only on the
/// address it advertises to Ironic.
pub fn write(listen: IpAddr, plan: Plan) -> Result<DirectionReport, NetError> {
    let (listener, addr) = listen_on(listen, plan.port)?;
    let streams = accept_all(&listener, addr, plan.connect_within)?;
    drop(listener);
    let first = streams.first();
    let peer = first
        .and_then(|s| s.peer_addr().ok())
        .map_or_else(String::new, |p| p.ip().to_canonical().to_string());
    // Where the reader reached us, not the wildcard we listened on.
    let addr = first
        .and_then(|s| s.local_addr().ok())
        .map_or(addr, |a| SocketAddr::new(a.ip().to_canonical(), a.port()));
    let started = Instant::now();
    let deadline = started + plan.runtime;
    let results = std::thread::scope(|s| {
        let workers: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(i, stream)| s.spawn(move || send(i, stream, deadline, plan.stall)))
            .collect();
        join_all(workers)
    });
    report(Role::Writer, addr, peer, plan, started, results)
}

/// A listener on `host`; `::` falls back to `0.0.0.0` on a kernel
/// without IPv6 (as the agent API's listener does).
fn listen_on(host: IpAddr, port: u16) -> Result<(TcpListener, SocketAddr), NetError> {
    let addr = SocketAddr::new(host, port);
    match TcpListener::bind(addr) {
        Ok(l) => Ok((l, addr)),
        Err(e) if host.is_unspecified() && host.is_ipv6() => {
            tracing::warn!(error = %e, "cannot listen on [::] for the burn-in, using 0.0.0.0");
            let v4 = SocketAddr::from(([0, 0, 0, 0], port));
            TcpListener::bind(v4)
                .map(|l| (l, v4))
                .map_err(|source| NetError::Listen { addr: v4, source })
        }
        Err(source) => Err(NetError::Listen { addr, source }),
    }
}

/// Connect to the writer at `partner` (retrying while it is not listening
/// yet) and receive on every stream until the writer ends it.
pub fn read(partner: SocketAddr, plan: Plan) -> Result<DirectionReport, NetError> {
    let streams = connect_all(partner, plan.connect_within)?;
    let local = streams
        .first()
        .and_then(|s| s.local_addr().ok())
        .map_or(partner, |a| {
            SocketAddr::new(a.ip().to_canonical(), a.port())
        });
    let started = Instant::now();
    let results = std::thread::scope(|s| {
        let workers: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(i, stream)| s.spawn(move || receive(i, stream, plan.stall)))
            .collect();
        join_all(workers)
    });
    report(
        Role::Reader,
        local,
        partner.ip().to_string(),
        plan,
        started,
        results,
    )
}

fn join_all(
    workers: Vec<std::thread::ScopedJoinHandle<'_, Result<u64, NetError>>>,
) -> Vec<Result<u64, NetError>> {
    workers
        .into_iter()
        .map(|w| {
            w.join().unwrap_or_else(|_| {
                Err(NetError::Broke {
                    stream: 0,
                    peer: SocketAddr::from(([0, 0, 0, 0], 0)),
                    after: 0.0,
                    bytes: 0,
                    reason: "a stream worker panicked".into(),
                })
            })
        })
        .collect()
}

fn report(
    role: Role,
    local: SocketAddr,
    partner: String,
    plan: Plan,
    started: Instant,
    results: Vec<Result<u64, NetError>>,
) -> Result<DirectionReport, NetError> {
    let seconds = started.elapsed().as_secs_f64();
    let mut per_stream_bytes = Vec::with_capacity(results.len());
    for r in results {
        per_stream_bytes.push(r?);
    }
    let bytes: u64 = per_stream_bytes.iter().sum();
    let mib_per_s = if seconds > 0.0 {
        (bytes as f64 / f64::from(1 << 20) / seconds * 10.0).round() / 10.0
    } else {
        0.0
    };
    Ok(DirectionReport {
        role,
        local: local.ip().to_string(),
        partner,
        streams: per_stream_bytes.len(),
        runtime_s: plan.runtime.as_secs_f64(),
        bytes,
        seconds: (seconds * 1000.0).round() / 1000.0,
        mib_per_s,
        per_stream_bytes,
    })
}

/// Accept [`STREAMS`] readers that say hello, until `within` is over.
fn accept_all(
    listener: &TcpListener,
    addr: SocketAddr,
    within: Duration,
) -> Result<Vec<TcpStream>, NetError> {
    let deadline = Instant::now() + within;
    let give_up = |got| NetError::NoReader {
        addr,
        secs: within.as_secs(),
        got,
    };
    listener
        .set_nonblocking(true)
        .map_err(|source| NetError::Listen { addr, source })?;
    let mut streams = Vec::with_capacity(STREAMS);
    while streams.len() < STREAMS {
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Some(stream) = greeted(stream, deadline) {
                    streams.push(stream);
                } else {
                    tracing::warn!(%peer, "ignoring a connection without the burn-in hello");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(give_up(streams.len()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a burn-in stream");
                if Instant::now() >= deadline {
                    return Err(give_up(streams.len()));
                }
            }
        }
    }
    Ok(streams)
}

/// The stream, blocking, if the reader's hello arrives in time (a
/// silent stranger holds the accept loop for a few seconds at most).
fn greeted(stream: TcpStream, deadline: Instant) -> Option<TcpStream> {
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_secs(1), Duration::from_secs(5));
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(wait)).ok()?;
    let mut hello = [0u8; 8];
    (&stream).read_exact(&mut hello).ok()?;
    (hello == *HELLO).then_some(stream)
}

fn connect_all(partner: SocketAddr, within: Duration) -> Result<Vec<TcpStream>, NetError> {
    let deadline = Instant::now() + within;
    let mut streams = Vec::with_capacity(STREAMS);
    let mut last = String::from("not tried");
    while streams.len() < STREAMS {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NetError::NoWriter {
                addr: partner,
                secs: within.as_secs(),
                last,
            });
        }
        let attempt = TcpStream::connect_timeout(&partner, left.min(Duration::from_secs(5)))
            .and_then(|mut s| s.write_all(HELLO).map(|()| s));
        match attempt {
            Ok(s) => streams.push(s),
            Err(e) => {
                // The writer is not listening yet (IPA's reader loops on
                // fio's connection errors the same way).
                last = e.to_string();
                std::thread::sleep(RETRY.min(left));
            }
        }
    }
    Ok(streams)
}

/// Send frames until `deadline`, then the end marker; wait for the
/// reader's count of what it got.
fn send(
    i: usize,
    mut stream: TcpStream,
    deadline: Instant,
    stall: Duration,
) -> Result<u64, NetError> {
    let started = Instant::now();
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut sent = 0u64;
    let broke = |sent, reason: String| NetError::Broke {
        stream: i,
        peer,
        after: started.elapsed().as_secs_f64(),
        bytes: sent,
        reason,
    };
    stream
        .set_write_timeout(Some(stall))
        .and_then(|()| stream.set_read_timeout(Some(stall)))
        .map_err(|e| broke(0, e.to_string()))?;
    let mut frame = vec![0u8; 4 + CHUNK];
    frame[..4].copy_from_slice(&(CHUNK as u32).to_le_bytes());
    for (n, b) in frame[4..].iter_mut().enumerate() {
        *b = (n as u8).wrapping_mul(31) ^ (i as u8);
    }
    while Instant::now() < deadline {
        stream
            .write_all(&frame)
            .map_err(|e| broke(sent, describe(&e)))?;
        sent += CHUNK as u64;
    }
    let mut end = [0u8; 12];
    end[..4].copy_from_slice(&END.to_le_bytes());
    end[4..].copy_from_slice(&sent.to_le_bytes());
    stream
        .write_all(&end)
        .map_err(|e| broke(sent, describe(&e)))?;
    let mut ack = [0u8; 8];
    stream.read_exact(&mut ack).map_err(|e| {
        broke(
            sent,
            format!("no acknowledgement from the reader: {}", describe(&e)),
        )
    })?;
    let got = u64::from_le_bytes(ack);
    if got != sent {
        return Err(broke(sent, format!("the reader got {got} of {sent} bytes")));
    }
    let _ = stream.shutdown(Shutdown::Both);
    Ok(sent)
}

/// Receive frames until the end marker, check the count, acknowledge it.
fn receive(i: usize, mut stream: TcpStream, stall: Duration) -> Result<u64, NetError> {
    let started = Instant::now();
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut got = 0u64;
    let broke = |got, reason: String| NetError::Broke {
        stream: i,
        peer,
        after: started.elapsed().as_secs_f64(),
        bytes: got,
        reason,
    };
    stream
        .set_read_timeout(Some(stall))
        .and_then(|()| stream.set_write_timeout(Some(stall)))
        .map_err(|e| broke(0, e.to_string()))?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut header = [0u8; 4];
        stream
            .read_exact(&mut header)
            .map_err(|e| broke(got, describe(&e)))?;
        let len = u32::from_le_bytes(header) as usize;
        if len == END as usize {
            break;
        }
        if len > CHUNK {
            return Err(broke(got, format!("a frame of {len} bytes is not ours")));
        }
        stream
            .read_exact(&mut buf[..len])
            .map_err(|e| broke(got, describe(&e)))?;
        got += len as u64;
    }
    let mut count = [0u8; 8];
    stream
        .read_exact(&mut count)
        .map_err(|e| broke(got, describe(&e)))?;
    let sent = u64::from_le_bytes(count);
    stream
        .write_all(&got.to_le_bytes())
        .map_err(|e| broke(got, describe(&e)))?;
    if sent != got {
        return Err(broke(
            got,
            format!("the writer sent {sent} bytes, {got} arrived"),
        ));
    }
    Ok(got)
}

/// The partner's end, in words an operator can act on.
fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "the partner closed the stream before the end".into(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            "the partner stopped sending or receiving (stalled)".into()
        }
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
            format!("the partner reset the connection ({e})")
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(port: u16, runtime_ms: u64) -> Plan {
        Plan {
            runtime: Duration::from_millis(runtime_ms),
            port,
            connect_within: Duration::from_secs(5),
            stall: Duration::from_secs(5),
        }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap()
    }

    #[test]
    fn both_sides_count_the_same_bytes_on_every_stream() {
        let port = free_port();
        let p = plan(port, 300);
        let writer = std::thread::spawn(move || write(IpAddr::from([127, 0, 0, 1]), p));
        // The reader starts first and waits for the writer to listen.
        let r = read(SocketAddr::from(([127, 0, 0, 1], port)), p).unwrap();
        let w = writer.join().unwrap().unwrap();
        assert_eq!(r.streams, STREAMS);
        assert_eq!(w.per_stream_bytes, r.per_stream_bytes);
        assert!(r.bytes > 0 && r.bytes == w.bytes, "{r:?} {w:?}");
        assert!(w.seconds >= 0.3, "{w:?}");
        assert_eq!((w.role, r.role), (Role::Writer, Role::Reader));
    }

    #[test]
    fn a_writer_on_every_address_is_reached_on_any_of_them() {
        let port = free_port();
        let p = plan(port, 200);
        // What the ramdisk's default `ipa-listen-host` is.
        let writer = std::thread::spawn(move || write(IpAddr::from([0u16; 8]), p));
        let r = read(SocketAddr::from(([127, 0, 0, 9], port)), p).unwrap();
        let w = writer.join().unwrap().unwrap();
        assert_eq!(w.bytes, r.bytes);
        // The report names the address the reader reached, not `::`.
        assert_eq!(
            (w.local.as_str(), r.partner.as_str()),
            ("127.0.0.9", "127.0.0.9")
        );
        assert_eq!(w.partner, r.local, "{w:?}\n{r:?}");
    }

    #[test]
    fn a_reader_gives_up_on_a_writer_that_never_listens() {
        let port = free_port();
        let p = Plan {
            connect_within: Duration::from_millis(600),
            ..plan(port, 100)
        };
        let err = read(SocketAddr::from(([127, 0, 0, 1], port)), p).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "could not reach the writer at 127.0.0.1:{port} within 0 s"
            )),
            "{err}"
        );
    }

    #[test]
    fn a_writer_whose_reader_vanishes_fails() {
        let port = free_port();
        let p = plan(port, 3000);
        let writer = std::thread::spawn(move || write(IpAddr::from([127, 0, 0, 1]), p));
        let streams =
            connect_all(SocketAddr::from(([127, 0, 0, 1], port)), p.connect_within).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        drop(streams);
        let err = writer.join().unwrap().unwrap_err();
        assert!(matches!(err, NetError::Broke { .. }), "{err}");
    }

    #[test]
    fn a_stream_ending_without_the_marker_is_broken() {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let fake = std::thread::spawn(move || {
            let mut conns = Vec::new();
            for _ in 0..STREAMS {
                let (mut s, _) = listener.accept().unwrap();
                let mut hello = [0u8; 8];
                s.read_exact(&mut hello).unwrap();
                let mut frame = (16u32).to_le_bytes().to_vec();
                frame.extend([7u8; 16]);
                s.write_all(&frame).unwrap();
                conns.push(s);
            }
            // Dies without the end marker.
        });
        let err = read(SocketAddr::from(([127, 0, 0, 1], port)), plan(port, 100)).unwrap_err();
        fake.join().unwrap();
        assert!(
            err.to_string()
                .contains("the partner closed the stream before the end"),
            "{err}"
        );
    }
}
