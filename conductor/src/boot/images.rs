//! Which kernel and ramdisk a node boots: Ironic's
//! `get_agent_kernel_ramdisk(node, mode)` and `parse_driver_info(node,
//! mode)`. The deploy ramdisk comes from `driver_info.deploy_kernel`/
//! `deploy_ramdisk` or this conductor's own files; the rescue ramdisk from
//! `driver_info.rescue_kernel`/`rescue_ramdisk`, else `[conductor]
//! rescue_kernel`/`rescue_ramdisk`, else nothing (rescue is refused).

use ferrite_protocol::node::Node;
use serde_json::Value;
use tracing::warn;

use crate::config::ConductorConfig;
use crate::provision_state::ProvisionState as S;

pub const KERNEL_FILE: &str = "deploy.kernel";
pub const INITRAMFS_FILE: &str = "deploy.initramfs";

/// Ironic's `deploy_utils.rescue_or_deploy_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Deploy,
    Rescue,
}

impl Mode {
    /// `RESCUE_LIKE_STATES` boot the rescue ramdisk; everything else the
    /// deploy one.
    pub fn for_state(state: S) -> Self {
        match state {
            S::Rescuing | S::RescueWait | S::RescueFail | S::Unrescuing | S::UnrescueFail => {
                Mode::Rescue
            }
            S::Enroll
            | S::Verifying
            | S::Manageable
            | S::Available
            | S::Deploying
            | S::DeployWait
            | S::Active
            | S::DeployFail
            | S::Deleting
            | S::Cleaning
            | S::CleanWait
            | S::CleanFail
            | S::Inspecting
            | S::InspectWait
            | S::InspectFail
            | S::Rescue
            | S::Servicing
            | S::ServiceWait
            | S::ServiceHold
            | S::ServiceFail
            | S::Error
            | S::AdoptFail => Mode::Deploy,
        }
    }
}

/// What iPXE fetches for the kernel and the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamdiskUrls {
    pub kernel: String,
    pub initramfs: String,
}

fn info_str<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.driver_info
        .get(key)
        .and_then(Value::as_str)
        .filter(|v| !v.trim().is_empty())
}

fn is_http(reference: &str) -> bool {
    reference.starts_with("http://") || reference.starts_with("https://")
}

/// An http(s) URL as it is; anything else names a file in the boot
/// directory (served at `/boot/files/`).
fn url_of(reference: &str, boot_url: &str) -> String {
    if is_http(reference) {
        reference.to_string()
    } else {
        format!(
            "{boot_url}/boot/files/{}",
            reference.trim_start_matches('/')
        )
    }
}

/// Ironic's `_get_kernel_ramdisk_from_node`: both or neither; one alone is
/// ambiguous (a warning, as `error_on_ramdisk_config_inconsistency`'s
/// default) and ignored.
fn from_node<'a>(node: &'a Node, mode: &str) -> Option<(&'a str, &'a str)> {
    let (k, r) = (format!("{mode}_kernel"), format!("{mode}_ramdisk"));
    match (info_str(node, &k), info_str(node, &r)) {
        (Some(kernel), Some(ramdisk)) => Some((kernel, ramdisk)),
        (None, None) => None,
        (kernel, _) => {
            let (solo, missing) = if kernel.is_some() { (&k, &r) } else { (&r, &k) };
            warn!(
                "Node {} driver_info has an override for {solo}, but not for {missing}. This configuration is ambiguous. Node {} cannot boot a ramdisk.",
                node.uuid, node.uuid
            );
            None
        }
    }
}

/// The deploy ramdisk: `driver_info` when it holds http(s) URLs, else
/// this conductor's own `deploy.kernel`/`deploy.initramfs`.
pub fn deploy_urls(node: &Node, boot_url: &str) -> RamdiskUrls {
    let pick = |key: &str, file: &str| {
        info_str(node, key)
            .filter(|v| is_http(v))
            .map(str::to_string)
            .unwrap_or_else(|| format!("{boot_url}/boot/files/{file}"))
    };
    RamdiskUrls {
        kernel: pick("deploy_kernel", KERNEL_FILE),
        initramfs: pick("deploy_ramdisk", INITRAMFS_FILE),
    }
}

