//! `modules.dep` (depmod's format, written by the ramdisk build) and
//! `modules.builtin`: where each module's file is and what it needs first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModuleError {
    #[error("modules.dep line {line}: {reason}")]
    BadDep { line: usize, reason: String },
    #[error("module {0:?} is neither in modules.dep nor built into the kernel")]
    Unknown(String),
    #[error("module dependency cycle through {0:?}")]
    Cycle(String),
    #[error("reading {path}: {reason}")]
    Read { path: PathBuf, reason: String },
}

/// `virtio-net`, `kernel/drivers/net/virtio_net.ko.xz` → `virtio_net`.
pub fn module_name(s: &str) -> String {
    let base = s.rsplit('/').next().unwrap_or(s);
    let base = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
        .iter()
        .find_map(|ext| base.strip_suffix(ext))
        .unwrap_or(base);
    base.replace('-', "_")
}

/// `modules.dep` parsed: module name → (path relative to the module
/// directory, the dependencies' names).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ModuleIndex {
    modules: BTreeMap<String, (PathBuf, Vec<String>)>,
    builtin: BTreeSet<String>,
}

impl ModuleIndex {
    pub fn parse(modules_dep: &str, modules_builtin: &str) -> Result<Self, ModuleError> {
        let mut modules = BTreeMap::new();
        for (i, line) in modules_dep.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (path, deps) = line.split_once(':').ok_or_else(|| ModuleError::BadDep {
                line: i + 1,
                reason: format!("no ':' in {line:?}"),
            })?;
            let path = path.trim();
            if path.is_empty() {
                return Err(ModuleError::BadDep {
                    line: i + 1,
                    reason: "empty module path".into(),
                });
            }
            let deps = deps.split_whitespace().map(module_name).collect();
            modules.insert(module_name(path), (PathBuf::from(path), deps));
        }
        let builtin = modules_builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        Ok(Self { modules, builtin })
    }

    /// Whether `name` is a module file here (not built in, not unknown).
    pub fn has(&self, name: &str) -> bool {
        self.modules.contains_key(&module_name(name))
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&module_name(name))
    }

    pub fn read(dir: &Path) -> Result<Self, ModuleError> {
        let read = |name: &str, required: bool| -> Result<String, ModuleError> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(s) => Ok(s),
                Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                    Ok(String::new())
                }
                Err(e) => Err(ModuleError::Read {
                    path,
                    reason: e.to_string(),
                }),
            }
        };
        Self::parse(
            &read("modules.dep", true)?,
            &read("modules.builtin", false)?,
        )
    }

    /// The files to load for `wanted`, dependencies first, each once.
    /// Built-in modules need nothing.
    pub fn load_order<S: AsRef<str>>(&self, wanted: &[S]) -> Result<Vec<PathBuf>, ModuleError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for w in wanted {
            self.visit(
                &module_name(w.as_ref()),
                &mut done,
                &mut Vec::new(),
                &mut order,
            )?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
        order: &mut Vec<PathBuf>,
    ) -> Result<(), ModuleError> {
        if done.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            return Err(ModuleError::Cycle(name.to_string()));
        }
        let Some((path, deps)) = self.modules.get(name) else {
            if self.builtin.contains(name) {
                done.insert(name.to_string());
                return Ok(());
            }
            return Err(ModuleError::Unknown(name.to_string()));
        };
        stack.push(name.to_string());
        for dep in deps {
            self.visit(dep, done, stack, order)?;
        }
        stack.pop();
        done.insert(name.to_string());
        order.push(path.clone());
        Ok(())
    }
}

/// The names in a module list: one a line, `#` comments.
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
";

    fn names(paths: &[PathBuf]) -> Vec<String> {
        paths
            .iter()
            .map(|p| module_name(&p.to_string_lossy()))
            .collect()
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let idx = ModuleIndex::parse(DEP, "kernel/fs/ext4/ext4.ko\n").unwrap();
        let order = idx
            .load_order(&["virtio_pci", "virtio-net", "virtio_blk", "ext4"])
            .unwrap();
        assert_eq!(
            names(&order),
            [
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio_ring",
                "virtio",
                "virtio_pci",
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_blk",
            ]
        );
        assert_eq!(
            order[7],
            PathBuf::from("kernel/drivers/net/virtio_net.ko.xz")
        );
    }

    #[test]
    fn unknown_modules_and_cycles_are_errors() {
        let idx = ModuleIndex::parse(DEP, "").unwrap();
        assert_eq!(
            idx.load_order(&["e1000e"]),
            Err(ModuleError::Unknown("e1000e".into()))
        );
        let cyc = ModuleIndex::parse("a.ko: b.ko\nb.ko: a.ko\n", "").unwrap();
        assert!(matches!(cyc.load_order(&["a"]), Err(ModuleError::Cycle(_))));
    }

    #[test]
    fn malformed_modules_dep_is_rejected() {
        assert_eq!(
            ModuleIndex::parse("kernel/a.ko\n", ""),
            Err(ModuleError::BadDep {
                line: 1,
                reason: "no ':' in \"kernel/a.ko\"".into()
            })
        );
        assert!(ModuleIndex::parse(": b.ko\n", "").is_err());
    }

    #[test]
    fn list_ignores_comments_and_blanks() {
        assert_eq!(
            parse_list("# NICs\nvirtio_net\n\n  e1000 # old QEMU\n"),
            ["virtio_net", "e1000"]
        );
    }
}
