//! Redfish power and boot override over HTTP(S) (`driver_info.redfish_*`).

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{BootDevice, PowerAction, PowerError, POWER_OFF, POWER_ON};

/// The largest Redfish answer read: a ComputerSystem resource is a few KiB.
const MAX_BODY: usize = 256 << 10;
/// Whole-request bound (connect, headers and body), as sushy's timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Redfish {
    client: reqwest::Client,
    system_url: String,
    username: Option<String>,
    password: Option<String>,
}

fn text(info: &Map<String, Value>, key: &str) -> Option<String> {
    info.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl Redfish {
    pub fn from_driver_info(info: &Map<String, Value>) -> Result<Self, PowerError> {
        let address = text(info, "redfish_address").ok_or_else(|| {
            PowerError::Config(
                "Missing the following Redfish properties in node's driver_info: redfish_address"
                    .into(),
            )
        })?;
        let address = if address.contains("://") {
            address
        } else {
            format!("https://{address}")
        };
        let system = text(info, "redfish_system_id").ok_or_else(|| {
            PowerError::Config(
                "Missing the following Redfish properties in node's driver_info: redfish_system_id"
                    .into(),
            )
        })?;
        let system_url = if system.starts_with('/') {
            format!("{}{system}", address.trim_end_matches('/'))
        } else {
            format!(
                "{}/redfish/v1/Systems/{system}",
                address.trim_end_matches('/')
            )
        };
        let verify = match info.get("redfish_verify_ca") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => {
                !matches!(s.to_lowercase().as_str(), "false" | "no" | "0" | "off")
            }
            _ => true,
        };
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(!verify)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| PowerError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            client,
            system_url,
            username: text(info, "redfish_username"),
            password: text(info, "redfish_password"),
        })
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.username {
            Some(u) => req.basic_auth(u, self.password.as_ref()),
            None => req,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Value, PowerError> {
        // Errors name the step and the HTTP status only: the URL may carry
        // credentials, and a BMC's body is whatever the address in
        // driver_info pointed at (SSRF), so neither reaches the API.
        let mut resp = self
            .auth(req)
            .send()
            .await
            .map_err(|e| PowerError::Failed(format!("Redfish {what}: {}", e.without_url())))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(PowerError::Failed(format!(
                "Redfish {what} failed: the BMC returned HTTP {status}"
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| PowerError::Failed(format!("Redfish {what}: {}", e.without_url())))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(PowerError::Failed(format!(
                    "Redfish {what} failed: the BMC's answer is larger than {MAX_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    pub async fn get_state(&self) -> Result<String, PowerError> {
        let system = self
            .send(self.client.get(&self.system_url), "get system")
            .await?;
        match system.get("PowerState").and_then(Value::as_str) {
            Some("On") | Some("PoweringOff") => Ok(POWER_ON.into()),
            Some("Off") | Some("PoweringOn") => Ok(POWER_OFF.into()),
            other => Err(PowerError::Failed(format!(
                "Redfish system has no usable PowerState: {other:?}"
            ))),
        }
    }

    pub async fn set_state(&self, action: PowerAction) -> Result<(), PowerError> {
        let reset = match action {
            PowerAction::On => "On",
            PowerAction::Off => "ForceOff",
            PowerAction::Reboot => {
                if self.get_state().await? == POWER_OFF {
                    "On"
                } else {
                    "ForceRestart"
                }
            }
        };
        let url = format!("{}/Actions/ComputerSystem.Reset", self.system_url);
        self.send(
            self.client.post(url).json(&json!({"ResetType": reset})),
            "reset",
        )
        .await
        .map(|_| ())
    }

    pub async fn set_boot_device(
        &self,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), PowerError> {
        let target = match device {
            BootDevice::Pxe => "Pxe",
            BootDevice::Disk => "Hdd",
            BootDevice::Cdrom => "Cd",
            BootDevice::Bios => "BiosSetup",
            BootDevice::Safe => return Err(PowerError::Unsupported("boot device safe", "redfish")),
        };
        let enabled = if persistent { "Continuous" } else { "Once" };
        self.send(
            self.client.patch(&self.system_url).json(&json!({"Boot": {
                "BootSourceOverrideTarget": target,
                "BootSourceOverrideEnabled": enabled,
            }})),
            "set boot device",
        )
        .await
        .map(|_| ())
    }
}
