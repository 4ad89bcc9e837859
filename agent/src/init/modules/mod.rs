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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

pub use alias::AliasTable;
pub use index::{module_name, parse_list, ModuleError, ModuleIndex};
pub use softdep::SoftDep;

/// Aliases of the kernel's modules that the ramdisk does not ship (PCI,
/// USB, virtio and SCSI devices only), so that an unmatched device can be
/// logged with the driver it would need.
pub const UNSHIPPED_ALIASES: &str = "modules.alias.unshipped";

/// Everything needed to load a module by name or by device: the tables
/// read once, and what has been loaded (or tried) so far.
#[derive(Debug)]
pub struct Loader {
    dir: PathBuf,
    index: ModuleIndex,
    aliases: AliasTable,
    /// Read on first use: it is only for log lines, and large.
    unshipped: std::cell::OnceCell<AliasTable>,
    softdeps: BTreeMap<String, SoftDep>,
    /// Modules loaded, found loaded, or failed: each is tried once.
    tried: BTreeSet<String>,
    loaded: usize,
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
            unshipped: std::cell::OnceCell::new(),
            softdeps: softdep::parse(&optional("modules.softdep")),
            tried: BTreeSet::new(),
            loaded: 0,
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
        self.loaded
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
    pub fn load(&mut self, name: &str) -> usize {
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
    pub fn load_for_device(&mut self, modalias: &str) -> Vec<String> {
        let modules = self.aliases.lookup(modalias);
        for m in &modules {
            self.load_module(m);
        }
        modules
    }

    /// One module after its soft `pre:` dependencies and its dependencies
    /// (each of which gets the same treatment), then its `post:` ones.
    fn load_module(&mut self, name: &str) -> usize {
        if !self.tried.insert(name.to_string()) {
            return 0;
        }
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
                    self.loaded += 1;
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
pub fn load_listed(loader: &mut Loader, list: &Path) -> anyhow::Result<usize> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(list).with_context(|| format!("reading {}", list.display()))?;
    Ok(parse_list(&text).iter().map(|n| loader.load(n)).sum())
}
