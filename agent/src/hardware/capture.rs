//! Record the parts of sysfs, procfs and /dev that the inventory reads as a
//! fixture tree (`sys/`, `proc/`, `dev/`), so tests replay a real machine.
//! One implementation for a host (`ferrite-agent capture-hardware --out`)
//! and for the deploy ramdisk, which has no shell: PID 1 with
//! `ferrite-capture-hardware=/dev/vdX` on the kernel command line writes
//! the capture as a tar to that disk and powers off.
//!
//! What is read comes from the readers' own lists (`SYSFS_*` in
//! `disk::devices`, `inventory`, `inventory::net`, `inventory::cpu`), and a
//! test checks that the inventory of a capture equals the inventory of the
//! machine it was taken from. Symlinks are kept as relative links inside
//! the tree (sysfs's own relative targets), files are written at their
//! real (canonical) place, and directories that would be empty get a
//! `.keep` file so git keeps them.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};

use crate::disk::devices::{
    DEV_LINK_DIRS, SYSFS_BLOCK_FILES, SYSFS_BLOCK_LINKS, SYSFS_BLOCK_LISTED, SYSFS_BLOCK_SKIPPED,
};
use crate::hardware::collectors::{extra, numa, pci, usb};
use crate::hardware::inventory::net::{SYSFS_NET_FILES, SYSFS_NET_LINKS, SYSFS_NET_MARKERS};
use crate::hardware::inventory::{cpu, Roots, DMI_TABLE, EFI_DIR, MEMORY_BLOCKS_DIR, PROCFS_FILES};

/// The kernel parameter that makes PID 1 capture instead of starting the agent.
pub const CMDLINE_PARAM: &str = "ferrite-capture-hardware";
/// Printed on the console when PID 1's capture is on the disk.
pub const DONE_MARKER: &str = "FERRITE-CAPTURE-DONE";

/// Name of the file that keeps an otherwise empty directory in git.
const KEEP: &str = ".keep";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File(Vec<u8>),
    /// A symlink with its (relative) target.
    Link(PathBuf),
    Dir,
}

/// A captured tree: paths relative to its top (`sys/...`, `proc/...`, `dev/...`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tree {
    pub entries: BTreeMap<PathBuf, Entry>,
}

/// One source root and where it goes in the tree.
struct Source<'a> {
    root: &'a Path,
    top: &'static str,
}

