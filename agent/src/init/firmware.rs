//! Firmware for drivers, without udev. The kernel reads `/lib/firmware`
//! itself; what is missing there it reports in its log ("Direct firmware
//! load for X failed"), which PID 1 turns into a warning naming the driver.
//! A driver that asks for the user-space fallback gets an answer at once
//! (the file, or "not found"), instead of waiting 60 s for a udev that is
//! not there.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

pub const FIRMWARE_DIR: &str = "/lib/firmware";
/// The largest firmware file served through the fallback (the largest in
/// Debian's firmware packages is under 32 MiB).
const MAX_FIRMWARE_BYTES: u64 = 64 << 20;

/// A failed direct firmware load, from a kernel log line such as
/// `bnx2x 0000:01:00.0: Direct firmware load for bnx2x/bnx2x-e2-7.13.21.0.fw failed with error -2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingFirmware {
    pub driver: String,
    pub device: String,
    pub file: String,
    pub error: String,
}

pub fn parse_missing(line: &str) -> Option<MissingFirmware> {
    const MARK: &str = "Direct firmware load for ";
    let (prefix, rest) = line.split_once(MARK)?;
    let (file, tail) = rest.split_once(" failed")?;
    let error = tail
        .trim()
        .strip_prefix("with error ")
        .unwrap_or(tail.trim())
        .to_string();
    let mut words = prefix.split_whitespace();
    let driver = words.next().unwrap_or("kernel").trim_end_matches(':');
    let device = words.next().unwrap_or("").trim_end_matches(':');
    Some(MissingFirmware {
        driver: driver.to_string(),
        device: device.to_string(),
        file: file.trim().to_string(),
        error,
    })
}

/// The message text of a `/dev/kmsg` record (`prio,seq,usec,flags;text`,
/// then continuation lines with the device's properties).
pub fn kmsg_text(record: &str) -> Option<&str> {
    let (_, text) = record.split_once(';')?;
    text.lines().next()
}

/// Follow the kernel log for as long as PID 1 lives (a thread of its own:
/// reads of /dev/kmsg block) and warn of every missing firmware file.
pub fn watch_kernel_log() {
    let spawned = std::thread::Builder::new()
        .name("kmsg".into())
        .spawn(|| {
            let mut kmsg = match File::open("/dev/kmsg") {
                Ok(f) => f,
                Err(e) => {
                    warn!("cannot follow the kernel log (/dev/kmsg): {e}; missing firmware is not reported");
                    return;
                }
            };
            // One record per read; 8 KiB is the kernel's limit for one.
            let mut buf = vec![0u8; 8192];
            let mut failures = 0u32;
            loop {
                match kmsg.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        failures = 0;
                        let record = String::from_utf8_lossy(&buf[..n]);
                        if let Some(m) = kmsg_text(&record).and_then(parse_missing) {
                            warn!(
                                "firmware {} is missing for driver {} ({}): error {}; \
                                 the device may not work (build the ramdisk with the firmware package that has it)",
                                m.file, m.driver, m.device, m.error
                            );
                        }
                    }
                    // Records overwritten before we read them.
                    Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        failures += 1;
                        if failures > 10 {
                            warn!("kernel log: {e}; no longer following it");
                            return;
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        warn!("kernel log follower: {e}");
    }
}

/// Answer a firmware fallback request (`SUBSYSTEM=firmware` uevent at
/// `/sys<devpath>`): write the file from `firmware_dir`, or tell the kernel
/// there is none.
pub fn serve_fallback(sysfs: &Path, devpath: &str, name: &str, firmware_dir: &Path) {
    let dir = sysfs.join(devpath.trim_start_matches('/'));
    match serve(&dir, name, firmware_dir) {
        Ok(bytes) => info!("firmware {name}: {bytes} bytes loaded through the fallback"),
        Err(e) => {
            warn!("firmware {name} is missing: {e}");
            let _ = write_loading(&dir, "-1");
        }
    }
}

fn serve(dir: &Path, name: &str, firmware_dir: &Path) -> io::Result<u64> {
    let path = firmware_path(firmware_dir, name)?;
    let mut file = File::open(&path)?;
    if file.metadata()?.len() > MAX_FIRMWARE_BYTES {
        return Err(io::Error::other(format!(
            "{} is larger than {MAX_FIRMWARE_BYTES} bytes",
            path.display()
        )));
    }
    write_loading(dir, "1")?;
    let mut data = OpenOptions::new().write(true).open(dir.join("data"))?;
    let copied = io::copy(&mut file, &mut data)?;
    write_loading(dir, "0")?;
    Ok(copied)
}

/// `name` under `firmware_dir`, refusing names that climb out of it.
fn firmware_path(firmware_dir: &Path, name: &str) -> io::Result<PathBuf> {
    let rel = Path::new(name);
    if name.is_empty()
        || rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing firmware name {name:?}"),
        ));
    }
    Ok(firmware_dir.join(rel))
}

fn write_loading(dir: &Path, value: &str) -> io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(dir.join("loading"))?
        .write_all(value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_lines_about_missing_firmware() {
        let rec = "4,612,5140900,-;e100 0000:00:05.0: Direct firmware load for e100/d101m_ucode.bin failed with error -2\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:05.0\n";
        let m = parse_missing(kmsg_text(rec).unwrap()).unwrap();
        assert_eq!(
            m,
            MissingFirmware {
                driver: "e100".into(),
                device: "0000:00:05.0".into(),
                file: "e100/d101m_ucode.bin".into(),
                error: "-2".into(),
            }
        );
        assert_eq!(parse_missing("e100 0000:00:05.0: link up"), None);
        assert_eq!(kmsg_text("garbage without a separator"), None);
    }

    #[test]
    fn fallback_writes_the_file_or_refuses() {
        let root = tempfile::tempdir().unwrap();
        let fw = root.path().join("firmware");
        fs::create_dir_all(fw.join("e100")).unwrap();
        fs::write(fw.join("e100/d101m_ucode.bin"), b"ucode").unwrap();
        let sys = root.path().join("sys");
        let dev = sys.join("devices/x/firmware/y");
        fs::create_dir_all(&dev).unwrap();
        fs::write(dev.join("loading"), "").unwrap();
        fs::write(dev.join("data"), "").unwrap();

        serve_fallback(&sys, "/devices/x/firmware/y", "e100/d101m_ucode.bin", &fw);
        assert_eq!(fs::read(dev.join("data")).unwrap(), b"ucode");
        // The last write to `loading` is 0: done.
        assert_eq!(fs::read_to_string(dev.join("loading")).unwrap(), "0");

        serve_fallback(&sys, "/devices/x/firmware/y", "e100/missing.bin", &fw);
        assert_eq!(fs::read_to_string(dev.join("loading")).unwrap(), "-1");
        serve_fallback(&sys, "/devices/x/firmware/y", "../../etc/shadow", &fw);
        assert_eq!(fs::read_to_string(dev.join("loading")).unwrap(), "-1");
    }
}
