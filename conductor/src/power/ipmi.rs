//! IPMI through `ipmitool`, as Ironic's ipmitool power and management
//! interfaces drive it (`driver_info.ipmi_*`).

use std::time::Duration;

use serde_json::{Map, Value};
use tokio::process::Command;

use super::{BootDevice, PowerAction, PowerError, POWER_OFF, POWER_ON};

pub struct Ipmi {
    address: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    interface: String,
}

fn text(info: &Map<String, Value>, key: &str) -> Option<String> {
    match info.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Ipmi {
    pub fn from_driver_info(info: &Map<String, Value>) -> Result<Self, PowerError> {
        let address = text(info, "ipmi_address").ok_or_else(|| {
            PowerError::Config(
                "Missing the following IPMI credentials in node's driver_info: ['ipmi_address']"
                    .into(),
            )
        })?;
        let port = match text(info, "ipmi_port") {
            None => 623,
            Some(p) => p
                .parse()
                .map_err(|_| PowerError::Config(format!("IPMI port is not an integer: {p}")))?,
        };
        let interface = match text(info, "ipmi_protocol_version").as_deref() {
            None | Some("2.0") => "lanplus".to_string(),
            Some("1.5") => "lan".to_string(),
            Some(v) => {
                return Err(PowerError::Config(format!(
                "Invalid IPMI protocol version value {v}, the valid value can be one of 1.5, 2.0"
            )))
            }
        };
        Ok(Self {
            address,
            port,
            username: text(info, "ipmi_username"),
            password: text(info, "ipmi_password"),
            interface,
        })
    }

    async fn run(&self, args: &[&str]) -> Result<String, PowerError> {
        let mut cmd = Command::new("ipmitool");
        cmd.arg("-I")
            .arg(&self.interface)
            .arg("-H")
            .arg(&self.address)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-R", "3", "-N", "2"]);
        if let Some(u) = &self.username {
            cmd.arg("-U").arg(u);
        }
        // The password goes through the environment, not the process list.
        cmd.arg("-E")
            .env("IPMI_PASSWORD", self.password.clone().unwrap_or_default());
        cmd.args(args).kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .map_err(|_| PowerError::Failed("ipmitool timed out".into()))?
            .map_err(|e| PowerError::Failed(format!("cannot run ipmitool: {e}")))?;
        if !out.status.success() {
            return Err(PowerError::Failed(format!(
                "ipmitool {} failed: {}",
                args.join(" "),
                short_line(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub async fn get_state(&self) -> Result<String, PowerError> {
        let out = self.run(&["power", "status"]).await?;
        parse_power_status(&out).map(str::to_string).ok_or_else(|| {
            PowerError::Failed(format!(
                "unexpected ipmitool output: {}",
                short_line(out.as_bytes())
            ))
        })
    }

    pub async fn set_state(&self, action: PowerAction) -> Result<(), PowerError> {
        let arg = match action {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::Reboot => "cycle",
        };
        if action == PowerAction::Reboot && self.get_state().await? == POWER_OFF {
            // `power cycle` fails on a machine that is off.
            self.run(&["power", "on"]).await?;
            return Ok(());
        }
        self.run(&["power", arg]).await.map(|_| ())
    }

    pub async fn set_boot_device(
        &self,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), PowerError> {
        let dev = match device {
            BootDevice::Pxe => "pxe",
            BootDevice::Disk => "disk",
            BootDevice::Cdrom => "cdrom",
            BootDevice::Bios => "bios",
            BootDevice::Safe => "safe",
        };
        let mut args = vec!["chassis", "bootdev", dev];
        if persistent {
            args.push("options=persistent");
        }
        self.run(&args).await.map(|_| ())
    }
}

/// `Chassis Power is on` → `power on`.
pub fn parse_power_status(out: &str) -> Option<&'static str> {
    let lower = out.to_lowercase();
    if lower.contains("chassis power is on") {
        Some(POWER_ON)
    } else if lower.contains("chassis power is off") {
        Some(POWER_OFF)
    } else {
        None
    }
}

/// The first line of ipmitool's output, cut short: what the BMC answered
/// must not flow into API errors beyond a status line.
fn short_line(out: &[u8]) -> String {
    const MAX: usize = 160;
    let text = String::from_utf8_lossy(out);
    let line = text.trim().lines().next().unwrap_or_default();
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn driver_info_rules() {
        let ok = json!({"ipmi_address": "10.0.0.5", "ipmi_port": "6230", "ipmi_username": "admin"});
        let i = Ipmi::from_driver_info(ok.as_object().unwrap()).unwrap();
        assert_eq!((i.port, i.interface.as_str()), (6230, "lanplus"));
        let missing = json!({"ipmi_username": "admin"});
        let err = Ipmi::from_driver_info(missing.as_object().unwrap())
            .err()
            .unwrap();
        assert!(err.to_string().contains("ipmi_address"));
        let bad_port = json!({"ipmi_address": "h", "ipmi_port": "x"});
        assert!(Ipmi::from_driver_info(bad_port.as_object().unwrap()).is_err());
        assert_eq!(parse_power_status("Chassis Power is on\n"), Some(POWER_ON));
        assert_eq!(
            parse_power_status("Chassis Power is off\n"),
            Some(POWER_OFF)
        );
        assert_eq!(parse_power_status("garbage"), None);
    }
}
