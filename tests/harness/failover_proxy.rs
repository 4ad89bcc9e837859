//! A TCP proxy that sends each new connection to the first backend that
//! accepts it: one API address for an agent in front of several
//! conductors, as a load balancer or a floating address would give it.
//! When the first conductor dies, the next connection reaches a survivor.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct FailoverProxy {
    pub url: String,
    task: JoinHandle<()>,
}

impl FailoverProxy {
    /// Listen on 127.0.0.1 and forward to `backends`, in that order of preference.
    pub async fn start(backends: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let backends = backends.clone();
                tokio::spawn(async move {
                    for backend in backends {
                        let connect = TcpStream::connect(backend);
                        if let Ok(Ok(mut server)) =
                            tokio::time::timeout(Duration::from_secs(1), connect).await
                        {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            return;
                        }
                    }
                });
            }
        });
        Self { url, task }
    }
}

impl Drop for FailoverProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
