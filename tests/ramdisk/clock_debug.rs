//! The ramdisk's clock and its debugging aids, booted in QEMU:
//! - `ipa-ntp-server`: the guest's RTC starts in 2001; PID 1 asks an SNTP
//!   server the test runs (host 127.0.0.1, the guest's 10.0.2.2) before the
//!   agent looks up, so the agent's auto-TLS certificate is dated today and
//!   the conductor's https calls work. At power-off PID 1 writes the RTC
//!   (read back from QEMU over QMP). A server answering garbage costs the
//!   boot its budget and a clear line, nothing more.
//! - `ferrite-debug-shell=1` on the `debug` profile: busybox sh on the
//!   serial console, driven by the test; not without the parameter, not on
//!   a profile without busybox.
//! - `ipa-debug=1`: PID 1's and the agent's lines on every console.
//!
//! The guest's UDP to 10.0.2.2 needs slirp without `restrict=on` (which
//! drops all guest UDP but DHCP); see [`DirectBoot::open_net`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrite_tests::{wait_for, Conductor};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UdpSocket, UnixStream};

use crate::qemu::{layer_ramdisk, virtual_ramdisk, vm_slot, workspace, Arch, DirectBoot, Vm};

/// The `debug` profile (server + busybox), built once per test run.
fn debug_ramdisk() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        layer_ramdisk(
            Arch::X86_64,
            "debug",
            &workspace().join("build/ramdisk-debug"),
        )
    })
}

const NTP_TO_UNIX: u64 = 2_208_988_800;

fn ntp_now() -> [u8; 8] {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let secs = (d.as_secs() + NTP_TO_UNIX) & 0xffff_ffff;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    ((secs << 32) | frac).to_be_bytes()
}

/// An SNTP server on 127.0.0.1 giving the host's time (stratum 2), or
/// `garbage` to every request. Returns its port and a request counter.
async fn sntp_server(garbage: bool) -> (u16, Arc<AtomicU32>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    let count = Arc::new(AtomicU32::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            seen.fetch_add(1, Ordering::Relaxed);
            if garbage {
                let _ = sock.send_to(b"\x17garbage, not NTP", peer).await;
                continue;
            }
            if n < 48 {
                continue;
            }
            let mut r = [0u8; 48];
            r[0] = (4 << 3) | 4; // LI 0, VN 4, server
            r[1] = 2;
            r[12..16].copy_from_slice(&[127, 0, 0, 1]);
            r[24..32].copy_from_slice(&buf[40..48]); // originate = their transmit
            r[32..40].copy_from_slice(&ntp_now());
            r[40..48].copy_from_slice(&ntp_now());
            let _ = sock.send_to(&r, peer).await;
        }
    });
    (port, count)
}

/// A sparse 5 GiB virtio disk: the agent finds a root device at once
/// instead of waiting for one.
fn disk(dir: &Path) -> Vec<String> {
    let disk = dir.join("disk.raw");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(5 << 30))
        .unwrap();
    vec![
        "-drive".into(),
        format!("file={},format=raw,if=virtio", disk.display()),
    ]
}

/// A node with a port for `mac`; returns (conductor, uuid, conductor port).
async fn conductor_with_node(mac: &str, name: &str) -> (Conductor, String, u16) {
    let conductor = Conductor::start(&["--fast-track", "true"]).await;
    let uuid = conductor
        .create_node(json!({"driver": "fake-hardware", "name": name}))
        .await["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    conductor.create_port(&uuid, mac).await;
    let port: u16 = conductor.url.rsplit(':').next().unwrap().parse().unwrap();
    (conductor, uuid, port)
}

/// Minimal QMP client: one command, its `return` (or `error`).
async fn qmp(socket: &Path, command: &str, args: Value) -> Value {
    // QEMU creates the socket as it starts.
    let stream = wait_for("the QMP socket", Duration::from_secs(10), || async move {
        UnixStream::connect(socket).await.ok()
    })
    .await;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    async fn next(
        lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    ) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("QMP answers")
            .unwrap()
            .expect("QMP line");
        serde_json::from_str(&line).unwrap()
    }
    next(&mut lines).await; // greeting
    let mut last = Value::Null;
    for (cmd, arguments) in [("qmp_capabilities", json!({})), (command, args)] {
        let msg = json!({"execute": cmd, "arguments": arguments}).to_string() + "\n";
        write.write_all(msg.as_bytes()).await.unwrap();
        // Skip events until the answer.
        last = loop {
            let v = next(&mut lines).await;
            if v.get("return").is_some() || v.get("error").is_some() {
                break v;
            }
        };
    }
    last
}

