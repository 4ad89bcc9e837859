//! Smoke test of the deploy ramdisk: boot `deploy.kernel` +
//! `deploy.initramfs` in QEMU (TCG) against the real conductor. PID 1 must
//! load the virtio drivers, get slirp's DHCP lease, start the agent, which
//! looks the node up and heartbeats; `standby.power_off` must then stop
//! the VM. The serial log is kept in the test's target tmpdir.
//!
//! Network: `restrict=on` seals the guest (nothing leaves QEMU). The guest
//! reaches the conductor at 10.0.2.100:80 through a `guestfwd` command
//! (slirp refuses 10.0.2.2 under restrict), and the conductor and the test
//! reach the agent through `hostfwd` on 127.0.0.1, which is what the agent
//! advertises.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferrite_tests::{agent_client, free_port, wait_exit, AgentApi, Conductor, Proc};
use serde_json::json;

pub(crate) const MAC: &str = "52:54:00:12:34:56";

/// The VM slots and how many there are. QEMU under TCG keeps a core busy
/// per VM: at most one VM per core runs at once (each test holds its slot
/// for its whole run). `FERRITE_TEST_VMS` overrides the count (1
/// serialises the VM tests, as they ran before).
fn slots() -> &'static (tokio::sync::Semaphore, u32) {
    static SLOTS: OnceLock<(tokio::sync::Semaphore, u32)> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let slots = std::env::var("FERRITE_TEST_VMS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(cores)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        let count = u32::try_from(slots).unwrap_or(u32::MAX);
        (tokio::sync::Semaphore::new(count as usize), count)
    })
}

/// Wait for a VM slot; the VM may run while the permit lives.
pub(crate) async fn vm_slot() -> tokio::sync::SemaphorePermit<'static> {
    vm_slots(1).await
}

/// Wait for `n` VM slots at once, for machines that must run together:
/// taken one by one, two such tests could each hold one and wait forever
/// (tokio's semaphore is fair, so a test waiting for several is not
/// starved by single-slot tests). With fewer slots than `n` in all, it
/// takes them all: the machines then share them.
pub(crate) async fn vm_slots(n: u32) -> tokio::sync::SemaphorePermit<'static> {
    let (semaphore, count) = slots();
    semaphore
        .acquire_many(n.clamp(1, *count))
        .await
        .expect("the VM semaphore is never closed")
}

/// [`vm_slot`] for a test outside any runtime.
pub(crate) fn vm_slot_blocking() -> tokio::sync::SemaphorePermit<'static> {
    vm_slots_blocking(1)
}

/// [`vm_slots`] for a test outside any runtime.
pub(crate) fn vm_slots_blocking(n: u32) -> tokio::sync::SemaphorePermit<'static> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime to wait for VM slots")
        .block_on(vm_slots(n))
}

pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The machines the ramdisk is built for and booted on (`ARCH=` of
/// ramdisk-build/build).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `qemu-system-x86_64`, the default PC machine.
    X86_64,
    /// `qemu-system-aarch64 -M virt -cpu max`: no firmware, no SMBIOS.
    Arm64,
}

impl Arch {
    fn qemu(self) -> &'static str {
        match self {
            Self::X86_64 => "qemu-system-x86_64",
            Self::Arm64 => "qemu-system-aarch64",
        }
    }

    fn machine_args(self) -> &'static [&'static str] {
        match self {
            Self::X86_64 => &[],
            Self::Arm64 => &["-M", "virt", "-cpu", "max"],
        }
    }

    /// The kernel's name for the first serial port (what `-serial stdio` is).
    pub fn console(self) -> &'static str {
        match self {
            Self::X86_64 => "ttyS0",
            Self::Arm64 => "ttyAMA0",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Arm64 => "arm64",
        }
    }
}

/// Build the ramdisk from the current tree once per test run (the kernel
/// package is cached; the agent build is a no-op when fresh): the default
/// `server` profile on Debian's generic kernel.
pub(crate) fn ramdisk() -> &'static (PathBuf, PathBuf) {
    ramdisk_for(Arch::X86_64)
}

/// The server ramdisk for `arch`, built once per test run.
pub(crate) fn ramdisk_for(arch: Arch) -> &'static (PathBuf, PathBuf) {
    static X86_64: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    static ARM64: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    let (cell, out) = match arch {
        Arch::X86_64 => (&X86_64, "build/ramdisk"),
        Arch::Arm64 => (&ARM64, "build/ramdisk-arm64"),
    };
    cell.get_or_init(|| build_ramdisk(arch, "server", &workspace().join(out)))
}

