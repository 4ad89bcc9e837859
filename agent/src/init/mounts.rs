//! The pseudo filesystems a ramdisk needs before anything else works.

use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::Context;
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

struct Mount {
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const MOUNTS: &[Mount] = &[
    Mount {
        target: "/proc",
        fstype: "proc",
        flags: MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        data: None,
    },
    Mount {
        target: "/sys",
        fstype: "sysfs",
        flags: MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        data: None,
    },
    Mount {
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    Mount {
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=0755"),
    },
    Mount {
        target: "/tmp",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
];

/// Mount /proc, /sys, /dev, /run and /tmp; returns what failed (logging
/// is not up yet: the console may only exist once /dev is mounted).
pub fn mount_all() -> Vec<anyhow::Error> {
    MOUNTS.iter().filter_map(|m| mount_one(m).err()).collect()
}

fn mount_one(m: &Mount) -> anyhow::Result<()> {
    std::fs::create_dir_all(m.target).with_context(|| format!("creating {}", m.target))?;
    match mount(
        Some(m.fstype),
        Path::new(m.target),
        Some(m.fstype),
        m.flags,
        m.data,
    ) {
        // Already there (a re-exec, or the kernel's devtmpfs automount).
        Ok(()) | Err(Errno::EBUSY) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("mounting {} on {}", m.fstype, m.target)),
    }
}

/// UEFI boot variables (`/sys/firmware/efi/efivars`), where the
/// bootloader install writes Boot#### entries; only on UEFI machines, and
/// after modules are loaded (Debian builds efivarfs as a module).
pub fn mount_efivarfs() -> anyhow::Result<bool> {
    let target = Path::new("/sys/firmware/efi/efivars");
    if !Path::new("/sys/firmware/efi").is_dir() {
        return Ok(false);
    }
    match mount(
        Some("efivarfs"),
        target,
        Some("efivarfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        Ok(()) | Err(Errno::EBUSY) => Ok(true),
        Err(e) => Err(e).with_context(|| format!("mounting efivarfs on {}", target.display())),
    }
}

/// The kernel opens /dev/console for init only if the initramfs has the
/// node; if stdio is missing, attach it to the console now that devtmpfs
/// is mounted, so logs and the agent's output reach the serial port.
pub fn ensure_console() {
    if nix::fcntl::fcntl(std::io::stderr(), nix::fcntl::FcntlArg::F_GETFD).is_ok() {
        return;
    }
    let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which are closed.
        unsafe { libc::dup2(console.as_raw_fd(), fd) };
    }
}