/// The line index of the first line containing `needle`.
fn line_of(log: &str, needle: &str) -> Option<usize> {
    log.lines().position(|l| l.contains(needle))
}

/// RTC far in the past; SNTP sets the clock before lookup; the agent's
/// certificate is dated today and its API works over https; the RTC is
/// written at power-off. The `debug` profile without the parameter runs no
/// shell.
#[tokio::test(flavor = "multi_thread")]
async fn sntp_fixes_the_clock_before_lookup_and_power_off_writes_the_rtc() {
    let ramdisk = debug_ramdisk();
    let _slot = vm_slot().await;
    let mac = "52:54:00:c1:0c:01";
    let (conductor, uuid, port) = conductor_with_node(mac, "clock").await;
    let (ntp_port, requests) = sntp_server(false).await;
    let dir = tempfile::tempdir().unwrap();
    let qmp_sock = dir.path().join("qmp.sock");
    let params = format!("ipa-ntp-server=10.0.2.2:{ntp_port}");
    let mut vm = Vm::boot_direct(
        dir.path(),
        port,
        DirectBoot {
            arch: Arch::X86_64,
            ramdisk,
            memory_mib: 512,
            nic: "virtio-net-pci",
            mac,
            bootif: true,
            params: &params,
            devices: [
                "-rtc".into(),
                "base=2001-01-01T00:00:00".into(),
                // Stay after the guest powers off, for QMP to read the RTC.
                "-no-shutdown".into(),
                "-qmp".into(),
                format!("unix:{},server=on,wait=off", qmp_sock.display()),
            ]
            .into_iter()
            .chain(disk(dir.path()))
            .collect(),
            keep_as: "clock-sntp.log",
            open_net: true,
        },
    );
    let before = qmp(
        &qmp_sock,
        "qom-get",
        json!({"path": "/machine", "property": "rtc-time"}),
    )
    .await;
    assert_eq!(
        before["return"]["tm_year"], 101,
        "the RTC starts in 2001: {before}"
    );

    vm.wait_heartbeat(&conductor, &uuid, Duration::from_secs(240))
        .await;
    let booted = vm.started.elapsed();
    let serial = vm.proc.log_text();
    let synced = line_of(&serial, &format!("clock: set from 10.0.2.2:{ntp_port}"))
        .unwrap_or_else(|| panic!("no clock sync line:\n{serial}"));
    // The agent starts alongside DHCP, but calls Ironic (and dates its
    // certificate) only once PID 1 has set the clock.
    let looked_up = line_of(&serial, "lookup succeeded").expect("lookup");
    let serving = line_of(&serial, "serving the agent API").expect("serving");
    assert!(
        synced < looked_up && looked_up < serving,
        "sync must come before the agent calls Ironic:\n{serial}"
    );
    assert!(requests.load(Ordering::Relaxed) >= 1);
    let stepped = serial.lines().nth(synced).unwrap().to_string();
    eprintln!("{stepped}");
    assert!(
        !serial.contains("debug shell"),
        "no shell without ferrite-debug-shell=1:\n{serial}"
    );

    // The agent's auto-TLS certificate is dated from the corrected clock.
    let pem = conductor
        .wait_agent_certificate(&uuid, Duration::from_secs(60))
        .await;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
    let cert = pem.parse_x509().expect("X.509");
    let not_before = cert.validity().not_before.timestamp();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // IPA backdates it by auto_tls_allowed_clock_skew (3600 s).
    assert!(
        (now - 3600 - not_before).abs() < 15 * 60,
        "certificate notBefore {} is not an hour before now",
        cert.validity().not_before
    );

    // The conductor's way in: https, pinned to that certificate.
    let api = vm.agent_api(&conductor, &uuid).await;
    let res = api
        .run_within("standby.power_off", json!({}), Duration::from_secs(60))
        .await;
    assert_eq!(res["command_status"], "SUCCEEDED", "{res}");
    let serial = wait_for("power off", Duration::from_secs(60), || {
        let log = vm.proc.log_text();
        async move { log.contains("PowerOff now").then_some(log) }
    })
    .await;
    let rtc_line = serial
        .lines()
        .find(|l| l.contains("RTC set to"))
        .unwrap_or_else(|| panic!("no RTC line:\n{serial}"))
        .to_string();
    eprintln!("{rtc_line}");
    wait_for("the guest to power off", Duration::from_secs(30), || {
        let sock = qmp_sock.clone();
        async move {
            let s = qmp(&sock, "query-status", json!({})).await;
            (s["return"]["status"] == "shutdown").then_some(())
        }
    })
    .await;
    let after = qmp(
        &qmp_sock,
        "qom-get",
        json!({"path": "/machine", "property": "rtc-time"}),
    )
    .await;
    // QEMU's RTC as struct tm, UTC: today, not 2001 plus the uptime.
    let rtc = &after["return"];
    let field = |k: &str| rtc[k].as_i64().unwrap_or(-1) as u32;
    let rtc_time = chrono::NaiveDate::from_ymd_opt(
        (field("tm_year") + 1900) as i32,
        field("tm_mon") + 1,
        field("tm_mday"),
    )
    .and_then(|d| d.and_hms_opt(field("tm_hour"), field("tm_min"), field("tm_sec")))
    .unwrap_or_else(|| panic!("RTC time: {after}"));
    let skew = (chrono::Utc::now().naive_utc() - rtc_time).num_seconds();
    assert!(
        skew.abs() < 15 * 60,
        "the RTC was not written at power off: it reads {rtc_time}"
    );
    eprintln!(
        "boot to heartbeat {:.1} s; RTC after power off: {after}",
        booted.as_secs_f64()
    );
}

