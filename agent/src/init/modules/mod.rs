//! Kernel modules without modprobe or udev. The ramdisk build writes
//! depmod-format tables for the modules it ships; PID 1 loads the boot list
//! (filesystems and the like, which no device asks for), then every module
//! whose alias matches a device's `modalias` (coldplug), then keeps doing
//! so for devices that appear later (kernel uevents).

pub mod alias;
pub mod coldplug;
pub mod index;
pub mod load;
pub mod modprobe;
pub mod softdep;
pub mod uevent;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::Duration;

use tracing::{debug, warn};

pub use alias::AliasTable;
pub use index::{module_name, parse_list, ModuleError, ModuleIndex};
pub use softdep::SoftDep;

/// Aliases of the kernel's modules that the ramdisk does not ship (PCI,
/// USB, virtio and SCSI devices only), so that an unmatched device can be
/// logged with the driver it would need.
pub const UNSHIPPED_ALIASES: &str = "modules.alias.unshipped";

/// How long a thread waits for another one to finish loading a module it
/// needs: the kernel's own wait for a module that is still initialising
/// (`resolve_symbol_wait`) is 30 s too.
const DEPENDENCY_WAIT: Duration = Duration::from_secs(30);

/// A module's progress: being loaded (by which thread), or done (loaded,
/// found loaded, or failed: each is tried once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Loading(ThreadId),
    Done,
}

/// Everything needed to load a module by name or by device: the tables
/// read once, and what has been loaded (or tried) so far. Shared by
/// threads: coldplug loads the drivers of different devices at once, so a
/// slow probe (an ATA port timing out) does not hold the NIC's driver up.
#[derive(Debug)]
pub struct Loader {
    dir: PathBuf,
    index: ModuleIndex,
    aliases: AliasTable,
    /// Read on first use: it is only for log lines, and large.
    unshipped: OnceLock<AliasTable>,
    softdeps: BTreeMap<String, SoftDep>,
    progress: Mutex<BTreeMap<String, Progress>>,
    finished: Condvar,
    loaded: AtomicUsize,
}

/// Load `name` (and what it needs) with the running kernel's modules, only
/// in the ramdisk: on any other machine the kernel's modules are not the
/// agent's to load. For code outside PID 1 that needs a driver now.
pub fn load_in_ramdisk(name: &str) {
    if !crate::power::in_ramdisk() {
        return;
    }
    match Loader::for_running_kernel() {
        Ok(loader) => {
            loader.load(name);
        }
        Err(e) => warn!(module = name, error = %e, "cannot load kernel module"),
    }
}

impl Loader {
    /// The tables in `dir` (`/lib/modules/$(uname -r)`). Only modules.dep
    /// is required; without aliases nothing loads by device.
    pub fn open(dir: &Path) -> Result<Self, ModuleError> {
        let optional = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        Ok(Self {
            dir: dir.to_path_buf(),
            index: ModuleIndex::read(dir)?,
            aliases: AliasTable::parse(&optional("modules.alias")),
            unshipped: OnceLock::new(),
            softdeps: softdep::parse(&optional("modules.softdep")),
            progress: Mutex::new(BTreeMap::new()),
            finished: Condvar::new(),
            loaded: AtomicUsize::new(0),
        })
    }

    /// The running kernel's module directory.
    pub fn for_running_kernel() -> anyhow::Result<Self> {
        use anyhow::Context;
        let release = nix::sys::utsname::uname()
            .context("uname")?
            .release()
            .to_string_lossy()
            .into_owned();
        Ok(Self::open(&Path::new("/lib/modules").join(release))?)
    }

    /// How many module files have been loaded so far.
    pub fn loaded(&self) -> usize {
        self.loaded.load(Ordering::Relaxed)
    }

    pub fn aliases(&self) -> &AliasTable {
        &self.aliases
    }

    /// The kernel modules that would drive `modalias` but are not shipped.
    pub fn unshipped_drivers(&self, modalias: &str) -> Vec<String> {
        self.unshipped
            .get_or_init(|| {
                AliasTable::parse(
                    &std::fs::read_to_string(self.dir.join(UNSHIPPED_ALIASES)).unwrap_or_default(),
                )
            })
            .lookup(modalias)
    }

