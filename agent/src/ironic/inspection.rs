//! In-band inspection before lookup (IPA's `inspector.inspect`): run the
//! collectors, post everything to `/v1/continue_inspection` (or the
//! configured callback), and hand the node UUID Ironic returns to lookup.
//! No collector fails the inspection: one without data logs and leaves its
//! key out, an unknown name is logged and skipped, so `error` stays null
//! and Ironic always gets what could be read.

use std::time::Duration;

use anyhow::{anyhow, Context};
use base64::Engine;
use ferrite_protocol::inspection::{
    InspectionConfiguration, InspectionData, InspectionResponse, ManagerVersion,
};
use ferrite_protocol::node::normalize_mac;
use ferrite_protocol::version::REQUEST_ID_HEADER;
use reqwest::StatusCode;
use tracing::{debug, error, info, warn};
use url::Url;

use crate::commands::log::build_archive;
use crate::config::Config;
use crate::hardware::collectors::{self, dmi, extra, numa, pci, usb};
use crate::hardware::inventory::{self, guess_root_disk, net};
use crate::state::AgentContext;

/// tenacity `stop_after_attempt(5)`.
const ATTEMPTS: u32 = 5;
/// IPA polls the NICs for DHCP addresses this often.
const DHCP_POLL: Duration = Duration::from_secs(2);

/// Run inspection if it is configured; the node UUID if Ironic gave one.
/// Never fails: IPA logs inspection errors and goes on to lookup.
pub async fn inspect(ctx: &std::sync::Arc<AgentContext>) -> Option<String> {
    let urls = ctx.config.inspection_urls();
    if urls.is_empty() {
        debug!("inspection is disabled, skipping");
        return None;
    }
    let collectors = ctx.config.collectors();
    info!(?collectors, "inspection is enabled");
    let c = ctx.clone();
    let collected = tokio::task::spawn_blocking(move || collect(&c, &collectors)).await;
    let data = match collected {
        Ok(data) => data,
        Err(e) => {
            error!(error = %e, "inspection collectors crashed");
            return None;
        }
    };
    match post(&ctx.config, &urls, &data).await {
        Ok(Some(resp)) => {
            let uuid = resp.node_uuid();
            info!(node = ?uuid, "inspection finished successfully");
            uuid
        }
        Ok(None) => {
            error!(
                "Failed to perform inspection: stopping inspection, as inspector returned an error"
            );
            None
        }
        Err(e) => {
            error!(error = %format!("{e:#}"), "Failed to perform inspection");
            None
        }
    }
}

/// Run the collectors in order.
/// An unknown collector name is logged and skipped (IPA would fail the
/// inspection on it); the optional collectors leave their key out when
/// they have nothing to report, and never fail the inspection.
fn collect(ctx: &AgentContext, collectors: &[String]) -> InspectionData {
    let mut data = InspectionData::default();
    for name in collectors {
        match name.as_str() {
            "default" => collect_default(ctx, collectors, &mut data),
            // Last in IPA's chain so the archive holds the inspection's own log.
            "logs" => match build_archive(ctx) {
                Ok(tgz) => data.logs = Some(base64::engine::general_purpose::STANDARD.encode(tgz)),
                Err(e) => warn!(error = %e, "failed to collect the logs for inspection"),
            },
            // IPA's `lldp` collector: raw TLVs per interface, outside the inventory.
            "lldp" => {
                let names: Vec<String> =
                    net::collect(&ctx.config.sysfs_root, &net::Addresses::new())
                        .into_iter()
                        .map(|i| i.name)
                        .collect();
                let raw = inventory::lldp::collect(&names, ctx.config.lldp_timeout);
                data.lldp_raw = Some(serde_json::Value::Object(
                    raw.iter()
                        .map(|(k, v)| (k.clone(), inventory::lldp::to_json(v)))
                        .collect(),
                ));
            }
            "pci-devices" => {
                data.pci_devices = reported(name, pci::collect(&ctx.config.sysfs_root))
            }
            "numa-topology" => {
                let found = numa::collect(&ctx.config.sysfs_root).transpose();
                if found.is_none() {
                    warn!(collector = %name, "no NUMA node directory; nothing to report");
                }
                data.numa_topology = found.and_then(|r| reported(name, r));
            }
            "dmi-decode" => data.dmi = reported(name, Ok(dmi_or_empty(&ctx.config))),
            // No USB bus is no USB device (lshw then finds none for IPA).
            "usb-devices" => {
                let found = usb::collect(&ctx.config.sysfs_root).unwrap_or_else(|e| {
                    debug!(error = %e, "no USB devices");
                    Vec::new()
                });
                data.usb_devices = reported(name, Ok(found));
            }
            "extra-hardware" => data.data = reported(name, Ok(extra_hardware(ctx, &data))),
            other => warn!(
                collector = other,
                "unknown inspection collector, skipping it"
            ),
        }
    }
    data
}

