//! End to end: ferrite-conductor deploys an image to a QEMU machine that
//! PXE-boots the real deploy ramdisk, and the machine then boots the
//! deployed image from its own disk. BIOS (SeaBIOS + iPXE) and UEFI (OVMF +
//! iPXE), plus a deploy with a wrong checksum that must fail cleanly.
//!
//! The conductor serves iPXE scripts, the ramdisk and the images itself.
//! The guest network is sealed (`restrict=on`): the guest reaches the
//! conductor at 10.0.2.100:80 through a `guestfwd` relay, the conductor
//! reaches the agent through `hostfwd` on 127.0.0.1. Power is `fake`: the
//! test is the hand on the power button, as for `manual-management`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferrite_tests::{free_port, wait_exit, wait_for, Conductor, Proc};
use serde_json::{json, Value};

use crate::qemu::{guestfwd_to, ramdisk, vm_slot, workspace};

pub(crate) const MARKER: &str = "FERRITE-DEPLOYED-IMAGE-BOOTED";
pub(crate) const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub(crate) const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The bootable test images (tests/qemu/make-test-images), built once.
pub(crate) fn test_images() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let (kernel, _) = ramdisk();
        let out = workspace().join("build/test-images");
        let status = Command::new(workspace().join("tests/qemu/make-test-images"))
            .env("OUT", &out)
            .env("KERNEL", kernel)
            .status()
            .expect("running make-test-images");
        assert!(status.success(), "make-test-images failed");
        out
    })
}

/// One virtual machine: its disk and (UEFI) NVRAM persist across power cycles.
pub(crate) struct Machine {
    dir: PathBuf,
    mac: String,
    uefi: bool,
    pub(crate) disk: PathBuf,
    pub(crate) vars: PathBuf,
    agent_port: u16,
    conductor_port: u16,
    boots: u32,
}

impl Machine {
    pub(crate) fn new(dir: &Path, mac: &str, uefi: bool, conductor_port: u16) -> Self {
        let disk = dir.join("disk.raw");
        // Root device selection wants at least 4 GiB (sparse).
        std::fs::File::create(&disk)
            .and_then(|f| f.set_len(5 << 30))
            .unwrap();
        let vars = dir.join("OVMF_VARS.fd");
        if uefi {
            std::fs::copy(OVMF_VARS, &vars).expect("OVMF (scripts/setup installs ovmf)");
        }
        Self {
            dir: dir.to_path_buf(),
            mac: mac.to_string(),
            uefi,
            disk,
            vars,
            agent_port: free_port(),
            conductor_port,
            boots: 0,
        }
    }

    /// Kernel parameters the conductor appends for this machine: the agent
    /// advertises the host side of its forwarded port.
    fn kernel_params(&self) -> String {
        format!(
            "console=ttyS0 panic=-1 ipa-advertise-host=127.0.0.1 ipa-advertise-port={} \
             ipa-lookup-interval=1",
            self.agent_port
        )
    }

    /// Power on: network first, then the disk (bootindex), as a PXE fleet is set up.
    pub(crate) fn power_on(&mut self) -> (Proc, Instant) {
        self.boots += 1;
        let netdev = format!(
            "user,id=n0,restrict=on,bootfile=http://10.0.2.100/boot/boot.ipxe,\
             hostfwd=tcp:127.0.0.1:{}-:9999,guestfwd=tcp:10.0.2.100:80-{}",
            self.agent_port,
            guestfwd_to(self.conductor_port)
        );
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot"])
            .args(["-serial", "stdio", "-monitor", "none", "-vga", "none"]);
        if self.uefi {
            cmd.args(["-machine", "q35"])
                .args([
                    "-drive",
                    &format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
                ])
                .args([
                    "-drive",
                    &format!("if=pflash,format=raw,file={}", self.vars.display()),
                ]);
        }
        cmd.args(["-netdev", &netdev])
            .args([
                "-device",
                &format!("virtio-net-pci,netdev=n0,mac={},bootindex=1", self.mac),
            ])
            .args([
                "-drive",
                &format!("file={},format=raw,if=none,id=d0", self.disk.display()),
            ])
            .args(["-device", "virtio-blk-pci,drive=d0,bootindex=2"]);
        let log = self.dir.join(format!("serial-{}.log", self.boots));
        (Proc::spawn(cmd, log), Instant::now())
    }
}

/// Keep serial logs where CI can collect them (always; they are small).
pub(crate) fn keep_logs(machine: &Machine, tag: &str) {
    let dest = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("e2e-{tag}"));
    let _ = std::fs::create_dir_all(&dest);
    for i in 1..=machine.boots {
        let name = format!("serial-{i}.log");
        let _ = std::fs::copy(machine.dir.join(&name), dest.join(&name));
    }
}

