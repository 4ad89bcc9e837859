//! The deployed image's own GRUB, run inside its root (chroot), the way
//! IPA and the deploy ramdisks before it install a bootloader.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// The image's GRUB programs, as paths inside its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubTools {
    pub install: String,
    pub mkconfig: String,
    /// Where the distribution keeps grub.cfg (`/boot/grub2` on RHEL-likes).
    pub config: String,
}

/// GRUB 2 as `grub2-*` (RHEL, SUSE) or `grub-*` (Debian, Ubuntu).
pub fn find_tools(root: &Path) -> Option<GrubTools> {
    for (prefix, cfg_dir) in [("grub2", "/boot/grub2"), ("grub", "/boot/grub")] {
        for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
            let install = format!("{dir}/{prefix}-install");
            let mkconfig = format!("{dir}/{prefix}-mkconfig");
            let exists = |p: &str| root.join(p.trim_start_matches('/')).exists();
            if exists(&install) && exists(&mkconfig) {
                return Some(GrubTools {
                    install,
                    mkconfig,
                    config: format!("{cfg_dir}/grub.cfg"),
                });
            }
        }
    }
    None
}

/// Run `program args` with `root` as its root directory; the error carries
/// the tail of what the program printed.
pub fn run_in_root(root: &Path, program: &str, args: &[&str]) -> Result<(), String> {
    let root_owned = root.to_path_buf();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C");
    // SAFETY: chroot and chdir are async-signal-safe system calls; nothing
    // is allocated between fork and exec beyond what they need.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::chroot(&root_owned)?;
            nix::unistd::chdir("/")?;
            Ok(())
        });
    }
    tracing::info!(root = %root.display(), "running {program} {}", args.join(" "));
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {program} in the image: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    tracing::debug!("{program}: {text}");
    if out.status.success() {
        Ok(())
    } else {
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            tail.join(" | ")
        ))
    }
}

/// What GRUB and UEFI call a CPU architecture. The image is for the
/// machine the agent runs on, and the agent is built for it, so the
/// agent's own architecture (`std::env::consts::ARCH`) chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirmwareArch {
    /// `grub-install --target` for UEFI.
    pub grub_efi: &'static str,
    /// For BIOS, where the architecture has one.
    pub grub_bios: Option<&'static str>,
    /// The UEFI loader name suffix: `BOOTX64.EFI`, `grubaa64.efi`.
    pub efi_suffix: &'static str,
}

impl FirmwareArch {
    /// `arch` as `uname -m` spells it; `None` for architectures the agent
    /// has no bootloader names for.
    pub fn of(arch: &str) -> Option<Self> {
        match arch {
            "x86_64" => Some(Self {
                grub_efi: "x86_64-efi",
                grub_bios: Some("i386-pc"),
                efi_suffix: "x64",
            }),
            "aarch64" => Some(Self {
                grub_efi: "arm64-efi",
                grub_bios: None,
                efi_suffix: "aa64",
            }),
            _ => None,
        }
    }

    pub fn this_machine() -> Result<Self, String> {
        let arch = std::env::consts::ARCH;
        Self::of(arch).ok_or_else(|| format!("no GRUB platform known for {arch}"))
    }

    /// The removable-media loader path firmware falls back to.
    pub fn removable_loader(&self) -> String {
        format!("\\EFI\\BOOT\\BOOT{}.EFI", self.efi_suffix.to_uppercase())
    }
}

/// BIOS: GRUB's boot code into the disk's MBR, core.img into the BIOS boot
/// partition (GPT) or the post-MBR gap (MBR).
pub fn install_bios(
    root: &Path,
    tools: &GrubTools,
    arch: FirmwareArch,
    disk: &Path,
) -> Result<(), String> {
    let target = arch.grub_bios.ok_or_else(|| {
        format!(
            "there is no BIOS boot on {}: deploy with boot_mode uefi",
            std::env::consts::ARCH
        )
    })?;
    let disk = disk.display().to_string();
    run_in_root(
        root,
        &tools.install,
        &[&format!("--target={target}"), &disk],
    )
}

/// UEFI: GRUB into the ESP mounted at `/boot/efi`, under the distribution's
/// directory and as the removable-media fallback (`\EFI\BOOT\BOOTX64.EFI`,
/// `BOOTAA64.EFI`) so firmware without our NVRAM entry still boots it. NVRAM
/// is written natively by the caller, hence `--no-nvram`.
pub fn install_uefi(
    root: &Path,
    tools: &GrubTools,
    arch: FirmwareArch,
    bootloader_id: &str,
) -> Result<(), String> {
    let id = format!("--bootloader-id={bootloader_id}");
    let target = format!("--target={}", arch.grub_efi);
    let common = [target.as_str(), "--efi-directory=/boot/efi", "--no-nvram"];
    let mut args: Vec<&str> = common.to_vec();
    args.push(&id);
    run_in_root(root, &tools.install, &args)?;
    let mut removable: Vec<&str> = common.to_vec();
    removable.push("--removable");
    run_in_root(root, &tools.install, &removable)
}

/// IPA's `_has_dracut`: the image builds its initramfs with dracut.
pub fn has_dracut(root: &Path) -> bool {
    ["usr/sbin", "usr/bin", "sbin", "bin"]
        .iter()
        .any(|d| root.join(d).join("dracut").exists())
}