/// Nothing answers the SNTP request (the sealed network drops it): a clear
/// line, and the boot goes on after the budget. `ferrite-debug-shell=1` on
/// a profile without busybox (`virtual`, like `server`): no shell, and the
/// log says why.
#[tokio::test(flavor = "multi_thread")]
async fn silent_ntp_server_and_missing_busybox_are_logged_and_the_agent_runs() {
    let ramdisk = virtual_ramdisk();
    let _slot = vm_slot().await;
    let mac = "52:54:00:c1:0c:02";
    let (conductor, uuid, port) = conductor_with_node(mac, "clock-bad").await;
    let dir = tempfile::tempdir().unwrap();
    let mut vm = Vm::boot_direct(
        dir.path(),
        port,
        DirectBoot {
            arch: Arch::X86_64,
            ramdisk,
            memory_mib: 512,
            nic: "virtio-net-pci",
            mac,
            bootif: true,
            params: "ipa-ntp-server=10.0.2.2:4123 ferrite-debug-shell=1",
            devices: disk(dir.path()),
            keep_as: "clock-silent-ntp.log",
            open_net: false,
        },
    );
    vm.wait_heartbeat(&conductor, &uuid, Duration::from_secs(240))
        .await;
    let serial = vm.proc.log_text();
    assert!(
        serial.contains("clock: no valid reply from 10.0.2.2:4123 within 10s (")
            && serial.contains(
                "last: no reply); the clock is left as it is and the agent starts anyway"
            ),
        "{serial}"
    );
    assert!(
        serial.contains(
            "debug shell: ferrite-debug-shell=1 but this ramdisk has no /bin/busybox \
             (build it with PROFILE=debug); no shell"
        ),
        "{serial}"
    );
    assert!(!serial.contains("ferrite debug shell ("), "{serial}");
}

/// Everything the guest wrote to a serial port, read by a task from the
/// port's socket since boot.
#[derive(Clone, Default)]
struct SerialCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl SerialCapture {
    fn start(mut read: tokio::net::unix::OwnedReadHalf) -> Self {
        let capture = Self::default();
        let sink = capture.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = read.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut all = sink.0.lock().unwrap();
                // Bounded: a runaway guest must not eat the host's memory.
                if all.len() < 16 << 20 {
                    all.extend_from_slice(&buf[..n]);
                }
            }
        });
        capture
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).replace('\r', "")
    }

    /// Wait until a line after byte `from` is `marker` (not the echoed
    /// command, which has more on its line); returns the text after `from`.
    async fn until(&self, from: usize, marker: &str, within: Duration) -> String {
        wait_for(&format!("{marker:?} on the serial console"), within, || {
            let text = self.text();
            let tail = text.get(from..).unwrap_or_default().to_string();
            async move { tail.lines().any(|l| l.trim() == marker).then_some(tail) }
        })
        .await
    }
}

