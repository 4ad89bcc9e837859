//! Real block devices: loop devices dirtied first, so every byte the image
//! says is zero must be made zero by the writer.

use ferrite_tests::image_server::ImageServer;
use ferrite_tests::images::{same_prefix, to_qcow2, LoopDevice};

use crate::{assert_ok, fixture, write_image};

const SIZE: u64 = 40 << 20;

#[tokio::test(flavor = "multi_thread")]
async fn images_on_dirty_loop_devices_equal_the_oracle() {
    let (dir, raw) = fixture(SIZE);
    to_qcow2(&raw, &dir.path().join("disk.qcow2"), &[]);
    to_qcow2(
        &raw,
        &dir.path().join("zstd.qcow2"),
        &["-c", "-o", "compression_type=zstd,cluster_size=16384"],
    );
    to_qcow2(
        &raw,
        &dir.path().join("extl2.qcow2"),
        &["-o", "extended_l2=on"],
    );
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    for name in ["disk.raw", "disk.qcow2", "zstd.qcow2", "extl2.qcow2"] {
        let disk = LoopDevice::new(dir.path(), &format!("{name}.loop"), 48 << 20, true);
        assert_ok(&write_image(&server.url_of(name), &disk.path, &[]));
        same_prefix(&disk.path, &raw, SIZE).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
