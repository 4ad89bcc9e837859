//! `ramdisk-build/initramfs.py cpio`: the archive depends only on content
//! (paths, bytes, exec bits), not on mtimes, owners or creation order.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

fn archive(rootfs: &Path, out: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ramdisk-build/initramfs.py");
    let st = Command::new("python3")
        .arg(script)
        .arg("cpio")
        .arg(rootfs)
        .arg(out)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .status()
        .expect("python3");
    assert!(st.success());
    let bytes = std::fs::read(out).unwrap();
    format!("{:x}", Sha256::digest(&bytes))
}

fn tree(root: &Path, order: &[&str]) {
    for name in order {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("content of {name}")).unwrap();
    }
    let init = root.join("init");
    std::fs::write(&init, b"\x7fELF fake init").unwrap();
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn same_content_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    tree(
        &a,
        &["etc/ferrite/modules.list", "lib/modules/k/x.ko", "etc/z"],
    );
    // Other creation order, other mtimes, other mode bits and owner.
    tree(
        &b,
        &["etc/z", "lib/modules/k/x.ko", "etc/ferrite/modules.list"],
    );
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(12345);
    std::fs::File::options()
        .write(true)
        .open(b.join("etc/z"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    std::fs::set_permissions(b.join("etc/z"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(b.join("etc/z"), Some(1234), Some(5678)).unwrap();
    let ha = archive(&a, &dir.path().join("a.cpio"));
    let hb = archive(&b, &dir.path().join("b.cpio"));
    assert_eq!(ha, hb);

    // And cpio(1) reads it: /init executable, console node, owner root.
    let out = Command::new("cpio")
        .args(["-itv", "--quiet", "-F"])
        .arg(dir.path().join("a.cpio"))
        .output()
        .expect("cpio");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listing}");
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("{name} missing:\n{listing}"))
            .to_string()
    };
    assert!(
        line("init").starts_with("-rwxr-xr-x   1 root     root"),
        "{listing}"
    );
    assert!(line("dev/console").starts_with("crw-------"), "{listing}");
    assert!(
        line("etc/z").starts_with("-rw-r--r--   1 root     root"),
        "{listing}"
    );
    assert!(line("proc").starts_with("drwxr-xr-x"), "{listing}");

    // Different content: different archive.
    std::fs::write(b.join("etc/z"), "changed").unwrap();
    assert_ne!(ha, archive(&b, &dir.path().join("c.cpio")));
}