    /// Whether `name` is a module or alias this ramdisk can satisfy.
    pub fn knows(&self, name: &str) -> bool {
        let module = module_name(name);
        self.index.has(&module)
            || self.index.is_builtin(&module)
            || !self.aliases.lookup(name).is_empty()
    }

    /// Load `name` (a module name or an alias), its dependencies and soft
    /// dependencies. Failures are logged, not returned: one odd driver must
    /// not stop the rest. Returns the module files loaded.
    pub fn load(&self, name: &str) -> usize {
        let module = module_name(name);
        if self.index.has(&module) || self.index.is_builtin(&module) {
            return self.load_module(&module);
        }
        // An alias (`crypto-crc32c`, `fs-xfs`): dashes are part of it.
        let targets = self.aliases.lookup(name);
        if targets.is_empty() {
            debug!("module {name}: not in this ramdisk");
        }
        targets.iter().map(|t| self.load_module(t)).sum()
    }

    /// Load every module that drives `modalias`; returns their names.
    pub fn load_for_device(&self, modalias: &str) -> Vec<String> {
        let modules = self.aliases.lookup(modalias);
        for m in &modules {
            self.load_module(m);
        }
        modules
    }

    /// One module after its soft `pre:` dependencies and its dependencies
    /// (each of which gets the same treatment), then its `post:` ones.
    fn load_module(&self, name: &str) -> usize {
        if !self.claim(name) {
            return 0;
        }
        let count = self.load_claimed(name);
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        progress.insert(name.to_string(), Progress::Done);
        self.finished.notify_all();
        count
    }

    /// True if this thread is to load `name`. If another thread is loading
    /// it, wait until it is done (the caller needs it loaded), at most
    /// `DEPENDENCY_WAIT`; a soft-dependency cycle back to this thread's own
    /// work returns at once.
    fn claim(&self, name: &str) -> bool {
        let me = std::thread::current().id();
        let progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        let (mut progress, timeout) = self
            .finished
            .wait_timeout_while(
                progress,
                DEPENDENCY_WAIT,
                |p| matches!(p.get(name), Some(Progress::Loading(owner)) if *owner != me),
            )
            .unwrap_or_else(|e| e.into_inner());
        if timeout.timed_out() {
            warn!("module {name}: still loading on another thread after {DEPENDENCY_WAIT:?}");
            return false;
        }
        if progress.contains_key(name) {
            return false;
        }
        progress.insert(name.to_string(), Progress::Loading(me));
        true
    }

    fn load_claimed(&self, name: &str) -> usize {
        let soft = self.softdeps.get(name).cloned().unwrap_or_default();
        let mut count: usize = soft.pre.iter().map(|p| self.load(p)).sum();
        let order = match self.index.load_order(&[name]) {
            Ok(o) => o,
            Err(e) => {
                warn!("{e}");
                return count;
            }
        };
        for rel in order {
            let dep = module_name(&rel.to_string_lossy());
            if dep != name {
                count += self.load_module(&dep);
                continue;
            }
            match load::load_file(&self.dir.join(&rel)) {
                Ok(true) => {
                    debug!("loaded {}", rel.display());
                    self.loaded.fetch_add(1, Ordering::Relaxed);
                    count += 1;
                }
                Ok(false) => {}
                // The hardware or firmware it drives is absent (efivarfs
                // on a BIOS machine): nothing to do here.
                Err(load::LoadError::Kernel {
                    errno: nix::errno::Errno::ENODEV,
                    ..
                }) => debug!("module {dep}: no such device here"),
                Err(e) => warn!("module {dep}: {e}"),
            }
        }
        count + soft.post.iter().map(|p| self.load(p)).sum::<usize>()
    }
}

/// Load every module named in the boot list (`/etc/ferrite/modules.list`).
pub fn load_listed(loader: &Loader, list: &Path) -> anyhow::Result<usize> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(list).with_context(|| format!("reading {}", list.display()))?;
    Ok(parse_list(&text).iter().map(|n| loader.load(n)).sum())
}
