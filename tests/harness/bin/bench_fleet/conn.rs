//! One keep-alive HTTP/1.1 connection per simulated agent, as IPA's
//! `requests` session keeps one: reused while the server keeps it open,
//! re-opened when it was closed (urllib3 checks a pooled connection before
//! reuse), and dropped after any failure. Every request has a deadline and
//! every reply a size limit.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// No answer of the API is near this; a bigger one is a failure.
const MAX_REPLY: usize = 1 << 20;

/// Where the API of one configuration listens.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `Host:` header.
    pub authority: String,
}

impl Endpoint {
    /// From `http://host:port` (the simulator speaks plain HTTP only).
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let Some(authority) = url.strip_prefix("http://") else {
            bail!("{url}: only http:// API URLs are simulated");
        };
        let authority = authority.trim_end_matches('/').to_string();
        let addr = authority
            .parse()
            .with_context(|| format!("{url}: expected http://<ip>:<port>"))?;
        Ok(Self { addr, authority })
    }
}

/// Why a request got no usable answer; the key in the error counts.
#[derive(Debug, Clone)]
pub enum Failure {
    Connect,
    Timeout,
    /// The connection broke mid-request (reset, closed before the reply).
    Transport,
    TooLarge,
}

impl Failure {
    pub fn key(&self) -> String {
        match self {
            Failure::Connect => "connect".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Transport => "transport".into(),
            Failure::TooLarge => "too large".into(),
        }
    }
}

pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

pub struct Conn {
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Connections opened, for the report: keep-alive at work or not.
    pub opened: u64,
}

impl Conn {
    pub fn new() -> Self {
        Self {
            sender: None,
            opened: 0,
        }
    }

    /// One request with IPA's headers plus `headers`, all of it (connect,
    /// send, read the reply) within `timeout`.
    pub async fn send(
        &mut self,
        ep: &Endpoint,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Reply, Failure> {
        let result = tokio::time::timeout(timeout, self.exchange(ep, method, path, headers, body))
            .await
            .unwrap_or(Err(Failure::Timeout));
        if result.is_err() {
            // Its state is unknown: the next request gets a fresh connection.
            self.sender = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        ep: &Endpoint,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<Reply, Failure> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = Some(self.connect(ep).await?);
        }
        let Some(sender) = self.sender.as_mut() else {
            return Err(Failure::Connect);
        };
        sender.ready().await.map_err(|_| Failure::Transport)?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &ep.authority)
            .header(hyper::header::ACCEPT, "application/json")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "python-requests/2.34.2");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|_| Failure::Transport)?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|_| Failure::Transport)?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_REPLY)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    Failure::TooLarge
                } else {
                    Failure::Transport
                }
            })?
            .to_bytes();
        Ok(Reply { status, body })
    }

    async fn connect(&mut self, ep: &Endpoint) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let stream = TcpStream::connect(ep.addr)
            .await
            .map_err(|_| Failure::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Failure::Connect)?;
        // Drives the socket; ends when the sender is dropped or the server closes.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.opened += 1;
        Ok(sender)
    }
}