/// The x86_64 `virtual` profile (no physical-hardware drivers, no firmware).
pub(crate) fn virtual_ramdisk() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        build_ramdisk(
            Arch::X86_64,
            "virtual",
            &workspace().join("build/ramdisk-virtual"),
        )
    })
}

/// Whether scripts/test's background build made the ramdisk in `out` in
/// this run, from the agent it had just built. `FERRITE_PREBUILT_RAMDISKS`
/// names the file that build appends to: `ready <dir under build/>` as each
/// ramdisk is done, then `ok` or `failed` when it ends. The first suites
/// run while it is still going, so this waits for the ramdisk's line, or
/// the end, within a bound. Any other value (`1`: not a file) takes
/// whatever is in `out`, for a developer who has just built it.
fn prebuilt(out: &Path) -> bool {
    let Some(status) = std::env::var_os("FERRITE_PREBUILT_RAMDISKS") else {
        return false;
    };
    let status = PathBuf::from(status);
    if !status.is_file() {
        return true;
    }
    let Some(name) = out.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(40 * 60);
    loop {
        let text = std::fs::read_to_string(&status).unwrap_or_default();
        let mut lines = text.lines().map(str::trim);
        if lines
            .clone()
            .any(|l| l.strip_prefix("ready ") == Some(name))
        {
            return true;
        }
        if lines.any(|l| l == "ok" || l == "failed") {
            eprintln!("scripts/test's background build ended without {name}; building it here");
            return false;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "no word of {name} in {} in 40 min; building it here",
                status.display()
            );
            return false;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

pub(crate) fn build_ramdisk(arch: Arch, profile: &str, out: &Path) -> (PathBuf, PathBuf) {
    run_build(arch, profile, out, None)
}

/// A layer profile (`debug`, `rescue`: server plus files), built as the
/// server ramdisk of this run with the layer's archive appended.
pub(crate) fn layer_ramdisk(arch: Arch, profile: &str, out: &Path) -> (PathBuf, PathBuf) {
    let (_, base_initramfs) = ramdisk_for(arch);
    let base = base_initramfs
        .parent()
        .expect("the initramfs is in its build directory");
    run_build(arch, profile, out, Some(base))
}

fn run_build(arch: Arch, profile: &str, out: &Path, layer_on: Option<&Path>) -> (PathBuf, PathBuf) {
    let outputs = (out.join("deploy.kernel"), out.join("deploy.initramfs"));
    if prebuilt(out) && outputs.0.exists() && outputs.1.exists() {
        eprintln!("{arch:?} {profile} ramdisk: prebuilt by scripts/test");
        return outputs;
    }
    let started = Instant::now();
    let mut build = Command::new(workspace().join("ramdisk-build/build"));
    build
        .env("ARCH", arch.name())
        .env("PROFILE", profile)
        .env("OUT", out);
    if let Some(base) = layer_on {
        build.env("LAYER_ON", base);
    }
    // What cargo sets for this test binary would reach the agent's build:
    // ring's build script reruns when CARGO_MANIFEST_DIR differs, relinking
    // the agent that scripts/test has just built.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || key.starts_with("CARGO_BIN_EXE_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&key.as_ref())
        {
            build.env_remove(key.as_ref());
        }
    }
    let status = build.status().expect("running ramdisk-build/build");
    assert!(
        status.success(),
        "ramdisk-build/build ARCH={} PROFILE={profile} failed",
        arch.name()
    );
    eprintln!(
        "{arch:?} {profile} ramdisk ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    outputs
}

/// slirp runs this per guest connection to 10.0.2.100:80 (shared with scripts/demo).
/// The `guestfwd` target that relays the sealed guest's 10.0.2.100:80 to
/// the conductor on 127.0.0.1:`port` (one relay process per connection).
pub(crate) fn guestfwd_to(port: u16) -> String {
    format!(
        "cmd:{} {port}",
        ferrite_tests::bin("ferrite-test-guestfwd").display()
    )
}

/// A machine booted straight into a ramdisk (no firmware, no PXE) on the
/// sealed network, its agent pointed at the conductor.
pub(crate) struct Vm {
    pub(crate) proc: Proc,
    pub(crate) started: Instant,
    pub(crate) agent_port: u16,
    keep_as: String,
}

/// What differs between the direct-boot machines.
pub(crate) struct DirectBoot<'a> {
    pub(crate) arch: Arch,
    pub(crate) ramdisk: &'a (PathBuf, PathBuf),
    pub(crate) memory_mib: u32,
    /// The NIC's QEMU model (`virtio-net-pci`, `e1000e`, ...).
    pub(crate) nic: &'a str,
    pub(crate) mac: &'a str,
    /// Name the NIC in `BOOTIF`, as PXE does; without it PID 1 and the
    /// agent find the NIC themselves.
    pub(crate) bootif: bool,
    /// Kernel parameters after the ones that reach the conductor.
    pub(crate) params: &'a str,
    /// QEMU arguments: disks, controllers, other devices.
    pub(crate) devices: Vec<String>,
    /// The serial log's name in the target tmpdir (kept pass or fail).
    pub(crate) keep_as: &'a str,
    /// slirp without `restrict=on`, which drops every guest datagram but
    /// DHCP and TFTP: the SNTP test's guest must reach 10.0.2.2 over UDP.
    /// The guest can then reach beyond the host, so only a test whose
    /// guest is pointed at nothing but 10.0.2.x may ask for it.
    pub(crate) open_net: bool,
}

impl Vm {
    /// The plain machine: `ramdisk` with a virtio NIC (BOOTIF set, as PXE
    /// does) and a virtio disk; its serial log kept as `keep_as`.
    pub(crate) fn boot_virtio(
        dir: &Path,
        conductor_port: u16,
        ramdisk: &(PathBuf, PathBuf),
        memory_mib: u32,
        keep_as: &str,
    ) -> Self {
        // A disk a deploy could use (4 GiB or more, sparse): the agent
        // finds its root device at once.
        let disk = dir.join("disk.raw");
        std::fs::File::create(&disk)
            .and_then(|f| f.set_len(5 << 30))
            .unwrap();
        Self::boot_direct(
            dir,
            conductor_port,
            DirectBoot {
                arch: Arch::X86_64,
                ramdisk,
                memory_mib,
                nic: "virtio-net-pci",
                mac: MAC,
                bootif: true,
                params: "",
                devices: vec![
                    "-drive".into(),
                    format!("file={},format=raw,if=virtio", disk.display()),
                ],
                keep_as,
                open_net: false,
            },
        )
    }

    pub(crate) fn boot_direct(dir: &Path, conductor_port: u16, spec: DirectBoot) -> Self {
        Self::boot_direct_forwarding(dir, conductor_port, spec, &[])
    }

    /// [`Self::boot_direct`], with more of the guest's TCP ports on
    /// 127.0.0.1: `(host port, guest port)` pairs (the rescue ssh server).
    pub(crate) fn boot_direct_forwarding(
        dir: &Path,
        conductor_port: u16,
        spec: DirectBoot,
        forwards: &[(u16, u16)],
    ) -> Self {
        let agent_port = free_port();
        let bootif = if spec.bootif {
            format!("BOOTIF=01-{}", spec.mac.replace(':', "-"))
        } else {
            String::new()
        };
        let append = format!(
            "console={} panic=-1 ipa-api-url=http://10.0.2.100 \
             {bootif} ipa-advertise-host=127.0.0.1 ipa-advertise-port={agent_port} \
             ipa-lookup-interval=1 {}",
            spec.arch.console(),
            spec.params
        );
        let restrict = if spec.open_net { "off" } else { "on" };
        let extra: String = forwards
            .iter()
            .map(|(host, guest)| format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"))
            .collect();
        let netdev = format!(
            "user,id=n0,restrict={restrict},hostfwd=tcp:127.0.0.1:{agent_port}-:9999{extra},\
             guestfwd=tcp:10.0.2.100:80-{}",
            guestfwd_to(conductor_port)
        );
        let mut cmd = direct_boot_from(spec.arch, spec.ramdisk, spec.memory_mib, &append);
        cmd.args(["-netdev", &netdev])
            .args([
                "-device",
                &format!("{},netdev=n0,mac={}", spec.nic, spec.mac),
            ])
            .args(&spec.devices);
        let started = Instant::now();
        let proc = Proc::spawn(cmd, dir.join("serial.log"));
        Self {
            proc,
            started,
            agent_port,
            keep_as: spec.keep_as.to_string(),
        }
    }
}

impl Vm {
    /// Wait for the agent's first heartbeat at the conductor; returns the
    /// node's `driver_internal_info`. A machine that stops first fails the
    /// test at once, with its serial log.
    pub(crate) async fn wait_heartbeat(
        &mut self,
        conductor: &Conductor,
        uuid: &str,
        within: Duration,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let internal = conductor.node(uuid).await["driver_internal_info"].clone();
            if internal["agent_last_heartbeat"].is_string() {
                return internal;
            }
            if let Some(status) = self.proc.exited() {
                panic!(
                    "QEMU exited ({status}) before a heartbeat:\n{}",
                    self.proc.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no heartbeat within {within:?}:\n{}",
                self.proc.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The agent's command API, once the conductor holds its certificate.
    pub(crate) async fn agent_api(&self, conductor: &Conductor, uuid: &str) -> AgentApi {
        let pem = conductor
            .wait_agent_certificate(uuid, Duration::from_secs(60))
            .await;
        AgentApi {
            client: agent_client(Some(&pem)).unwrap(),
            base: format!("https://127.0.0.1:{}", self.agent_port),
            token: conductor.agent_token(uuid).expect("token"),
        }
    }

    /// `standby.power_off` through the agent's API, as the conductor does
    /// (retried while the agent is busy with the conductor's first
    /// command): QEMU must then exit cleanly, without a kernel panic.
    pub(crate) async fn power_off(&mut self, api: &AgentApi, within: Duration) {
        let res = api.run_within("standby.power_off", json!({}), within).await;
        assert_eq!(res["command_status"], "SUCCEEDED", "{res}");
        let status = wait_exit(&mut self.proc, within)
            .await
            .expect("QEMU did not exit after power_off");
        // A guest poweroff ends QEMU with 0 (a panic would too, but then
        // the log says so).
        assert!(status.success(), "{status:?}");
        let serial = self.proc.log_text();
        assert!(!serial.contains("Kernel panic"), "{serial}");
    }
}

/// QEMU (TCG, serial on stdout, no default devices) booting the deploy
/// ramdisk directly with `append`; the caller adds disks and NICs.
pub fn direct_boot(memory_mib: u32, append: &str) -> Command {
    direct_boot_from(Arch::X86_64, ramdisk(), memory_mib, append)
}

/// [`direct_boot`] of a given machine, kernel and initramfs.
pub(crate) fn direct_boot_from(
    arch: Arch,
    (kernel, initrd): &(PathBuf, PathBuf),
    memory_mib: u32,
    append: &str,
) -> Command {
    let mut cmd = Command::new(arch.qemu());
    cmd.args(arch.machine_args())
        .args(["-accel", "tcg", "-m", &memory_mib.to_string()])
        .args([
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", append]);
    cmd
}

impl Drop for Vm {
    /// Keep the serial log (pass or fail) where CI can pick it up.
    fn drop(&mut self) {
        let dest = Path::new(env!("CARGO_TARGET_TMPDIR")).join(&self.keep_as);
        let _ = std::fs::copy(&self.proc.log, &dest);
        eprintln!("serial log: {}", dest.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ramdisk_boots_heartbeats_and_powers_off() {
    let _vm_slot = vm_slot().await;
    let conductor = Conductor::start(&["--fast-track", "true"]).await;
    let node = conductor
        .create_node(json!({"driver": "fake-hardware", "name": "qemu-0"}))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    conductor.create_port(&uuid, MAC).await;
    let port: u16 = conductor.url.rsplit(':').next().unwrap().parse().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut vm = Vm::boot_virtio(dir.path(), port, ramdisk(), 512, "qemu-serial.log");
    {
        // Lookup and heartbeat through the sealed network.
        let internal = vm
            .wait_heartbeat(&conductor, &uuid, Duration::from_secs(180))
            .await;
        eprintln!(
            "QEMU start -> first heartbeat: {:.1} s",
            vm.started.elapsed().as_secs_f64()
        );
        let agent_url = internal["agent_url"].as_str().unwrap_or_default();
        assert!(
            agent_url.ends_with(&format!("://127.0.0.1:{}", vm.agent_port)),
            "{internal}"
        );
        let serial = vm.proc.log_text();
        assert!(
            serial.contains("10.0.2.15/24 from 10.0.2.2"),
            "no lease:\n{serial}"
        );
        assert!(serial.contains("agent started, pid"), "{serial}");

        // standby.power_off through the agent's API, as the conductor does.
        let api = vm.agent_api(&conductor, &uuid).await;
        vm.power_off(&api, Duration::from_secs(60)).await;
        let serial = vm.proc.log_text();
        assert!(serial.contains("PowerOff now"), "{serial}");
        assert!(!serial.contains("Kernel panic"), "{serial}");
    }
}
