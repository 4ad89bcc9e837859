//! Power and boot-device control per node, chosen by `power_interface`:
//! `fake` (state kept on the node: the harness or an operator powers the
//! machine), `ipmitool` (Ironic's ipmitool driver), `redfish` (HTTP).

pub mod ipmi;
pub mod redfish;

use ferrite_protocol::node::Node;

use crate::metrics::BmcMetrics;

pub const POWER_ON: &str = "power on";
pub const POWER_OFF: &str = "power off";
/// Ironic's `[conductor]power_state_change_timeout`.
const POWER_STATE_CHANGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    On,
    Off,
    Reboot,
}

impl PowerAction {
    /// `PUT /v1/nodes/{id}/states/power` targets.
    pub fn from_target(target: &str) -> Option<Self> {
        Some(match target {
            "power on" => Self::On,
            "power off" | "soft power off" => Self::Off,
            "rebooting" | "soft rebooting" => Self::Reboot,
            _ => return None,
        })
    }

    /// The power state the node is in afterwards.
    pub fn result(self) -> &'static str {
        match self {
            Self::On | Self::Reboot => POWER_ON,
            Self::Off => POWER_OFF,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDevice {
    Pxe,
    Disk,
    Cdrom,
    Bios,
    Safe,
}

impl BootDevice {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pxe" => Self::Pxe,
            "disk" => Self::Disk,
            "cdrom" => Self::Cdrom,
            "bios" => Self::Bios,
            "safe" => Self::Safe,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Pxe => "pxe",
            Self::Disk => "disk",
            Self::Cdrom => "cdrom",
            Self::Bios => "bios",
            Self::Safe => "safe",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    #[error("missing or invalid driver_info: {0}")]
    Config(String),
    #[error("{0}")]
    Failed(String),
    #[error("{0} is not supported by the {1} interface")]
    Unsupported(&'static str, &'static str),
}

/// A node's power interface, ready to use.
pub enum PowerDriver {
    Fake,
    Ipmi(ipmi::Ipmi),
    Redfish(redfish::Redfish),
}

impl PowerDriver {
    pub fn for_node(node: &Node) -> Result<Self, PowerError> {
        match node.power_interface.as_deref().unwrap_or("fake") {
            "fake" => Ok(Self::Fake),
            "ipmitool" => Ok(Self::Ipmi(ipmi::Ipmi::from_driver_info(&node.driver_info)?)),
            "redfish" => Ok(Self::Redfish(redfish::Redfish::from_driver_info(
                &node.driver_info,
            )?)),
            other => Err(PowerError::Config(format!(
                "unknown power interface {other}"
            ))),
        }
    }

    pub fn interface(&self) -> &'static str {
        match self {
            Self::Fake => "fake",
            Self::Ipmi(_) => "ipmitool",
            Self::Redfish(_) => "redfish",
        }
    }

    /// The current power state; `fake` reports what the node records.
    pub async fn get_state(&self, node: &Node, bmc: &BmcMetrics) -> Result<String, PowerError> {
        match self {
            Self::Fake => Ok(node
                .power_state
                .clone()
                .unwrap_or_else(|| POWER_OFF.to_string())),
            Self::Ipmi(i) => self.timed(bmc, "get_power_state", i.get_state()).await,
            Self::Redfish(r) => self.timed(bmc, "get_power_state", r.get_state()).await,
        }
    }

    /// Returns the resulting power state to record on the node. Real BMCs
    /// act with a delay: like Ironic (`power_state_change_timeout`), wait
    /// until the BMC reports the state the action leads to.
    pub async fn set_state(
        &self,
        action: PowerAction,
        bmc: &BmcMetrics,
    ) -> Result<&'static str, PowerError> {
        let want = action.result();
        let read = || async {
            match self {
                Self::Fake => Ok(want.to_string()),
                Self::Ipmi(i) => self.timed(bmc, "get_power_state", i.get_state()).await,
                Self::Redfish(r) => self.timed(bmc, "get_power_state", r.get_state()).await,
            }
        };
        match self {
            Self::Fake => return Ok(want),
            Self::Ipmi(i) => {
                self.timed(bmc, "set_power_state", i.set_state(action))
                    .await?
            }
            Self::Redfish(r) => {
                self.timed(bmc, "set_power_state", r.set_state(action))
                    .await?
            }
        }
        let deadline = std::time::Instant::now() + POWER_STATE_CHANGE_TIMEOUT;
        loop {
            let now = read().await?;
            if now == want {
                return Ok(want);
            }
            if std::time::Instant::now() >= deadline {
                return Err(PowerError::Failed(format!(
                    "power state did not change to {want} within {}s (still {now})",
                    POWER_STATE_CHANGE_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    pub async fn set_boot_device(
        &self,
        device: BootDevice,
        persistent: bool,
        bmc: &BmcMetrics,
    ) -> Result<(), PowerError> {
        match self {
            Self::Fake => Ok(()),
            Self::Ipmi(i) => {
                self.timed(
                    bmc,
                    "set_boot_device",
                    i.set_boot_device(device, persistent),
                )
                .await
            }
            Self::Redfish(r) => {
                self.timed(
                    bmc,
                    "set_boot_device",
                    r.set_boot_device(device, persistent),
                )
                .await
            }
        }
    }

    /// One call to the BMC, timed (the fake interface has none).
    async fn timed<T>(
        &self,
        bmc: &BmcMetrics,
        call: &'static str,
        run: impl std::future::Future<Output = Result<T, PowerError>>,
    ) -> Result<T, PowerError> {
        let started = std::time::Instant::now();
        let result = run.await;
        bmc.observe(self.interface(), call, started.elapsed(), result.is_ok());
        result
    }
}