/// A collector's result as its JSON value; a failure is logged and gives
/// no key, so Ironic stores the rest.
fn reported<T: serde::Serialize>(
    name: &str,
    found: Result<T, collectors::CollectorError>,
) -> Option<serde_json::Value> {
    let value = found
        .map_err(anyhow::Error::from)
        .and_then(|v| serde_json::to_value(v).context("encoding the collector's data"));
    match value {
        Ok(v) => Some(v),
        Err(e) => {
            warn!(collector = name, error = %format!("{e:#}"), "collector found nothing to report; leaving its key out");
            None
        }
    }
}

/// The decoded SMBIOS table; without one (some VMs, non-SMBIOS arm64)
/// the empty sections dmidecode's output would parse to.
fn dmi_or_empty(cfg: &Config) -> dmi::Dmi {
    dmi::collect(&cfg.sysfs_root).unwrap_or_else(|e| {
        warn!(error = %e, "no SMBIOS table; reporting empty DMI sections");
        dmi::Dmi::default()
    })
}

/// hardware-detect's records from the inventory (the `default`
/// collector's, else a fresh one), SMBIOS, NUMA and procfs.
fn extra_hardware(ctx: &AgentContext, data: &InspectionData) -> Vec<extra::Item> {
    let cfg = &ctx.config;
    let fresh;
    let inventory = match &data.inventory {
        Some(inv) => inv,
        None => {
            fresh = inventory::collect_for(cfg, true);
            &fresh
        }
    };
    let table = collectors::read_table(&cfg.sysfs_root.join(inventory::DMI_TABLE)).ok();
    let dmi = table.as_deref().map(dmi::decode);
    let numa = numa::collect(&cfg.sysfs_root).ok().flatten();
    extra::collect(&extra::Sources {
        inventory: Some(inventory),
        dmi: dmi.as_ref(),
        smbios: table.as_deref(),
        numa: numa.as_ref(),
        procfs: Some(&cfg.procfs_root),
        arch: &inventory.cpu.architecture,
    })
}

/// IPA's `collect_default`: wait for DHCP, then the inventory, the root
/// disk deploy would pick, BOOTIF and the collector/manager versions.
fn collect_default(ctx: &AgentContext, collectors: &[String], data: &mut InspectionData) {
    wait_for_dhcp(&ctx.config);
    let inv = inventory::collect_for(&ctx.config, false);
    data.root_disk = guess_root_disk(&inv.disks);
    if data.root_disk.is_none() {
        warn!("no suitable root device detected");
    }
    data.boot_interface = inv.boot.pxe_interface.clone();
    debug!(bmc = ?inv.bmc_address, "BMC address");
    data.inventory = Some(inv);
    data.configuration = Some(InspectionConfiguration {
        collectors: collectors.to_vec(),
        managers: ctx
            .hardware
            .versions()
            .into_iter()
            .map(|(name, version)| ManagerVersion { name, version })
            .collect(),
    });
}

