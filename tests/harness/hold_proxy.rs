//! A TCP proxy in front of an agent that holds back the reply to the
//! first request containing a trigger text (the agent has the request and
//! has answered; the conductor does not know yet), until the test lets it
//! go: the moment between a command being sent and its id being recorded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

pub struct HoldProxy {
    pub port: u16,
    held: watch::Receiver<bool>,
    release: Arc<Notify>,
    task: JoinHandle<()>,
}

impl HoldProxy {
    /// Listen on 127.0.0.1 and forward to `backend`; hold the reply to the
    /// first request whose bytes contain `trigger`.
    pub async fn start(backend: SocketAddr, trigger: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (held_tx, held) = watch::channel(false);
        let held_tx = Arc::new(held_tx);
        let release = Arc::new(Notify::new());
        let armed = Arc::new(AtomicBool::new(true));
        let trigger = trigger.as_bytes().to_vec();
        let task = {
            let release = release.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(backend).await else {
                        continue;
                    };
                    tokio::spawn(pump(
                        client,
                        server,
                        trigger.clone(),
                        armed.clone(),
                        held_tx.clone(),
                        release.clone(),
                    ));
                }
            })
        };
        Self {
            port,
            held,
            release,
            task,
        }
    }

    /// Wait until a reply is held.
    pub async fn wait_held(&mut self) {
        self.held
            .wait_for(|held| *held)
            .await
            .expect("the proxy is running");
    }

    /// Let the held reply go.
    pub fn release(&self) {
        self.release.notify_one();
    }
}

impl Drop for HoldProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    client: TcpStream,
    server: TcpStream,
    trigger: Vec<u8>,
    armed: Arc<AtomicBool>,
    held: Arc<watch::Sender<bool>>,
    release: Arc<Notify>,
) {
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut server_rd, mut server_wr) = server.into_split();
    // Set when this connection carried the trigger: its next reply bytes wait.
    let hold_next = Arc::new(AtomicBool::new(false));
    let upstream = {
        let hold_next = hold_next.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match client_rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let chunk = &buf[..n];
                if chunk
                    .windows(trigger.len())
                    .any(|w| w == trigger.as_slice())
                    && armed.swap(false, Ordering::SeqCst)
                {
                    hold_next.store(true, Ordering::SeqCst);
                }
                if server_wr.write_all(chunk).await.is_err() {
                    break;
                }
            }
            let _ = server_wr.shutdown().await;
        }
    };
    let downstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if hold_next.swap(false, Ordering::SeqCst) {
                held.send_replace(true);
                release.notified().await;
            }
            if client_wr.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_wr.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}