/// The rescue ramdisk's references (`rescue_kernel`, `rescue_ramdisk`),
/// or Ironic's `MissingParameterValue` text naming the absent ones.
pub fn rescue_references(
    node: &Node,
    config: &ConductorConfig,
) -> Result<(String, String), String> {
    if let Some((kernel, ramdisk)) = from_node(node, "rescue") {
        return Ok((kernel.to_string(), ramdisk.to_string()));
    }
    let configured = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    match (
        configured(&config.rescue_kernel),
        configured(&config.rescue_ramdisk),
    ) {
        (Some(kernel), Some(ramdisk)) => Ok((kernel, ramdisk)),
        (kernel, ramdisk) => {
            let missing: Vec<String> = [("rescue_kernel", kernel), ("rescue_ramdisk", ramdisk)]
                .into_iter()
                .filter(|(_, v)| v.is_none())
                .map(|(name, _)| format!("'{name}'"))
                .collect();
            Err(format!(
                "Cannot validate PXE bootloader. Some parameters were missing in node's driver_info and configuration. Missing are: [{}]",
                missing.join(", ")
            ))
        }
    }
}

/// The rescue ramdisk's URLs.
pub fn rescue_urls(
    node: &Node,
    config: &ConductorConfig,
    boot_url: &str,
) -> Result<RamdiskUrls, String> {
    let (kernel, ramdisk) = rescue_references(node, config)?;
    Ok(RamdiskUrls {
        kernel: url_of(&kernel, boot_url),
        initramfs: url_of(&ramdisk, boot_url),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: ConductorConfig,
    }

    fn config(args: &[&str]) -> ConductorConfig {
        let mut argv = vec!["ferrite-conductor"];
        argv.extend_from_slice(args);
        Cli::parse_from(argv).config
    }

    fn node(info: Value) -> Node {
        Node {
            uuid: "u1".into(),
            driver_info: info.as_object().cloned().unwrap_or_default(),
            ..Default::default()
        }
    }

    #[test]
    fn rescue_images_come_from_the_node_then_the_configuration() {
        let none = config(&[]);
        let err = rescue_urls(&node(json!({})), &none, "http://b").unwrap_err();
        assert_eq!(
            err,
            "Cannot validate PXE bootloader. Some parameters were missing in node's driver_info and configuration. Missing are: ['rescue_kernel', 'rescue_ramdisk']"
        );
        // One alone on the node is ambiguous: ignored.
        let half = node(json!({"rescue_kernel": "http://i/k"}));
        assert!(rescue_urls(&half, &none, "http://b").is_err());
        let conf = config(&[
            "--rescue-kernel",
            "rescue.kernel",
            "--rescue-ramdisk",
            "http://i/r",
        ]);
        assert_eq!(
            rescue_urls(&half, &conf, "http://b").unwrap(),
            RamdiskUrls {
                kernel: "http://b/boot/files/rescue.kernel".into(),
                initramfs: "http://i/r".into()
            }
        );
        let only_kernel = config(&["--rescue-kernel", "k"]);
        assert!(rescue_urls(&node(json!({})), &only_kernel, "http://b")
            .unwrap_err()
            .ends_with("Missing are: ['rescue_ramdisk']"));
        let own = node(json!({"rescue_kernel": "http://i/k", "rescue_ramdisk": "r.img"}));
        assert_eq!(
            rescue_urls(&own, &conf, "http://b").unwrap(),
            RamdiskUrls {
                kernel: "http://i/k".into(),
                initramfs: "http://b/boot/files/r.img".into()
            }
        );
        assert_eq!(Mode::for_state(S::RescueWait), Mode::Rescue);
        assert_eq!(Mode::for_state(S::DeployWait), Mode::Deploy);
        assert_eq!(
            deploy_urls(&own, "http://b").kernel,
            "http://b/boot/files/deploy.kernel"
        );
    }
}