impl Source<'_> {
    /// The real (symlink-free) path of `rel` under the root, relative to
    /// the root, recording every symlink met on the way into `tree`.
    /// `None` if it does not exist or leaves the root.
    fn resolve(&self, tree: &mut Tree, rel: &Path, depth: u32) -> Option<PathBuf> {
        if depth > 40 {
            return None;
        }
        let mut cur = PathBuf::new();
        for comp in rel.components() {
            let Component::Normal(name) = comp else {
                return None;
            };
            let cand = cur.join(name);
            let abs = self.root.join(&cand);
            let meta = fs::symlink_metadata(&abs).ok()?;
            if !meta.file_type().is_symlink() {
                cur = cand;
                continue;
            }
            let target = fs::read_link(&abs).ok()?;
            let joined = if target.is_absolute() {
                target.strip_prefix(self.root).ok()?.to_path_buf()
            } else {
                cur.join(&target)
            };
            let lexical = normalize(&joined)?;
            let real = self.resolve(tree, &lexical, depth + 1)?;
            // Keep sysfs's own relative target when it stays inside the
            // tree; otherwise point at the resolved place.
            let link_target = if target.is_relative() {
                target
            } else {
                relative(&cur, &real)
            };
            tree.entries
                .insert(Path::new(self.top).join(&cand), Entry::Link(link_target));
            tree.entries
                .entry(Path::new(self.top).join(&real))
                .or_insert(Entry::Dir);
            cur = real;
        }
        Some(cur)
    }

    /// Copy a regular file if it is readable (many sysfs files are not).
    fn file(&self, tree: &mut Tree, rel: &Path) {
        let Some(real) = self.resolve(tree, rel, 0) else {
            return;
        };
        let abs = self.root.join(&real);
        if !fs::metadata(&abs).is_ok_and(|m| m.is_file()) {
            return;
        }
        if let Ok(data) = fs::read(&abs) {
            tree.entries
                .insert(Path::new(self.top).join(real), Entry::File(data));
        }
    }

    /// Record a directory (and the links to it) if it exists.
    fn dir(&self, tree: &mut Tree, rel: &Path) {
        let Some(real) = self.resolve(tree, rel, 0) else {
            return;
        };
        if self.root.join(&real).is_dir() {
            tree.entries
                .entry(Path::new(self.top).join(real))
                .or_insert(Entry::Dir);
        }
    }

    /// Record a symlink (and its target directory) without reading through it.
    fn link(&self, tree: &mut Tree, rel: &Path) {
        let Some(parent) = rel.parent() else { return };
        let Some(name) = rel.file_name() else { return };
        let Some(real_parent) = self.resolve(tree, parent, 0) else {
            return;
        };
        let abs = self.root.join(&real_parent).join(name);
        let Ok(target) = fs::read_link(&abs) else {
            return;
        };
        if target.is_relative() {
            tree.entries.insert(
                Path::new(self.top).join(&real_parent).join(name),
                Entry::Link(target),
            );
            // A directory target (a device, a driver) is made in the tree
            // too; others (`/dev/disk/by-path` → `../../sda`) only by name.
            if abs.is_dir() {
                let _ = self.resolve(tree, &real_parent.join(name), 0);
            }
        }
    }

    /// Names in a directory (following links to it).
    fn list(&self, tree: &mut Tree, rel: &Path) -> Vec<String> {
        let Some(real) = self.resolve(tree, rel, 0) else {
            return Vec::new();
        };
        let mut names: Vec<String> = fs::read_dir(self.root.join(real))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// `a/b/../c` → `a/c`; `None` if it climbs above the top.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// The relative path from directory `from` to `to` (both relative to one top).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<_> = from.components().collect();
    let t: Vec<_> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

/// Capture what the inventory reads from `roots`.
pub fn capture(roots: &Roots) -> Tree {
    let mut tree = Tree::default();
    let sys = Source {
        root: &roots.sysfs,
        top: "sys",
    };
    let proc_ = Source {
        root: &roots.procfs,
        top: "proc",
    };
    let dev = Source {
        root: &roots.dev,
        top: "dev",
    };
    for f in PROCFS_FILES.iter().chain(extra::PROCFS_FILES) {
        proc_.file(&mut tree, Path::new(f));
    }
    sys.file(&mut tree, Path::new(DMI_TABLE));
    sys.dir(&mut tree, Path::new(EFI_DIR));
    sys.file(&mut tree, Path::new(cpu::MAX_FREQ));
    let mem = Path::new(MEMORY_BLOCKS_DIR);
    sys.file(&mut tree, &mem.join("block_size_bytes"));
    for block in sys.list(&mut tree, mem) {
        if block.starts_with("memory") {
            sys.file(&mut tree, &mem.join(block).join("online"));
        }
    }

    let net = Path::new("class/net");
    for nic in sys.list(&mut tree, net) {
        let dir = net.join(&nic);
        sys.dir(&mut tree, &dir);
        for f in SYSFS_NET_FILES {
            sys.file(&mut tree, &dir.join(f));
        }
        for l in SYSFS_NET_LINKS {
            sys.link(&mut tree, &dir.join(l));
        }
        for m in SYSFS_NET_MARKERS {
            sys.dir(&mut tree, &dir.join(m));
        }
    }

    capture_collectors(&sys, &mut tree);

    let block = Path::new("block");
    for disk in sys.list(&mut tree, block) {
        if SYSFS_BLOCK_SKIPPED.iter().any(|p| disk.starts_with(p)) {
            continue;
        }
        let dir = block.join(&disk);
        sys.dir(&mut tree, &dir);
        for f in SYSFS_BLOCK_FILES {
            sys.file(&mut tree, &dir.join(f));
        }
        for l in SYSFS_BLOCK_LINKS {
            sys.link(&mut tree, &dir.join(l));
        }
        for d in SYSFS_BLOCK_LISTED {
            for name in sys.list(&mut tree, &dir.join(d)) {
                sys.dir(&mut tree, &dir.join(d).join(name));
            }
        }
    }

    for d in DEV_LINK_DIRS {
        for name in dev.list(&mut tree, Path::new(d)) {
            dev.link(&mut tree, &Path::new(d).join(name));
        }
    }
    tree.keep_empty_dirs();
    tree
}

/// What the inspection collectors (`pci-devices`, `numa-topology`,
/// `usb-devices`) read; `dmi-decode` and `extra-hardware` read the SMBIOS
/// table and procfs files captured above.
fn capture_collectors(sys: &Source<'_>, tree: &mut Tree) {
    let pci_dir = Path::new(pci::DEVICES_DIR);
    for dev in sys.list(tree, pci_dir) {
        for f in pci::DEVICE_FILES {
            sys.file(tree, &pci_dir.join(&dev).join(f));
        }
    }
    let nodes = Path::new(numa::NODES_DIR);
    for node in sys.list(tree, nodes) {
        if !node.starts_with("node") {
            continue;
        }
        let dir = nodes.join(&node);
        sys.file(tree, &dir.join("meminfo"));
        for cpu in sys.list(tree, &dir) {
            if cpu.starts_with("cpu") {
                sys.file(tree, &dir.join(cpu).join("topology/core_id"));
            }
        }
    }
    let net = Path::new(numa::NET_DIR);
    for nic in sys.list(tree, net) {
        sys.file(tree, &net.join(nic).join("device/numa_node"));
    }
    let usb_dir = Path::new(usb::DEVICES_DIR);
    for dev in sys.list(tree, usb_dir) {
        for f in usb::DEVICE_FILES.iter().chain(usb::INTERFACE_FILES) {
            sys.file(tree, &usb_dir.join(&dev).join(f));
        }
    }
}

impl Tree {
    /// Give every directory without entries a `.keep` file (git drops empty ones).
    fn keep_empty_dirs(&mut self) {
        let dirs: Vec<PathBuf> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Dir))
            .map(|(p, _)| p.clone())
            .collect();
        for d in dirs {
            let has_child = self
                .entries
                .range(d.clone()..)
                .nth(1)
                .is_some_and(|(p, _)| p.starts_with(&d));
            if !has_child {
                self.entries.insert(d.join(KEEP), Entry::File(Vec::new()));
            }
        }
    }

    pub fn files(&self) -> usize {
        self.entries
            .values()
            .filter(|e| matches!(e, Entry::File(_)))
            .count()
    }

    /// Write the tree as a tar (owner 0, mtime 0, sorted: the same machine
    /// gives the same bytes).
    pub fn write_tar<W: Write>(&self, out: W) -> io::Result<W> {
        let mut tar = tar::Builder::new(out);
        tar.follow_symlinks(false);
        for (path, entry) in &self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            match entry {
                Entry::File(data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_size(data.len() as u64);
                    tar.append_data(&mut h, path, data.as_slice())?;
                }
                Entry::Link(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    tar.append_link(&mut h, path, target)?;
                }
                Entry::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    tar.append_data(&mut h, path, io::empty())?;
                }
            }
        }
        tar.into_inner()
    }

    /// Write the tree into directory `out` (which must not exist or be empty).
    pub fn write_dir(&self, out: &Path) -> anyhow::Result<()> {
        fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        for (path, entry) in &self.entries {
            let dst = out.join(path);
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            match entry {
                Entry::File(data) => fs::write(&dst, data),
                Entry::Link(target) => std::os::unix::fs::symlink(target, &dst),
                Entry::Dir => fs::create_dir_all(&dst),
            }
            .with_context(|| format!("writing {}", dst.display()))?;
        }
        Ok(())
    }
}

