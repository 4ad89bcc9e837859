//! In-band inspection before lookup (IPA's `inspector.inspect`): run the
//! collectors, post everything to `/v1/continue_inspection` (or the
//! configured callback), and hand the node UUID Ironic returns to lookup.
//! Collector failures are reported in `error` rather than stopping the post,
//! because an unknown node is hard to debug without its data.

use std::time::Duration;

use anyhow::{anyhow, Context};
use base64::Engine;
use ferrite_protocol::inspection::{
    accumulated_error, InspectionConfiguration, InspectionData, InspectionResponse, ManagerVersion,
};
use ferrite_protocol::node::normalize_mac;
use ferrite_protocol::version::REQUEST_ID_HEADER;
use reqwest::StatusCode;
use tracing::{debug, error, info, warn};
use url::Url;

use crate::commands::log::build_archive;
use crate::config::Config;
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
    let (data, failed) = match collected {
        Ok(pair) => pair,
        Err(e) => {
            error!(error = %e, "inspection collectors crashed");
            return None;
        }
    };
    match post(&ctx.config, &urls, &data).await {
        Ok(Some(resp)) if !failed => {
            let uuid = resp.node_uuid();
            info!(node = ?uuid, "inspection finished successfully");
            uuid
        }
        Ok(Some(_)) => {
            error!(
                error = data.error.as_deref().unwrap_or_default(),
                "Failed to perform inspection: collectors failed"
            );
            None
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

/// Run the collectors in order; returns the data and whether any failed.
fn collect(ctx: &AgentContext, collectors: &[String]) -> (InspectionData, bool) {
    let mut data = InspectionData {
        inventory: None,
        root_disk: None,
        boot_interface: None,
        configuration: None,
        logs: None,
        lldp_raw: None,
        error: None,
    };
    let mut failures = Vec::new();
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
            other => failures.push(format!("Failed to load collector {other}")),
        }
    }
    data.error = accumulated_error(&failures);
    (data, !failures.is_empty())
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