/// Wait for one of `states`; log the states the node passes through.
pub(crate) async fn wait_states(
    c: &Conductor,
    uuid: &str,
    states: &[&str],
    within: Duration,
) -> Value {
    let mut last = String::new();
    let deadline = Instant::now() + within;
    loop {
        let n = c.node(uuid).await;
        let state = n["provision_state"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if state != last {
            eprintln!("node {uuid}: {state}");
            last = state.clone();
        }
        if states.contains(&state.as_str()) {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "node stuck in {state} (want {states:?}); last_error: {}",
            n["last_error"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn conductor() -> Conductor {
    conductor_serving(test_images(), &[]).await
}

/// The conductor the QEMU machines talk to: the ramdisk from this tree,
/// `images` served at /images/, plus `extra` options.
pub(crate) async fn conductor_serving(images: &Path, extra: &[&str]) -> Conductor {
    let (kernel, _) = ramdisk();
    let boot_dir = kernel.parent().unwrap().display().to_string();
    let images = images.display().to_string();
    let mut args = vec![
        "--public-url",
        "http://10.0.2.100",
        "--boot-dir",
        &boot_dir,
        "--images-dir",
        &images,
        "--heartbeat-timeout",
        "10",
        "--periodic-interval",
        "2",
    ];
    args.extend_from_slice(extra);
    Conductor::start(&args).await
}

/// A provision verb the conductor must accept.
pub(crate) async fn verb(c: &Conductor, uuid: &str, target: &str) {
    let (code, body) = c.act(uuid, json!({"target": target})).await;
    assert_eq!(code, 202, "{target}: {body}");
}

/// A node for `machine`, taken to `available`, with `image` as its instance image.
async fn enroll(c: &Conductor, machine: &Machine, image: &str, checksum: &str) -> String {
    enroll_with(
        c,
        machine,
        json!({"image_source": format!("http://10.0.2.100/images/{image}"),
               "image_checksum": checksum, "image_disk_format": "qcow2"}),
    )
    .await
}

/// A node for `machine`, taken to `available`, with this `instance_info`.
pub(crate) async fn enroll_with(c: &Conductor, machine: &Machine, instance_info: Value) -> String {
    let mut node = json!({"driver_info": {"kernel_append_params": machine.kernel_params()}});
    if machine.uefi {
        node["properties"] = json!({"capabilities": "boot_mode:uefi"});
    }
    enroll_node(c, &machine.mac, node, instance_info).await
}

/// A `fake-hardware` node with a port for `mac` and the fields in `node`
/// (no automated cleaning), taken to `available`, with this `instance_info`.
pub(crate) async fn enroll_node(
    c: &Conductor,
    mac: &str,
    mut node: Value,
    instance_info: Value,
) -> String {
    node["driver"] = json!("fake-hardware");
    node["name"] = json!(format!("vm-{}", mac.replace(':', "")));
    node["automated_clean"] = json!(false);
    let uuid = c.create_node(node).await["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    c.create_port(&uuid, mac).await;
    verb(c, &uuid, "manage").await;
    wait_states(c, &uuid, &["manageable"], Duration::from_secs(30)).await;
    verb(c, &uuid, "provide").await;
    wait_states(c, &uuid, &["available"], Duration::from_secs(30)).await;
    c.patch_node(
        &uuid,
        json!([{"op": "add", "path": "/instance_info", "value": instance_info}]),
    )
    .await;
    uuid
}

pub(crate) fn checksum_of(image: &str) -> String {
    std::fs::read_to_string(test_images().join(format!("{image}.sha256")))
        .unwrap()
        .trim()
        .to_string()
}

/// Power the machine on for its deploy: wait for the agent's first
/// heartbeat (timed) and for the deploy to end, active or failed. Returns
/// the machine, the node, and when it was powered on.
pub async fn power_on_and_deploy(
    c: &Conductor,
    uuid: &str,
    machine: &mut Machine,
    tag: &str,
    within: Duration,
) -> (Proc, Value, Instant) {
    let (vm, started) = machine.power_on();
    wait_for("the first heartbeat", Duration::from_secs(240), || {
        let n = c.node(uuid);
        async move {
            let n = n.await;
            n["driver_internal_info"]["agent_last_heartbeat"]
                .is_string()
                .then_some(())
        }
    })
    .await;
    eprintln!(
        "{tag}: QEMU start -> first heartbeat {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let done = wait_states(c, uuid, &["active", "deploy failed"], within).await;
    (vm, done, started)
}

async fn deploy_and_boot(uefi: bool) {
    let _vm_slot = vm_slot().await;
    let c = conductor().await;
    let port: u16 = c.url.rsplit(':').next().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (image, mac) = if uefi {
        ("uefi.qcow2", "52:54:00:e2:e0:02")
    } else {
        ("bios.qcow2", "52:54:00:e2:e0:01")
    };
    let mut machine = Machine::new(dir.path(), mac, uefi, port);
    let uuid = enroll(&c, &machine, image, &checksum_of(image)).await;
    verb(&c, &uuid, "active").await;
    wait_states(&c, &uuid, &["wait call-back"], Duration::from_secs(30)).await;

    // Power on: PXE → iPXE → the conductor's script → ramdisk → agent.
    let tag = if uefi { "uefi" } else { "bios" };
    let (mut vm, done, started) =
        power_on_and_deploy(&c, &uuid, &mut machine, tag, Duration::from_secs(300)).await;
    keep_logs(&machine, tag);
    assert_eq!(
        done["provision_state"], "active",
        "last_error: {}",
        done["last_error"]
    );
    assert_eq!(done["driver_internal_info"]["is_whole_disk_image"], true);
    // The agent powered the machine off (after syncing).
    wait_exit(&mut vm, Duration::from_secs(90))
        .await
        .expect("the VM did not power off after the deploy");
    drop(vm);
    eprintln!(
        "{tag}: deploy took {:.1} s from power on",
        started.elapsed().as_secs_f64()
    );
    if uefi {
        // install_bootloader wrote a Boot#### entry for the image's loader
        // into the machine's NVRAM (the OVMF variable store on the host).
        let vars = std::fs::read(&machine.vars).unwrap();
        let label: Vec<u8> = "ironic1"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert!(
            vars.windows(label.len()).any(|w| w == label.as_slice()),
            "no ironic1 boot entry in the NVRAM"
        );
    }

    // Power on again: the conductor now sends it to its disk, and the
    // deployed OS proves it booted.
    let (mut vm, _) = machine.power_on();
    let status = wait_exit(&mut vm, Duration::from_secs(240)).await;
    let serial = vm.log_text();
    keep_logs(&machine, tag);
    assert!(
        status.is_ok(),
        "the deployed OS did not power off:\n{serial}"
    );
    assert!(
        serial.contains(&format!("{MARKER} ")) && serial.contains(&format!("ferrite.image={tag}")),
        "the deployed image did not boot:\n{serial}"
    );
    let node = c.node(&uuid).await;
    assert_eq!(node["provision_state"], "active");
}

#[tokio::test(flavor = "multi_thread")]
async fn bios_pxe_deploy_boots_the_deployed_image() {
    deploy_and_boot(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn uefi_pxe_deploy_boots_the_deployed_image() {
    deploy_and_boot(true).await;
}

/// A wrong checksum: `deploy failed` with a readable error, the disk left
/// unbootable, and the next power-on does not boot it.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_checksum_fails_the_deploy_and_boots_nothing() {
    let _vm_slot = vm_slot().await;
    let c = conductor().await;
    let port: u16 = c.url.rsplit(':').next().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut machine = Machine::new(dir.path(), "52:54:00:e2:e0:03", false, port);
    let uuid = enroll(&c, &machine, "bios.qcow2", &"0".repeat(64)).await;
    verb(&c, &uuid, "active").await;
    let (mut vm, _) = machine.power_on();
    let failed = wait_states(
        &c,
        &uuid,
        &["deploy failed", "active"],
        Duration::from_secs(300),
    )
    .await;
    keep_logs(&machine, "bad-checksum");
    assert_eq!(failed["provision_state"], "deploy failed");
    let err = failed["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("checksum"), "{err}");
    // Powered off after the failure, as Ironic does.
    wait_exit(&mut vm, Duration::from_secs(90))
        .await
        .expect("the VM stayed on after the failed deploy");
    drop(vm);
    // The disk holds no partition table (nothing for firmware to boot) ...
    let mut head = vec![0xffu8; 512];
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::open(&machine.disk).unwrap(),
        &mut head,
        0,
    )
    .unwrap();
    assert!(
        head.iter().all(|&b| b == 0),
        "the unverified image's MBR is still on disk"
    );
    // ... and on the next power-on the conductor's script stops the machine
    // (power off, or halt where iPXE has no poweroff) instead of booting it.
    let (mut vm, _) = machine.power_on();
    wait_for(
        "the conductor's refusal on the console",
        Duration::from_secs(120),
        || {
            let serial = vm.log_text();
            async move { serial.contains("not booting its disk").then_some(()) }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let serial = vm.log_text();
    keep_logs(&machine, "bad-checksum");
    assert!(!serial.contains("Booting from Hard Disk"), "{serial}");
    assert!(!serial.contains(MARKER), "{serial}");
    let _ = vm.exited();
}
