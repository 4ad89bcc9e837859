//! iPXE scripts: the generic entry script every machine chains to, and the
//! per-node script keyed by the MAC that booted (deploy ramdisk, or the
//! local disk once the node is active).

use crate::provision_state::ProvisionState as S;

/// The kernel and initramfs a ramdisk boot uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamdiskBoot {
    pub kernel_url: String,
    pub initramfs_url: String,
    /// Everything after the kernel on its command line.
    pub kernel_params: String,
    /// The API's CA when it is on TLS: iPXE adds it to the initramfs at
    /// [`CA_PATH`] (its "magic initrd": an initrd argument is a path).
    pub ca_url: Option<String>,
}

/// Where the ramdisk finds the API's CA; the agent reads `ipa-cafile`.
pub const CA_PATH: &str = "/etc/ferrite/ca.pem";

/// What a node should boot, decided from its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootAction {
    Ramdisk(RamdiskBoot),
    LocalDisk,
    /// Nothing to do for this node now: say why and go to the next boot device.
    Nothing(String),
    /// A failed node must not boot what is on its disk: say why, power off.
    PowerOff(String),
}

/// Whether the node runs the deploy ramdisk in `state`; with fast track
/// the ramdisk also stays up while the node waits.
pub fn wants_ramdisk(state: S, fast_track: bool) -> bool {
    match state {
        S::Deploying
        | S::DeployWait
        | S::Cleaning
        | S::CleanWait
        | S::Inspecting
        | S::InspectWait
        | S::Rescuing
        | S::RescueWait
        | S::Servicing
        | S::ServiceWait => true,
        S::Enroll | S::Manageable | S::Available => fast_track,
        S::Verifying
        | S::Active
        | S::DeployFail
        | S::Deleting
        | S::CleanFail
        | S::InspectFail
        | S::Rescue
        | S::RescueFail
        | S::Unrescuing
        | S::UnrescueFail
        | S::ServiceHold
        | S::ServiceFail
        | S::Error
        | S::AdoptFail => false,
    }
}

/// Entry script: fetch this machine's own script, by the MAC of the
/// interface iPXE booted from, and run it. Only a failed fetch is retried:
/// when the node's script ends (`exit`, e.g. "boot the next device" in
/// UEFI), iPXE exits too and the firmware moves on.
pub fn entry_script(public_url: &str) -> String {
    format!(
        "#!ipxe\n\
         # ferrite-conductor: hand over to this machine's own script\n\
         :retry\n\
         imgfetch --name node {public_url}/boot/node/${{net0/mac:hexhyp}}.ipxe || goto failed\n\
         chain node || exit\n\
         exit\n\
         :failed\n\
         echo Failed to fetch the boot script for ${{net0/mac}}; retrying in 10 seconds\n\
         sleep 10\n\
         goto retry\n"
    )
}

/// Text safe on an iPXE `echo` line: no `${}` expansion, no comments,
/// one line, bounded.
fn echo_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " .,:/_-()'\"".contains(c) {
                c
            } else {
                ' '
            }
        })
        .take(160)
        .collect()
}

/// The node's script. Quoting: iPXE splits on whitespace only; parameters
/// come from the operator's node fields and are passed through as given.
pub fn node_script(action: &BootAction) -> String {
    match action {
        BootAction::Ramdisk(r) => format!(
            "#!ipxe\n\
             # deploy ramdisk\n\
             :retry_kernel\n\
             kernel --name deploy.kernel {kernel} initrd=deploy.initramfs {params} || goto retry_kernel_wait\n\
             :retry_initrd\n\
             initrd --name deploy.initramfs {initrd} || goto retry_initrd_wait\n\
             {ca}boot\n\
             :retry_kernel_wait\n\
             sleep 5\n\
             goto retry_kernel\n\
             :retry_initrd_wait\n\
             sleep 5\n\
             goto retry_initrd\n",
            kernel = r.kernel_url,
            initrd = r.initramfs_url,
            params = r.kernel_params,
            ca = r
                .ca_url
                .as_ref()
                .map(|url| format!("initrd --name ca.pem {url} {CA_PATH} mode=644 || goto retry_initrd_wait\n"))
                .unwrap_or_default(),
        ),
        // BIOS: boot the first disk; UEFI: leave iPXE so firmware boots
        // the next entry (the OS's, written by the agent).
        BootAction::LocalDisk => "#!ipxe\n\
             # boot from the local disk\n\
             iseq ${platform} efi && goto uefi ||\n\
             sanboot --no-describe --drive 0x80 || exit\n\
             :uefi\n\
             exit\n"
            .to_string(),
        BootAction::Nothing(why) => format!(
            "#!ipxe\n\
             echo ferrite-conductor: {}\n\
             exit\n",
            echo_safe(why)
        ),
        // iPXE builds without `poweroff` (older distribution ROMs) halt
        // here instead: never fall through to the disk.
        BootAction::PowerOff(why) => format!(
            "#!ipxe\n\
             echo ferrite-conductor: {}\n\
             sleep 5\n\
             poweroff ||\n\
             :halt\n\
             sleep 3600\n\
             goto halt\n",
            echo_safe(why)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramdisk_states() {
        assert!(wants_ramdisk(S::DeployWait, false));
        assert!(wants_ramdisk(S::CleanWait, false));
        assert!(wants_ramdisk(S::InspectWait, false));
        assert!(!wants_ramdisk(S::Active, false));
        assert!(!wants_ramdisk(S::Available, false));
        assert!(wants_ramdisk(S::Available, true));
        assert!(!wants_ramdisk(S::Active, true));
    }

    #[test]
    fn scripts() {
        let entry = entry_script("http://10.0.2.100");
        assert!(entry.starts_with("#!ipxe\n"));
        assert!(entry.contains(
            "imgfetch --name node http://10.0.2.100/boot/node/${net0/mac:hexhyp}.ipxe || goto failed"
        ));
        assert!(entry.contains("chain node || exit\nexit\n"));
        let ramdisk = node_script(&BootAction::Ramdisk(RamdiskBoot {
            kernel_url: "http://h/k".into(),
            initramfs_url: "http://h/i".into(),
            kernel_params: "ipa-api-url=http://h BOOTIF=01-${net0/mac:hexhyp}".into(),
            ca_url: None,
        }));
        assert!(!ramdisk.contains("ca.pem"));
        assert!(ramdisk.contains(
            "kernel --name deploy.kernel http://h/k initrd=deploy.initramfs ipa-api-url=http://h BOOTIF=01-${net0/mac:hexhyp} || goto retry_kernel_wait"
        ));
        assert!(ramdisk.contains("initrd --name deploy.initramfs http://h/i"));
        assert!(node_script(&BootAction::LocalDisk).contains("sanboot --no-describe --drive 0x80"));
        assert!(node_script(&BootAction::Nothing("unknown".into())).contains("exit"));
        let off = node_script(&BootAction::PowerOff("failed: ${evil} # x\nboot".into()));
        assert!(off.contains("poweroff"));
        let echo = off.lines().nth(1).unwrap();
        assert!(!echo.contains(['$', '{', '#']), "{echo}");
        assert!(off.ends_with(":halt\nsleep 3600\ngoto halt\n"), "{off}");
    }
}
