//! A forward HTTP proxy on 127.0.0.1 for tests: requests in absolute form
//! (`GET http://host:port/path`) and CONNECT tunnels. It records each
//! request line and its `Proxy-Authorization`, and resolves names through
//! its own map: an image URL on a name no DNS knows reaches the server
//! only through this proxy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Request heads are small; a longer one is refused.
const MAX_HEAD: usize = 64 << 10;

#[derive(Debug, Clone)]
pub struct ProxiedRequest {
    pub method: String,
    /// As sent: `http://host:port/path` or, for CONNECT, `host:port`.
    pub target: String,
    pub proxy_authorization: Option<String>,
}

pub struct ForwardProxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    seen: Arc<Mutex<Vec<ProxiedRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ForwardProxy {
    /// `hosts` maps `name:port` to where it really is.
    pub async fn start(hosts: HashMap<String, SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hosts = Arc::new(hosts);
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    let (seen, hosts) = (seen.clone(), hosts.clone());
                    tokio::spawn(async move {
                        let _ = handle(conn, &seen, &hosts).await;
                    });
                }
            })
        };
        Self { url, seen, task }
    }

    pub fn seen(&self) -> Vec<ProxiedRequest> {
        self.seen.lock().expect("seen").clone()
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn resolve(hosts: &HashMap<String, SocketAddr>, authority: &str) -> Option<SocketAddr> {
    hosts
        .get(authority)
        .copied()
        .or_else(|| authority.parse().ok())
}

async fn handle(
    mut client: TcpStream,
    seen: &Mutex<Vec<ProxiedRequest>>,
    hosts: &HashMap<String, SocketAddr>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Ok(());
        }
        let mut chunk = [0u8; 4096];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (
        first.next().unwrap_or_default().to_string(),
        first.next().unwrap_or_default().to_string(),
    );
    let headers: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    let proxy_authorization = headers.iter().find_map(|h| {
        let (k, v) = h.split_once(':')?;
        k.eq_ignore_ascii_case("proxy-authorization")
            .then(|| v.trim().to_string())
    });
    seen.lock().expect("seen").push(ProxiedRequest {
        method: method.clone(),
        target: target.clone(),
        proxy_authorization,
    });
    if method == "CONNECT" {
        let Some(addr) = resolve(hosts, &target) else {
            client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
                .await?;
            return Ok(());
        };
        let mut upstream = TcpStream::connect(addr).await?;
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        upstream.write_all(&buf[head_end..]).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    }
    let Some(rest) = target.strip_prefix("http://") else {
        client
            .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .await?;
        return Ok(());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let Some(addr) = resolve(hosts, authority) else {
        client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            .await?;
        return Ok(());
    };
    let mut upstream = TcpStream::connect(addr).await?;
    // Origin form upstream, one request per connection (so every request
    // passes through here and is recorded).
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    for h in &headers {
        let name = h.split(':').next().unwrap_or_default().to_ascii_lowercase();
        if !matches!(
            name.as_str(),
            "proxy-authorization" | "proxy-connection" | "connection" | "keep-alive"
        ) {
            out.push_str(h);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    upstream.write_all(out.as_bytes()).await?;
    upstream.write_all(&buf[head_end..]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}
