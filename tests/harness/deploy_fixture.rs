//! What a loopback deploy of a real agent needs: a qcow2 image of noise
//! behind an image server that can be slowed down (so that heartbeats see
//! the write run), and a sparse loop device to write it to.

use std::path::PathBuf;

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::image_server::ImageServer;
use crate::images::{make_raw, sha256_file, to_qcow2, LoopDevice};

pub struct DeployFixture {
    /// The image's bytes, as the disk should hold them after the deploy.
    pub raw: PathBuf,
    pub sha256: String,
    pub server: ImageServer,
    pub disk: LoopDevice,
    /// Last: the loop device and the server go before their directory.
    pub dir: TempDir,
}

impl DeployFixture {
    /// `size` bytes of image (its qcow2 holds about a quarter), served at
    /// most `rate` bytes/s; a 5 GiB loop device, `dirty` with old data.
    pub async fn new(size: u64, rate: u64, dirty: bool) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let raw = make_raw(&dir.path().join("disk.raw"), size);
        let qcow = to_qcow2(&raw, &dir.path().join("disk.qcow2"), &[]);
        let sha256 = sha256_file(&qcow);
        let server = ImageServer::start(dir.path().to_path_buf()).await;
        server.faults().rate = rate;
        let disk = LoopDevice::new(dir.path(), "target.loop", 5 << 30, dirty);
        Self {
            raw,
            sha256,
            server,
            disk,
            dir,
        }
    }

    pub fn image_url(&self) -> String {
        self.server.url_of("disk.qcow2")
    }

    /// The agent's kernel parameter that gives it this disk alone.
    pub fn disks_param(&self) -> String {
        format!("ferrite-disks={}", self.disk.path.display())
    }

    /// `instance_info` for a whole-disk deploy of the image.
    pub fn instance_info(&self) -> Value {
        json!({
            "image_source": self.image_url(),
            "image_checksum": self.sha256,
            "image_disk_format": "qcow2",
        })
    }

    /// The image's size, for comparing the disk's first bytes with it.
    pub fn image_len(&self) -> u64 {
        std::fs::metadata(&self.raw).expect("the raw image").len()
    }
}
