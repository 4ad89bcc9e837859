//! TFTP for machines whose firmware only speaks PXE: the boot directory
//! (undionly.kpxe, ipxe.efi, pxelinux.0 and its configs, ramdisk files),
//! read-only, plus the generated `boot.ipxe` entry script.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use async_tftp::packet;
use async_tftp::server::handlers::{DirHandler, DirHandlerMode};
use async_tftp::server::{Handler, TftpServerBuilder};
use futures_lite::AsyncRead;

/// Serves `boot.ipxe` from memory and everything else from the directory.
pub struct BootTftp {
    dir: DirHandler,
    entry_script: Vec<u8>,
}

impl Handler for BootTftp {
    type Reader = Box<dyn AsyncRead + Unpin + Send>;
    type Writer = futures_lite::io::Sink;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Self::Reader, Option<u64>), packet::Error> {
        tracing::info!(%client, path = %path.display(), "TFTP read");
        if path == Path::new("boot.ipxe") || path == Path::new("/boot.ipxe") {
            let data = self.entry_script.clone();
            let len = data.len() as u64;
            return Ok((Box::new(futures_lite::io::Cursor::new(data)), Some(len)));
        }
        let (reader, len) = self.dir.read_req_open(client, path).await?;
        Ok((Box::new(reader), len))
    }

    async fn write_req_open(
        &mut self,
        _client: &SocketAddr,
        _path: &Path,
        _size: Option<u64>,
    ) -> Result<Self::Writer, packet::Error> {
        Err(packet::Error::IllegalOperation)
    }
}

/// Bind and serve until the process ends. Errors binding are returned so
/// the conductor refuses to start half-configured.
pub async fn start(
    listen: SocketAddr,
    dir: PathBuf,
    entry_script: String,
) -> anyhow::Result<SocketAddr> {
    std::fs::create_dir_all(&dir)?;
    let handler = BootTftp {
        dir: DirHandler::new(&dir, DirHandlerMode::ReadOnly)?,
        entry_script: entry_script.into_bytes(),
    };
    let server = TftpServerBuilder::with_handler(handler)
        .bind(listen)
        .build()
        .await?;
    let addr = server.listen_addr()?;
    tracing::info!(%addr, dir = %dir.display(), "TFTP up");
    tokio::spawn(async move {
        if let Err(e) = server.serve().await {
            tracing::error!(error = %e, "TFTP server stopped");
        }
    });
    Ok(addr)
}