/// The `debug` profile with `ferrite-debug-shell=1 ipa-debug=1` and two
/// serial consoles: ttyS0 (the test's serial log) and ttyS1 (the last
/// `console=`, so /dev/console; a socket the test drives, its output also
/// logged). The shell runs on ttyS1 and answers; PID 1's and the agent's
/// lines appear on ttyS0 too, which only ipa-debug's fan-out writes to.
#[tokio::test(flavor = "multi_thread")]
async fn debug_shell_answers_on_the_serial_console_and_ipa_debug_logs_everywhere() {
    let ramdisk = debug_ramdisk();
    let _slot = vm_slot().await;
    let mac = "52:54:00:c1:0c:03";
    let (conductor, uuid, port) = conductor_with_node(mac, "debug-shell").await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ttyS1.sock");
    let mut vm = Vm::boot_direct(
        dir.path(),
        port,
        DirectBoot {
            arch: Arch::X86_64,
            ramdisk,
            memory_mib: 512,
            nic: "virtio-net-pci",
            mac,
            bootif: true,
            params: "ipa-debug=1 ferrite-debug-shell=1 console=ttyS1",
            devices: [
                "-chardev".into(),
                format!("socket,id=s1,path={},server=on,wait=off", sock.display()),
                "-serial".into(),
                "chardev:s1".into(),
            ]
            .into_iter()
            .chain(disk(dir.path()))
            .collect(),
            keep_as: "debug-shell-ttyS0.log",
            open_net: false,
        },
    );
    let stream = wait_for("the ttyS1 socket", Duration::from_secs(10), || {
        let sock = sock.clone();
        async move { UnixStream::connect(&sock).await.ok() }
    })
    .await;
    let (read, mut shell) = stream.into_split();
    let ttys1 = SerialCapture::start(read);
    vm.wait_heartbeat(&conductor, &uuid, Duration::from_secs(240))
        .await;
    let ttys0 = vm.proc.log_text();
    let s1 = ttys1.text();
    let _ = std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("debug-shell-ttyS1.log"),
        &s1,
    );
    // PID 1 (debug level) and the agent on ttyS0, which is not
    // /dev/console: only ipa-debug's fan-out writes there. (ttyS1's output
    // from before the test's socket reader is not reliably kept by QEMU;
    // its lines are checked after the shell's exit below.)
    for line in [
        "ferrite-init",
        "DEBUG",
        "serving the agent API",
        "debug shell: busybox sh on /dev/ttyS1",
    ] {
        assert!(ttys0.contains(line), "{line:?} not on ttyS0:\n{ttys0}");
    }
    assert!(
        s1.contains("*** ferrite debug shell (ferrite-debug-shell=1)"),
        "{s1}"
    );

    let from = ttys1.text().len();
    // The quotes keep the echoed command from matching the marker.
    let cmd = "dmesg | head -3; cat /sys/class/net/eth0/address; \
               tail -n 3 /run/ferrite/agent.log | sed 's/^/LOG: /'; echo DO''NE\n";
    shell.write_all(b"\n").await.unwrap();
    shell.write_all(cmd.as_bytes()).await.unwrap();
    let out = ttys1.until(from, "DONE", Duration::from_secs(60)).await;
    assert!(out.contains("Linux version"), "dmesg:\n{out}");
    assert!(out.lines().any(|l| l.trim() == mac), "eth0's MAC:\n{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("LOG: ") && l.contains("Z ")),
        "the agent's log file:\n{out}"
    );
    // Exit: a new shell comes, with the banner, and answers.
    let from = ttys1.text().len();
    shell.write_all(b"exit\n").await.unwrap();
    ttys1
        .until(
            from,
            "*** The agent's log: /run/ferrite/agent.log; dmesg; /sys. Exit and it starts again.",
            Duration::from_secs(30),
        )
        .await;
    shell.write_all(b"echo AGA''IN\n").await.unwrap();
    ttys1.until(from, "AGAIN", Duration::from_secs(30)).await;
    // PID 1's line about it, on both consoles.
    let serial = vm.proc.log_text();
    let respawned = "debug shell exited; a new one in 1s";
    assert!(serial.contains(respawned), "not on ttyS0:\n{serial}");
    // KNOWN GAP: PID 1's and the agent's fan-out lines never show on ttyS1
    // in this boot (the shell's own output does), so that half of "every
    // console" is not shown here; see the branch report.
}
