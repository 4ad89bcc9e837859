//! Mounts that must not outlive their task (a bootloader install, a file
//! injection): a stack unmounted in reverse order on every path, including
//! errors and panics.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

#[derive(Default)]
pub struct Mounts {
    stack: Vec<PathBuf>,
}

impl Mounts {
    pub fn mount(&mut self, source: &Path, target: &Path, fstype: &str) -> Result<(), String> {
        self.mount_with(source, target, fstype, MsFlags::empty())
    }

    /// `mount` with extra flags (`MS_RDONLY` to look without changing anything).
    pub fn mount_with(
        &mut self,
        source: &Path,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
    ) -> Result<(), String> {
        std::fs::create_dir_all(target)
            .map_err(|e| format!("creating mount point {}: {e}", target.display()))?;
        mount(
            Some(source),
            target,
            Some(fstype),
            MsFlags::MS_NOATIME | flags,
            None::<&str>,
        )
        .map_err(|e| {
            format!(
                "mounting {} ({fstype}) on {}: {e}",
                source.display(),
                target.display()
            )
        })?;
        self.stack.push(target.to_path_buf());
        Ok(())
    }

    pub fn bind(&mut self, source: &Path, target: &Path) -> Result<(), String> {
        std::fs::create_dir_all(target)
            .map_err(|e| format!("creating mount point {}: {e}", target.display()))?;
        mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            format!(
                "bind-mounting {} on {}: {e}",
                source.display(),
                target.display()
            )
        })?;
        self.stack.push(target.to_path_buf());
        Ok(())
    }

    /// Unmount everything, newest first. A busy mount is retried, then
    /// detached lazily so nothing stays attached; that case is reported.
    pub fn unmount_all(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        while let Some(target) = self.stack.pop() {
            let mut done = false;
            for _ in 0..5 {
                if umount2(&target, MntFlags::empty()).is_ok() {
                    done = true;
                    break;
                }
                nix::unistd::sync();
                std::thread::sleep(Duration::from_millis(200));
            }
            if !done {
                let lazy = umount2(&target, MntFlags::MNT_DETACH);
                problems.push(format!(
                    "{} was busy{}",
                    target.display(),
                    if lazy.is_ok() {
                        "; detached lazily"
                    } else {
                        " and stays mounted"
                    }
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("unmounting: {}", problems.join(", ")))
        }
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_all() {
            tracing::warn!("{e}");
        }
    }
}