/// Replace a previous capture in `out`, refusing to empty any other directory.
pub fn prepare_out_dir(out: &Path) -> anyhow::Result<()> {
    let Ok(entries) = fs::read_dir(out) else {
        return Ok(());
    };
    let names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if let Some(other) = names
        .iter()
        .find(|n| !["sys", "proc", "dev"].contains(&n.as_str()))
    {
        bail!(
            "{} holds {other:?}: not a previous capture, refusing to replace it",
            out.display()
        );
    }
    for n in names {
        fs::remove_dir_all(out.join(n))?;
    }
    Ok(())
}

/// PID 1's capture: wait for the target disk and for device probing to
/// settle, bring the NICs' links up (carrier, speed), then write the tar to
/// `target` from its first byte.
pub fn run_as_init(target: &Path) -> anyhow::Result<()> {
    use std::time::{Duration, Instant};
    use tracing::info;

    let sysfs = Path::new("/sys");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !target.exists() {
        if Instant::now() > deadline {
            bail!("{} did not appear", target.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bring_links_up(sysfs);
    // Drivers probe asynchronously (NVMe namespaces, SCSI scans): wait
    // until the disks and NICs stay the same for two seconds.
    let snapshot = || {
        let names = |d: &str| -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(sysfs.join(d))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        };
        (names("block"), names("class/net"))
    };
    let mut last = snapshot();
    let mut stable_since = Instant::now();
    let settle_deadline = Instant::now() + Duration::from_secs(20);
    while stable_since.elapsed() < Duration::from_secs(2) && Instant::now() < settle_deadline {
        std::thread::sleep(Duration::from_millis(200));
        let now = snapshot();
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
    info!("capturing: disks {:?}, NICs {:?}", last.0, last.1);
    let tree = capture(&Roots {
        sysfs: sysfs.into(),
        procfs: "/proc".into(),
        dev: "/dev".into(),
    });
    let bytes = tree.write_tar(Vec::new())?;
    let mut dev = fs::OpenOptions::new()
        .write(true)
        .open(target)
        .with_context(|| format!("opening {}", target.display()))?;
    dev.write_all(&bytes)
        .with_context(|| format!("writing {}", target.display()))?;
    dev.sync_all()?;
    info!(
        "{DONE_MARKER} {} files, {} bytes of tar on {}",
        tree.files(),
        bytes.len(),
        target.display()
    );
    Ok(())
}

/// Set every physical NIC's link up and give carrier a few seconds, so
/// `carrier` and `speed` read as on a machine in service.
fn bring_links_up(sysfs: &Path) {
    use std::time::Duration;
    use tracing::warn;

    let nics = crate::init::net::link::openable_nics(sysfs);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            warn!("no runtime for link setup: {e}");
            return;
        }
    };
    rt.block_on(async {
        let (conn, handle, _) = match rtnetlink::new_connection() {
            Ok(c) => c,
            Err(e) => {
                warn!("rtnetlink: {e}");
                return;
            }
        };
        tokio::spawn(conn);
        for nic in &nics {
            if let Err(e) = crate::init::net::link::set_up(&handle, nic.ifindex).await {
                warn!("{e:#}");
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline
            && !nics
                .iter()
                .all(|n| crate::init::net::link::has_carrier(sysfs, &n.name))
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::inventory::collect;

    fn roots_of(base: &Path) -> Roots {
        Roots {
            sysfs: base.join("sys"),
            procfs: base.join("proc"),
            dev: base.join("dev"),
        }
    }

    #[test]
    fn relative_and_normalize() {
        assert_eq!(
            relative(
                Path::new("class/net/eth0"),
                Path::new("devices/pci/virtio2")
            ),
            Path::new("../../../devices/pci/virtio2")
        );
        assert_eq!(
            normalize(Path::new("class/net/../../devices/x")),
            Some(PathBuf::from("devices/x"))
        );
        assert_eq!(normalize(Path::new("a/../../b")), None);
    }

    /// A capture of a fixture tree replays the same inventory, through a
    /// directory and through a tar.
    #[test]
    fn recapturing_a_fixture_keeps_its_inventory() {
        for name in ["ferrite-ci-vm", "qemu-nvme-multinic", "qemu-virt-arm64"] {
            recapture(name);
        }
    }

    fn recapture(name: &str) {
        let fixture = crate::hardware::inventory::fixture(name);
        let want = collect(&fixture, None, "h", "x86_64");
        let tree = capture(&fixture);
        let out = tempfile::tempdir().unwrap();
        tree.write_dir(out.path()).unwrap();
        assert_eq!(
            collect(&roots_of(out.path()), None, "h", "x86_64"),
            want,
            "{name}"
        );
        assert!(fs::read_link(out.path().join("sys/class/net/eth0/device"))
            .unwrap()
            .is_relative());

        let bytes = tree.write_tar(Vec::new()).unwrap();
        assert_eq!(bytes, tree.write_tar(Vec::new()).unwrap(), "deterministic");
        let untarred = tempfile::tempdir().unwrap();
        tar::Archive::new(bytes.as_slice())
            .unpack(untarred.path())
            .unwrap();
        assert_eq!(
            collect(&roots_of(untarred.path()), None, "h", "x86_64"),
            want,
            "{name}"
        );
    }

    /// The inventory of a capture of this machine is this machine's
    /// inventory (without IPs, which only the live kernel has): whatever
    /// the readers learn to read, the capture must record.
    #[test]
    fn capture_of_this_machine_replays_its_inventory() {
        let live = Roots {
            sysfs: "/sys".into(),
            procfs: "/proc".into(),
            dev: "/dev".into(),
        };
        // Other tests add and remove loop devices and NICs: a few tries.
        let mut last = None;
        for _ in 0..3 {
            let tree = capture(&live);
            let out = tempfile::tempdir().unwrap();
            tree.write_dir(out.path()).unwrap();
            let mut want = collect(&live, None, "h", "x86_64");
            for i in &mut want.interfaces {
                i.ipv4_address = None;
                i.ipv6_address = None;
            }
            let got = collect(&roots_of(out.path()), None, "h", "x86_64");
            // Free memory and the current clock change from one read to the next.
            want.memory.total = got.memory.total;
            want.cpu.frequency = got.cpu.frequency.clone();
            if got == want {
                return;
            }
            last = Some((got, want));
        }
        let (got, want) = last.unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn refuses_to_replace_what_is_not_a_capture() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("sys/x")).unwrap();
        prepare_out_dir(dir.path()).unwrap();
        assert!(!dir.path().join("sys").exists());
        fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        assert!(prepare_out_dir(dir.path()).is_err());
    }
}