/// IPA's `wait_for_dhcp`: until the PXE NIC (or every NIC) has an IPv4
/// address, at most `ipa-inspection-dhcp-wait-timeout`. Only warns.
fn wait_for_dhcp(cfg: &Config) -> bool {
    if cfg.inspection_dhcp_wait_timeout.is_zero() {
        return true;
    }
    let pxe_mac = cfg.boot_mac.as_deref();
    if pxe_mac.is_none() && !cfg.inspection_dhcp_all_interfaces {
        warn!("No PXE boot interface known - not waiting for it to get the IP address");
        return false;
    }
    let deadline = std::time::Instant::now() + cfg.inspection_dhcp_wait_timeout;
    loop {
        let addresses = if cfg.sysfs_root == std::path::Path::new("/sys") {
            net::live_addresses()
        } else {
            net::Addresses::new()
        };
        let missing: Vec<String> = net::collect(&cfg.sysfs_root, &addresses)
            .into_iter()
            .filter(|i| {
                cfg.inspection_dhcp_all_interfaces
                    || normalize_mac(&i.mac_address).as_deref() == pxe_mac
            })
            .filter(|i| i.ipv4_address.is_none())
            .map(|i| i.name)
            .collect();
        if missing.is_empty() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            warn!(
                ?missing,
                timeout = ?cfg.inspection_dhcp_wait_timeout,
                "Not all network interfaces received IP addresses"
            );
            return false;
        }
        debug!(?missing, "still waiting for interfaces to get IP addresses");
        std::thread::sleep(DHCP_POLL);
    }
}

/// tenacity's `wait_exponential(multiplier=1.5, min=5, max=30)` scaled so
/// that `min` is `base` (5 s gives IPA's 5, 5, 6, 12 s).
pub fn retry_wait(attempt: u32, base: Duration) -> Duration {
    let factor = (0.3 * 2f64.powi(attempt.saturating_sub(1).min(16) as i32)).clamp(1.0, 6.0);
    base.mul_f64(factor)
}

enum Outcome {
    Done(Option<InspectionResponse>),
    Retry(anyhow::Error),
}

/// Post with IPA's retry rules: connection errors fail over to the next URL
/// and are retried; 5xx and 409 are retried; another ≥ 400 gives `None`.
pub async fn post(
    cfg: &Config,
    urls: &[Url],
    data: &InspectionData,
) -> anyhow::Result<Option<InspectionResponse>> {
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(cfg.insecure)
        .timeout(cfg.http_request_timeout)
        .build()
        .context("building the inspection HTTP client")?;
    let body = serde_json::to_vec(data).context("encoding the inspection data")?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error = match post_once(cfg, &http, urls, &body).await {
            Outcome::Done(resp) => return Ok(resp),
            Outcome::Retry(e) => e,
        };
        if attempt >= ATTEMPTS {
            return Err(error.context(format!("gave up after {attempt} attempts")));
        }
        let wait = retry_wait(attempt, cfg.inspection_retry_wait);
        warn!(attempt, ?wait, error = %format!("{error:#}"), "posting inspection data failed; retrying");
        tokio::time::sleep(wait).await;
    }
}

