//! IPA's `usb-devices` collector: `{product, vendor, handle}` for the USB
//! devices lshw files under class `generic` (IPA takes lshw's `usb` nodes
//! of that class), read from `/sys/bus/usb/devices` instead of lshw.
//!
//! lshw classes a device by its class code, or by its first interface's
//! when the device defers to them (0): hubs are `bus`, HID `input`, mass
//! storage `storage`, audio and video `multimedia`, communication and
//! wireless `communication`, printers `printer`; everything else (vendor
//! specific, smart card, CDC data, diagnostic, ...) is `generic`. lshw's
//! handle is `USB:<bus>:<device number>`.

use std::path::Path;

use serde::Serialize;
use tracing::debug;

use super::{list_dir, read_attr, CollectorError};

/// Where the devices are, under the sysfs root.
pub const DEVICES_DIR: &str = "bus/usb/devices";
/// What is read in each device directory.
pub const DEVICE_FILES: &[&str] = &[
    "busnum",
    "devnum",
    "product",
    "manufacturer",
    "bDeviceClass",
];
/// What is read in each interface directory.
pub const INTERFACE_FILES: &[&str] = &["bInterfaceClass"];

/// One entry of `usb_devices` (IPA's `USBInfo`; empty strings when unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsbDevice {
    pub product: String,
    pub vendor: String,
    pub handle: String,
}

/// Class codes lshw gives a class other than `generic`.
const NAMED_CLASSES: &[u8] = &[0x01, 0x02, 0x03, 0x07, 0x08, 0x09, 0x0e, 0xe0];

fn hex_byte(path: &Path) -> Option<u8> {
    u8::from_str_radix(read_attr(path).ok()?.trim_start_matches("0x"), 16).ok()
}

/// The class lshw looks at: the device's, or its first interface's.
fn effective_class(root: &Path, name: &str) -> Option<u8> {
    let dir = root.join(name);
    match hex_byte(&dir.join("bDeviceClass"))? {
        0 => {
            let prefix = format!("{name}:");
            let first = list_dir(root)
                .ok()?
                .into_iter()
                .find(|n| n.starts_with(&prefix))?;
            hex_byte(&root.join(first).join("bInterfaceClass"))
        }
        class => Some(class),
    }
}

/// The generic USB devices; an error only when the bus cannot be listed
/// (no USB controller: IPA then reports nothing either).
pub fn collect(sysfs: &Path) -> Result<Vec<UsbDevice>, CollectorError> {
    let root = sysfs.join(DEVICES_DIR);
    let mut out = Vec::new();
    for name in list_dir(&root)? {
        // Interfaces are `<device>:<config>.<n>`; devices have a bus number.
        if name.contains(':') {
            continue;
        }
        let dir = root.join(&name);
        let (Ok(bus), Ok(dev)) = (
            read_attr(&dir.join("busnum")),
            read_attr(&dir.join("devnum")),
        ) else {
            continue;
        };
        let class = effective_class(&root, &name);
        if class.is_some_and(|c| NAMED_CLASSES.contains(&c)) {
            debug!(device = %name, ?class, "USB device of a named lshw class");
            continue;
        }
        out.push(UsbDevice {
            product: read_attr(&dir.join("product")).unwrap_or_default(),
            vendor: read_attr(&dir.join("manufacturer")).unwrap_or_default(),
            handle: format!("USB:{bus}:{dev}"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn device(
        root: &Path,
        name: &str,
        bus: u8,
        dev: u8,
        class: &str,
        strings: Option<(&str, &str)>,
    ) {
        let dir = root.join(DEVICES_DIR).join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("busnum"), format!("{bus}\n")).unwrap();
        fs::write(dir.join("devnum"), format!("{dev}\n")).unwrap();
        fs::write(dir.join("bDeviceClass"), format!("{class}\n")).unwrap();
        if let Some((product, vendor)) = strings {
            fs::write(dir.join("product"), format!("{product}\n")).unwrap();
            fs::write(dir.join("manufacturer"), format!("{vendor}\n")).unwrap();
        }
    }

    fn interface(root: &Path, name: &str, class: &str) {
        let dir = root.join(DEVICES_DIR).join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("bInterfaceClass"), format!("{class}\n")).unwrap();
    }

    /// A server's USB as sysfs shows it: root hubs, a rate-matching hub,
    /// the BMC's virtual keyboard/mouse (HID), its virtual media (mass
    /// storage), a vendor-specific device and a smart-card reader.
    #[test]
    fn only_lshw_generic_devices() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        device(
            sys,
            "usb1",
            1,
            1,
            "09",
            Some(("EHCI Host Controller", "Linux 6.1.0 ehci_hcd")),
        );
        interface(sys, "1-0:1.0", "09");
        device(sys, "1-1", 1, 2, "09", None);
        interface(sys, "1-1:1.0", "09");
        device(
            sys,
            "1-1.3",
            1,
            3,
            "00",
            Some(("Virtual Keyboard and Mouse", "American Megatrends Inc.")),
        );
        interface(sys, "1-1.3:1.0", "03");
        interface(sys, "1-1.3:1.1", "03");
        device(
            sys,
            "1-1.4",
            1,
            4,
            "00",
            Some(("Virtual Cdrom Device", "American Megatrends Inc.")),
        );
        interface(sys, "1-1.4:1.0", "08");
        device(
            sys,
            "2-2",
            2,
            5,
            "ff",
            Some(("Sunrise Point USB debug", "Intel Corp.")),
        );
        device(sys, "2-3", 2, 7, "00", None);
        interface(sys, "2-3:1.0", "0b");
        assert_eq!(
            collect(sys).unwrap(),
            [
                UsbDevice {
                    product: "Sunrise Point USB debug".into(),
                    vendor: "Intel Corp.".into(),
                    handle: "USB:2:5".into(),
                },
                UsbDevice {
                    product: String::new(),
                    vendor: String::new(),
                    handle: "USB:2:7".into(),
                },
            ]
        );
        let json = serde_json::to_value(collect(sys).unwrap()).unwrap();
        assert_eq!(json[0]["handle"], "USB:2:5");
        assert!(collect(&sys.join("nothing")).is_err());
    }
}
