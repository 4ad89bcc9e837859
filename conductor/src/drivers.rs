//! Hardware types this conductor accepts and the interfaces a new node gets.

/// Interfaces of a node, in Ironic's field order.
pub struct Interfaces {
    pub bios: &'static str,
    pub boot: &'static str,
    pub console: &'static str,
    pub deploy: &'static str,
    pub firmware: &'static str,
    pub inspect: &'static str,
    pub management: &'static str,
    pub network: &'static str,
    pub power: &'static str,
    pub raid: &'static str,
    pub rescue: &'static str,
    pub storage: &'static str,
    pub vendor: &'static str,
}

/// Rescue interfaces: `no-rescue` (Ironic's default) refuses the verb;
/// `agent` boots the ramdisk and has the agent finalize the rescue.
pub const NO_RESCUE: &str = "no-rescue";
pub const AGENT_RESCUE: &str = "agent";

pub const DEFAULT_HARDWARE_TYPES: &str = "ipmi,redfish,manual-management,fake-hardware";

/// Defaults per hardware type; `None` for an unknown type.
pub fn default_interfaces(driver: &str) -> Option<Interfaces> {
    let (power, management) = match driver {
        "ipmi" => ("ipmitool", "ipmitool"),
        "redfish" => ("redfish", "redfish"),
        "manual-management" => ("fake", "noop"),
        "fake-hardware" => ("fake", "fake"),
        _ => return None,
    };
    let fake = driver == "fake-hardware";
    Some(Interfaces {
        bios: if fake { "fake" } else { "no-bios" },
        boot: "ipxe",
        console: "no-console",
        deploy: "direct",
        firmware: if fake { "fake" } else { "no-firmware" },
        inspect: "agent",
        management,
        network: "noop",
        power,
        raid: "agent",
        rescue: NO_RESCUE,
        storage: "noop",
        vendor: if fake { "fake" } else { "no-vendor" },
    })
}