/// md's array UUID as mdadm prints it (`xxxxxxxx:xxxxxxxx:xxxxxxxx:xxxxxxxx`),
/// the form dracut's `rd.md.uuid=` takes.
pub fn mdadm_uuid(uuid: &uuid::Uuid) -> String {
    uuid.as_bytes()
        .chunks(4)
        .map(|c| c.iter().map(|b| format!("{b:02x}")).collect::<String>())
        .collect::<Vec<_>>()
        .join(":")
}

/// IPA's `_configure_grub` edit of `/etc/default/grub`: `extra` appended
/// inside every `GRUB_CMDLINE_LINUX="..."` line.
pub fn append_to_cmdline(default_grub: &str, extra: &str) -> String {
    let mut out: String = default_grub
        .lines()
        .map(|l| {
            match l
                .strip_prefix("GRUB_CMDLINE_LINUX=\"")
                .and_then(|v| v.strip_suffix('"'))
            {
                Some(v) => format!("GRUB_CMDLINE_LINUX=\"{v} {extra}\""),
                None => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    if default_grub.ends_with('\n') {
        out.push('\n');
    }
    out
}

pub fn make_config(root: &Path, tools: &GrubTools) -> Result<(), String> {
    run_in_root(root, &tools.mkconfig, &["-o", &tools.config])
}

/// The distribution's ID from os-release (`debian`, `rhel`...), the name
/// GRUB's EFI directory usually carries.
pub fn distribution_id(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("etc/os-release"))
        .or_else(|_| std::fs::read_to_string(root.join("usr/lib/os-release")))
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("ID="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| {
            !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_names_per_architecture() {
        let x86 = FirmwareArch::of("x86_64").unwrap();
        assert_eq!(
            (x86.grub_efi, x86.grub_bios),
            ("x86_64-efi", Some("i386-pc"))
        );
        assert_eq!(x86.removable_loader(), r"\EFI\BOOT\BOOTX64.EFI");
        let arm = FirmwareArch::of("aarch64").unwrap();
        assert_eq!((arm.grub_efi, arm.grub_bios), ("arm64-efi", None));
        assert_eq!(arm.removable_loader(), r"\EFI\BOOT\BOOTAA64.EFI");
        assert_eq!(FirmwareArch::of("riscv64"), None);
        assert!(FirmwareArch::this_machine().is_ok());
        let d = tempfile::tempdir().unwrap();
        let tools = GrubTools {
            install: "/usr/sbin/grub-install".into(),
            mkconfig: "/usr/sbin/grub-mkconfig".into(),
            config: "/boot/grub/grub.cfg".into(),
        };
        let err = install_bios(d.path(), &tools, arm, Path::new("/dev/vda")).unwrap_err();
        assert!(err.contains("boot_mode uefi"), "{err}");
    }

    #[test]
    fn finds_grub2_before_grub() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(find_tools(d.path()), None);
        std::fs::create_dir_all(d.path().join("usr/sbin")).unwrap();
        for f in ["grub-install", "grub-mkconfig"] {
            std::fs::write(d.path().join("usr/sbin").join(f), "").unwrap();
        }
        assert_eq!(find_tools(d.path()).unwrap().config, "/boot/grub/grub.cfg");
        for f in ["grub2-install", "grub2-mkconfig"] {
            std::fs::write(d.path().join("usr/sbin").join(f), "").unwrap();
        }
        let t = find_tools(d.path()).unwrap();
        assert_eq!(t.install, "/usr/sbin/grub2-install");
        assert_eq!(t.config, "/boot/grub2/grub.cfg");
    }

    #[test]
    fn dracut_md_uuids_go_into_the_kernel_command_line() {
        let d = tempfile::tempdir().unwrap();
        assert!(!has_dracut(d.path()));
        std::fs::create_dir_all(d.path().join("usr/bin")).unwrap();
        std::fs::write(d.path().join("usr/bin/dracut"), "").unwrap();
        assert!(has_dracut(d.path()));
        let u = uuid::Uuid::parse_str("0123abcd-4567-89ef-0011-223344556677").unwrap();
        assert_eq!(mdadm_uuid(&u), "0123abcd:456789ef:00112233:44556677");
        let text = "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"console=ttyS0 quiet\"\n\
                    GRUB_CMDLINE_LINUX_DEFAULT=\"x\"\n";
        assert_eq!(
            append_to_cmdline(text, "rd.md.uuid=a rd.md.uuid=b"),
            "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"console=ttyS0 quiet rd.md.uuid=a rd.md.uuid=b\"\n\
             GRUB_CMDLINE_LINUX_DEFAULT=\"x\"\n"
        );
        assert_eq!(append_to_cmdline("A=1", "x"), "A=1");
    }

    #[test]
    fn os_release_id() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/os-release"),
            "NAME=\"Debian\"\nID=debian\n",
        )
        .unwrap();
        assert_eq!(distribution_id(d.path()).as_deref(), Some("debian"));
        std::fs::write(d.path().join("etc/os-release"), "ID=\"../evil\"\n").unwrap();
        assert_eq!(distribution_id(d.path()), None);
    }
}