async fn post_once(cfg: &Config, http: &reqwest::Client, urls: &[Url], body: &[u8]) -> Outcome {
    let mut last = anyhow!("no inspection URL");
    for url in urls {
        info!(%url, "Posting collected data");
        // No X-OpenStack-Ironic-API-Version: Ironic then serves 1.1 and
        // answers `{"uuid": ...}`, as it does for IPA.
        let mut req = http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body.to_vec());
        if let Some(id) = &cfg.global_request_id {
            req = req.header(REQUEST_ID_HEADER, id);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                warn!(%url, error = %e, "connection error; trying the next URL");
                last = anyhow!("{url}: {e}");
                continue;
            }
        };
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status.is_server_error() || status == StatusCode::CONFLICT {
            return Outcome::Retry(anyhow!("{url} answered {status}: {text}"));
        }
        if status.as_u16() >= 400 {
            error!(%url, %status, body = %text, "inspector error, proceeding with lookup");
            return Outcome::Done(None);
        }
        return match serde_json::from_str::<InspectionResponse>(&text) {
            Ok(r) => Outcome::Done(Some(r)),
            Err(e) => {
                warn!(%url, error = %e, "unreadable inspection reply; no node UUID from it");
                Outcome::Done(Some(InspectionResponse::default()))
            }
        };
    }
    Outcome::Retry(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The log lines written while `f` runs.
    fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| std::io::Error::other("poisoned"))?
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let out = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8_lossy(&sink.0.lock().expect("log sink")).into_owned();
        (out, text)
    }

    fn context(fixture: &str) -> Arc<AgentContext> {
        let roots = crate::hardware::inventory::fixture(fixture);
        let cfg = Config {
            sysfs_root: roots.sysfs,
            procfs_root: roots.procfs,
            dev_root: roots.dev,
            ..Config::default()
        };
        AgentContext::new(
            cfg,
            crate::logbuf::LogBuffer::default(),
            crate::hardware::HardwareManagers::new(Vec::new()),
        )
    }

    #[test]
    fn an_unknown_collector_is_logged_and_skipped() {
        let ctx = context("ferrite-ci-host");
        let names: Vec<String> = ["pci-devices", "no-such-collector", "numa-topology"]
            .map(String::from)
            .to_vec();
        let (data, log) = logged(|| collect(&ctx, &names));
        assert_eq!(data.error, None);
        assert!(
            log.contains("unknown inspection collector") && log.contains("no-such-collector"),
            "{log}"
        );
        // The collectors around it ran.
        assert!(data
            .pci_devices
            .as_ref()
            .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty())));
        assert!(data.numa_topology.is_some());
    }

    /// Every optional collector on a machine that has none of their
    /// sources: keys left out (or empty), never a failure.
    #[test]
    fn collectors_without_sources_never_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = Config {
            sysfs_root: dir.path().join("sys"),
            procfs_root: dir.path().join("proc"),
            dev_root: dir.path().join("dev"),
            ..Config::default()
        };
        let ctx = AgentContext::new(
            cfg,
            crate::logbuf::LogBuffer::default(),
            crate::hardware::HardwareManagers::new(Vec::new()),
        );
        let names: Vec<String> = [
            "pci-devices",
            "numa-topology",
            "dmi-decode",
            "usb-devices",
            "extra-hardware",
        ]
        .map(String::from)
        .to_vec();
        let (data, log) = logged(|| collect(&ctx, &names));
        assert_eq!(data.error, None);
        assert_eq!(data.pci_devices, None, "{log}");
        assert_eq!(data.numa_topology, None);
        assert_eq!(
            data.dmi,
            Some(serde_json::json!({"bios": {}, "cpu": [], "memory": {"devices": []}}))
        );
        assert_eq!(data.usb_devices, Some(serde_json::json!([])));
        assert!(data.data.as_ref().is_some_and(|d| d.is_array()));
        assert!(log.contains("pci-devices"), "{log}");
    }

    /// The full list on a captured machine gives every key IPA's
    /// collectors produce, in IPA's shapes.
    #[test]
    fn all_collectors_on_a_captured_machine() {
        let ctx = context("qemu-nvme-multinic");
        let names: Vec<String> = [
            "pci-devices",
            "numa-topology",
            "dmi-decode",
            "usb-devices",
            "extra-hardware",
        ]
        .map(String::from)
        .to_vec();
        let data = collect(&ctx, &names);
        assert_eq!(data.error, None);
        let json = serde_json::to_value(&data).expect("json");
        assert_eq!(
            json["dmi"]["bios"]["Vendor"], "Ferrite Firmware Inc.",
            "{json}"
        );
        assert_eq!(json["dmi"]["memory"]["Number Of Devices"], 1);
        assert_eq!(json["usb_devices"], serde_json::json!([]));
        let records = json["data"].as_array().expect("records");
        assert!(records
            .iter()
            .any(|r| r[0] == "system" && r[1] == "product" && r[2] == "name"));
    }

    #[test]
    fn waits_follow_tenacity_at_ipas_settings() {
        let five = Duration::from_secs(5);
        let waits: Vec<f64> = (1..=6).map(|a| retry_wait(a, five).as_secs_f64()).collect();
        assert_eq!(waits, [5.0, 5.0, 6.0, 12.0, 24.0, 30.0]);
        assert_eq!(retry_wait(40, five), Duration::from_secs(30));
        assert_eq!(
            retry_wait(1, Duration::from_millis(100)),
            Duration::from_millis(100)
        );
    }
}
