//! Agent settings: the kernel command line (IPA's parameter names) and
//! `--param KEY=VALUE` overrides, turned into one typed [`Config`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ferrite_protocol::node::normalize_mac;

use crate::disk::DiskPolicy;
use ferrite_protocol::loose::bool_word;
use ferrite_protocol::ApiVersion;
use url::Url;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("kernel parameter {param}={value:?} is invalid: {reason}")]
    Invalid {
        param: &'static str,
        value: String,
        reason: String,
    },
    #[error("no Ironic API URL: set ipa-api-url (or ipa-inspection-callback-url)")]
    NoApiUrl,
}

/// Everything the agent needs to know at start.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `ipa-api-url`: one or more Ironic API endpoints, tried in order.
    pub api_urls: Vec<Url>,
    /// `BOOTIF`: the MAC the machine PXE-booted from (normalized).
    pub boot_mac: Option<String>,
    /// `BOOTIF` as given (the inventory's `boot.pxe_interface`).
    pub bootif_raw: Option<String>,
    /// `ipa-insecure`: skip TLS verification towards Ironic.
    pub insecure: bool,
    /// `ipa-cafile` (IPA's `cafile`): PEM CA bundle trusted for Ironic,
    /// besides the public roots; ferrite-conductor's iPXE script puts its
    /// CA at /etc/ferrite/ca.pem in the initramfs and passes this.
    pub cafile: Option<PathBuf>,
    /// `ipa-debug`.
    pub debug: bool,
    /// `ipa-agent-token`: pre-shared token (virtual media boots).
    pub agent_token: Option<String>,
    /// `ipa-advertise-host`; discovered from the route to Ironic when unset.
    pub advertise_host: Option<IpAddr>,
    /// `ipa-advertise-port`.
    pub advertise_port: u16,
    /// `ipa-listen-host`.
    pub listen_host: IpAddr,
    /// `ipa-listen-port`.
    pub listen_port: u16,
    /// `ipa-lookup-timeout`: total budget for lookup retries.
    pub lookup_timeout: Duration,
    /// `ipa-lookup-interval`: the shortest wait between lookups.
    pub lookup_interval: Duration,
    /// `ipa-global-request-id`: sent as `X-OpenStack-Request-ID`.
    pub global_request_id: Option<String>,
    /// `ipa-inspection-callback-url`: where inspection data is posted
    /// (several URLs fail over on connection errors).
    pub inspection_callback_urls: Vec<Url>,
    /// `ipa-inspection-collectors` as given (IPA: unset by default; the
    /// collectors then default to `default,logs`).
    pub inspection_collectors: Option<Vec<String>>,
    /// `ipa-inspection-dhcp-all-interfaces`: wait for every NIC, not just BOOTIF.
    pub inspection_dhcp_all_interfaces: bool,
    /// `ipa-inspection-dhcp-wait-timeout` (0 disables the wait).
    pub inspection_dhcp_wait_timeout: Duration,
    /// `ferrite-inspection-retry-wait`: the shortest wait between inspection
    /// posts (IPA: 5 s; tests shorten it).
    pub inspection_retry_wait: Duration,
    /// `ipa-collect-lldp`: listen for LLDP on every NIC for the inventory.
    pub collect_lldp: bool,
    /// `ipa-lldp-timeout`.
    pub lldp_timeout: Duration,
    /// `ipa-ironic-api-version`: pin the microversion instead of negotiating.
    pub ironic_api_version: Option<ApiVersion>,
    /// `ipa-http-request-timeout`.
    pub http_request_timeout: Duration,
    /// `ipa-enable-auto-tls` (IPA: config file only): serve the API over
    /// HTTPS with a fresh self-signed certificate when Ironic supports it.
    pub auto_tls: bool,
    /// `ipa-tls-min-version`: floor for the agent's own TLS listener.
    pub tls_min_version: Option<TlsVersion>,
    /// `ferrite-disks`: `all`, or the only block devices the agent may touch.
    /// Unset: every disk when running as PID 1 (a ramdisk), none otherwise.
    pub disks: Option<DiskPolicy>,
    /// `ipa-image-download-connection-timeout`: connect and between-chunk timeout.
    pub image_download_timeout: Duration,
    /// `ipa-image-download-max-duration`: the whole download's deadline
    /// (IPA >= 11.2; zero: none).
    pub image_download_max_duration: Duration,
    /// `ferrite-allow-file-images`: image, checksum and config drive sources
    /// may be local files (standalone use only; Ironic sends http(s)).
    pub allow_file_images: bool,
    /// `ipa-image-download-connection-retries`.
    pub image_download_retries: u32,
    /// `ipa-image-download-connection-retry-interval`.
    pub image_download_retry_interval: Duration,
    /// `ipa-hardware-initialization-delay`: a pause once the hardware
    /// managers are up, before anything else (slow RAID drivers).
    pub hardware_initialization_delay: Duration,
    /// `ipa-disk-wait-attempts`: how often to look for the root disk (0:
    /// not at all).
    pub disk_wait_attempts: u32,
    /// `ipa-disk-wait-delay`: the pause between two looks.
    pub disk_wait_delay: Duration,
    /// `ipa-guard-special-filesystems`: refuse to clean a disk holding a
    /// shared-disk filesystem (GPFS, VMFS, GFS2). IPA's default: on.
    pub guard_special_filesystems: bool,
    /// `ipa-inject-files-priority`: the `inject_files` deploy step's
    /// priority (0..=99; 0, IPA's default, runs it only when asked for).
    pub inject_files_priority: u8,
    /// `ipa-enable-discard-erase`: `erase_devices` may erase a disk whose
    /// secure erase failed by a verified discard. IPA's default: off.
    pub enable_discard_erase: bool,
    /// `ferrite-nvme-sanitize`: NVMe Sanitize operations (`crypto`, `block`,
    /// `overwrite`, in order of preference) that `erase_devices` runs
    /// instead of Format NVM where the controller offers one. Default:
    /// none, IPA's Format NVM.
    pub nvme_sanitize: crate::disk::nvme::SanitizePreference,
    /// `ferrite-allow-power`: what `standby.power_off`/`run_image` may do
    /// outside the ramdisk's init (refuse, reboot(2), or end the process).
    pub power_policy: crate::power::PowerPolicy,
    /// Where sysfs is mounted (fixture trees in tests).
    pub sysfs_root: PathBuf,
    /// Where procfs is mounted (fixture trees in tests).
    pub procfs_root: PathBuf,
    /// Where device nodes and udev links live.
    pub dev_root: PathBuf,
    /// Scratch directory for the certificate and key (`/run/ferrite-agent`).
    pub run_dir: PathBuf,
    /// Root of the rescue files (`etc/ipa-rescue-config/ipa-rescue-password`,
    /// `etc/.rescued`): `/` in the ramdisk, a temporary tree in tests.
    pub rescue_root: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

impl TlsVersion {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "1.2" => Some(Self::V1_2),
            "1.3" => Some(Self::V1_3),
            _ => None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            api_urls: Vec::new(),
            boot_mac: None,
            bootif_raw: None,
            insecure: false,
            cafile: None,
            debug: false,
            agent_token: None,
            advertise_host: None,
            advertise_port: ferrite_protocol::DEFAULT_AGENT_PORT,
            listen_host: IpAddr::from([0u16; 8]),
            listen_port: ferrite_protocol::DEFAULT_AGENT_PORT,
            lookup_timeout: Duration::from_secs(600),
            lookup_interval: Duration::from_secs(1),
            global_request_id: None,
            inspection_callback_urls: Vec::new(),
            inspection_collectors: None,
            inspection_dhcp_all_interfaces: false,
            inspection_dhcp_wait_timeout: Duration::from_secs(60),
            inspection_retry_wait: Duration::from_secs(5),
            collect_lldp: false,
            guard_special_filesystems: true,
            enable_discard_erase: false,
            nvme_sanitize: crate::disk::nvme::SanitizePreference::default(),
            inject_files_priority: 0,
            lldp_timeout: Duration::from_secs(30),
            ironic_api_version: None,
            http_request_timeout: Duration::from_secs(30),
            auto_tls: true,
            tls_min_version: None,
            disks: None,
            image_download_timeout: Duration::from_secs(60),
            image_download_max_duration: Duration::ZERO,
            allow_file_images: false,
            image_download_retries: 9,
            image_download_retry_interval: Duration::from_secs(10),
            hardware_initialization_delay: Duration::ZERO,
            disk_wait_attempts: 10,
            disk_wait_delay: Duration::from_secs(3),
            power_policy: crate::power::PowerPolicy::Refuse,
            sysfs_root: PathBuf::from("/sys"),
            procfs_root: PathBuf::from("/proc"),
            dev_root: PathBuf::from("/dev"),
            run_dir: PathBuf::from("/run/ferrite-agent"),
            rescue_root: PathBuf::from("/"),
        }
    }
}

/// Split a kernel command line the way IPA does: whitespace-separated
/// tokens, kept only if they contain `=`, split at the first `=`. Later
/// tokens win.
pub fn parse_cmdline(cmdline: &str) -> BTreeMap<String, String> {
    cmdline
        .split_whitespace()
        .filter_map(|tok| tok.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Config {
    /// Build the config from `key=value` parameters (kernel command line
    /// merged with overrides). Unknown keys are ignored.
    pub fn from_params(params: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut cfg = Config::default();
        for (key, value) in params {
            cfg.apply(key, value)?;
        }
        if cfg.api_urls.is_empty() && cfg.inspection_callback_urls.is_empty() {
            return Err(ConfigError::NoApiUrl);
        }
        Ok(cfg)
    }

    fn apply(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        match key {
            "ipa-api-url" => self.api_urls = parse_urls("ipa-api-url", value)?,
            "BOOTIF" => {
                self.boot_mac = Some(parse_bootif(value)?);
                self.bootif_raw = Some(value.to_string());
            }
            "ipa-insecure" => self.insecure = parse_bool("ipa-insecure", value)?,
            "ipa-cafile" => self.cafile = non_empty(value).map(PathBuf::from),
            "ipa-debug" => self.debug = parse_bool("ipa-debug", value)?,
            "ipa-agent-token" => self.agent_token = non_empty(value),
            "ipa-advertise-host" => {
                self.advertise_host = Some(parse_ip("ipa-advertise-host", value)?)
            }
            "ipa-advertise-port" => self.advertise_port = parse_port("ipa-advertise-port", value)?,
            "ipa-listen-host" => self.listen_host = parse_ip("ipa-listen-host", value)?,
            "ipa-listen-port" => self.listen_port = parse_port("ipa-listen-port", value)?,
            "ipa-lookup-timeout" => {
                self.lookup_timeout = parse_secs("ipa-lookup-timeout", value, false)?
            }
            "ipa-lookup-interval" => {
                self.lookup_interval = parse_secs("ipa-lookup-interval", value, true)?
            }
            "ipa-global-request-id" => self.global_request_id = non_empty(value),
            "ipa-inspection-callback-url" => {
                self.inspection_callback_urls = parse_urls("ipa-inspection-callback-url", value)?
            }
            "ipa-inspection-collectors" => {
                self.inspection_collectors = Some(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .map(str::to_string)
                        .collect(),
                )
                .filter(|c: &Vec<String>| !c.is_empty())
            }
            "ipa-inspection-dhcp-all-interfaces" => {
                self.inspection_dhcp_all_interfaces =
                    parse_bool("ipa-inspection-dhcp-all-interfaces", value)?
            }
            "ipa-inspection-dhcp-wait-timeout" => {
                self.inspection_dhcp_wait_timeout =
                    parse_secs("ipa-inspection-dhcp-wait-timeout", value, false)?
            }
            "ferrite-inspection-retry-wait" => {
                self.inspection_retry_wait =
                    parse_secs("ferrite-inspection-retry-wait", value, true)?
            }
            "ipa-collect-lldp" => self.collect_lldp = parse_bool("ipa-collect-lldp", value)?,
            "ipa-guard-special-filesystems" => {
                self.guard_special_filesystems = parse_bool("ipa-guard-special-filesystems", value)?
            }
            "ipa-inject-files-priority" => {
                self.inject_files_priority = value
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= 99)
                    .ok_or_else(|| {
                        invalid(
                            "ipa-inject-files-priority",
                            value,
                            "expected an integer from 0 to 99".into(),
                        )
                    })?
            }
            "ipa-enable-discard-erase" => {
                self.enable_discard_erase = parse_bool("ipa-enable-discard-erase", value)?
            }
            "ferrite-nvme-sanitize" => {
                self.nvme_sanitize = crate::disk::nvme::SanitizePreference::parse(value)
                    .map_err(|reason| invalid("ferrite-nvme-sanitize", value, reason))?
            }
            "ipa-lldp-timeout" => self.lldp_timeout = parse_secs("ipa-lldp-timeout", value, true)?,
            "ipa-ironic-api-version" => {
                self.ironic_api_version = Some(value.parse().map_err(
                    |e: ferrite_protocol::version::ParseVersionError| {
                        invalid("ipa-ironic-api-version", value, e.to_string())
                    },
                )?)
            }
            "ipa-http-request-timeout" => {
                self.http_request_timeout = parse_secs("ipa-http-request-timeout", value, true)?
            }
            "ipa-enable-auto-tls" => self.auto_tls = parse_bool("ipa-enable-auto-tls", value)?,
            "ipa-tls-min-version" => {
                self.tls_min_version = Some(TlsVersion::parse(value).ok_or_else(|| {
                    invalid("ipa-tls-min-version", value, "expected 1.2 or 1.3".into())
                })?)
            }
            "ferrite-allow-power" => {
                self.power_policy = crate::power::PowerPolicy::parse(value).ok_or_else(|| {
                    invalid(
                        "ferrite-allow-power",
                        value,
                        "expected a boolean or \"exit\"".into(),
                    )
                })?
            }
            "ferrite-disks" => self.disks = Some(DiskPolicy::parse(value)),
            "ipa-image-download-connection-timeout" => {
                self.image_download_timeout =
                    parse_secs("ipa-image-download-connection-timeout", value, true)?
            }
            "ipa-image-download-max-duration" => {
                self.image_download_max_duration =
                    parse_secs("ipa-image-download-max-duration", value, true)?
            }
            "ferrite-allow-file-images" => {
                self.allow_file_images = parse_bool("ferrite-allow-file-images", value)?
            }
            "ipa-image-download-connection-retries" => {
                self.image_download_retries =
                    parse_count("ipa-image-download-connection-retries", value)?
            }
            "ipa-image-download-connection-retry-interval" => {
                self.image_download_retry_interval =
                    parse_secs("ipa-image-download-connection-retry-interval", value, true)?
            }
            // IPA's IntOpts (min 0): whole seconds and counts.
            "ipa-hardware-initialization-delay" => {
                self.hardware_initialization_delay =
                    parse_secs("ipa-hardware-initialization-delay", value, false)?
            }
            "ipa-disk-wait-attempts" => {
                self.disk_wait_attempts = parse_count("ipa-disk-wait-attempts", value)?
            }
            "ipa-disk-wait-delay" => {
                self.disk_wait_delay = parse_secs("ipa-disk-wait-delay", value, false)?
            }
            _ => {}
        }
        Ok(())
    }

    /// IPA's `inspector._get_urls`: the callback URLs, else (when
    /// collectors were given) `<api_url>/v1/continue_inspection`; empty
    /// means inspection is off.
    pub fn inspection_urls(&self) -> Vec<Url> {
        if !self.inspection_callback_urls.is_empty() {
            return self.inspection_callback_urls.clone();
        }
        if self.inspection_collectors.is_none() {
            return Vec::new();
        }
        self.api_urls
            .iter()
            .filter_map(|u| {
                Url::parse(&format!(
                    "{}/v1/continue_inspection",
                    u.as_str().trim_end_matches('/')
                ))
                .ok()
            })
            .collect()
    }

    /// The inspection collectors in force (IPA's default `default,logs`).
    pub fn collectors(&self) -> Vec<String> {
        self.inspection_collectors
            .clone()
            .unwrap_or_else(|| vec!["default".into(), "logs".into()])
    }

    /// The disk policy in force: explicit, else all disks only in the
    /// ramdisk (PID 1 or the agent it supervises).
    pub fn disk_policy(&self) -> DiskPolicy {
        self.disks.clone().unwrap_or_else(|| {
            if crate::power::in_ramdisk() {
                DiskPolicy::All
            } else {
                DiskPolicy::Only(Vec::new())
            }
        })
    }

    /// `callback_url` host part: IPv6 in brackets.
    pub fn callback_url(&self, protocol: &str, host: IpAddr) -> String {
        match host {
            IpAddr::V4(v4) => format!("{protocol}://{v4}:{}", self.advertise_port),
            IpAddr::V6(v6) => format!("{protocol}://[{v6}]:{}", self.advertise_port),
        }
    }
}

fn invalid(param: &'static str, value: &str, reason: String) -> ConfigError {
    ConfigError::Invalid {
        param,
        value: value.to_string(),
        reason,
    }
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

fn parse_bool(param: &'static str, value: &str) -> Result<bool, ConfigError> {
    bool_word(value).ok_or_else(|| {
        invalid(
            param,
            value,
            "expected a boolean (1/0, true/false, yes/no, on/off)".into(),
        )
    })
}

fn parse_ip(param: &'static str, value: &str) -> Result<IpAddr, ConfigError> {
    value
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| invalid(param, value, "expected an IPv4 or IPv6 address".into()))
}

fn parse_port(param: &'static str, value: &str) -> Result<u16, ConfigError> {
    match value.parse::<u16>() {
        Ok(0) | Err(_) => Err(invalid(
            param,
            value,
            "expected a port number 1-65535".into(),
        )),
        Ok(port) => Ok(port),
    }
}

/// A count (IPA's IntOpt with min 0): a whole number.
fn parse_count<T: std::str::FromStr>(param: &'static str, value: &str) -> Result<T, ConfigError> {
    value
        .parse()
        .map_err(|_| invalid(param, value, "expected a whole number".into()))
}

pub(crate) fn parse_secs(
    param: &'static str,
    value: &str,
    fractional: bool,
) -> Result<Duration, ConfigError> {
    let secs: f64 = value
        .parse()
        .map_err(|_| invalid(param, value, "expected a number of seconds".into()))?;
    if !secs.is_finite() || secs < 0.0 || (!fractional && secs.fract() != 0.0) {
        return Err(invalid(
            param,
            value,
            "expected a non-negative number of seconds".into(),
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| invalid(param, value, "too many seconds".into()))
}

fn parse_urls(param: &'static str, value: &str) -> Result<Vec<Url>, ConfigError> {
    let mut urls = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part == "mdns" {
            return Err(invalid(
                param,
                value,
                "mDNS discovery is not supported; give the URL".into(),
            ));
        }
        let url = Url::parse(part).map_err(|e| invalid(param, value, format!("{part:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(invalid(
                param,
                value,
                format!("{part:?} is not an http(s) URL"),
            ));
        }
        urls.push(url);
    }
    if urls.is_empty() {
        return Err(invalid(param, value, "no URL given".into()));
    }
    Ok(urls)
}

/// `BOOTIF=01-aa-bb-cc-dd-ee-ff` (pxelinux, hardware type prefix) or a plain MAC.
pub fn parse_bootif(value: &str) -> Result<String, ConfigError> {
    let stripped = match value.split_once('-') {
        Some((hwtype, rest)) if hwtype.len() == 2 && rest.len() == 17 => rest,
        _ => value,
    };
    normalize_mac(stripped).ok_or_else(|| invalid("BOOTIF", value, "expected a MAC address".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(cmdline: &str) -> Result<Config, ConfigError> {
        Config::from_params(&parse_cmdline(cmdline))
    }

    #[test]
    fn full_cmdline() {
        let c = cfg("BOOT_IMAGE=/vmlinuz ro quiet console=ttyS0,115200n8 \
            ipa-api-url=https://10.0.0.1:6385,http://10.0.0.2:6385 BOOTIF=01-52-54-00-AB-CD-EF \
            ipa-insecure=1 ipa-debug=true ipa-agent-token=abc \
            ipa-advertise-host=10.0.0.5 ipa-advertise-port=19999 ipa-listen-host=:: \
            ipa-listen-port=19998 ipa-lookup-timeout=30 ipa-lookup-interval=2 \
            ipa-global-request-id=req-1 ipa-inspection-callback-url=http://10.0.0.1:6385/v1/continue_inspection \
            ipa-unknown=x")
        .unwrap();
        assert_eq!(c.api_urls.len(), 2);
        assert_eq!(c.api_urls[1].as_str(), "http://10.0.0.2:6385/");
        assert_eq!(c.boot_mac.as_deref(), Some("52:54:00:ab:cd:ef"));
        assert!(c.insecure && c.debug);
        assert_eq!(c.agent_token.as_deref(), Some("abc"));
        assert_eq!(c.advertise_host, Some("10.0.0.5".parse().unwrap()));
        assert_eq!((c.advertise_port, c.listen_port), (19999, 19998));
        assert_eq!(c.lookup_timeout, Duration::from_secs(30));
        assert_eq!(c.lookup_interval, Duration::from_secs(2));
        assert_eq!(c.global_request_id.as_deref(), Some("req-1"));
        assert_eq!(c.inspection_urls().len(), 1);
        assert_eq!(
            c.callback_url("https", "10.0.0.5".parse().unwrap()),
            "https://10.0.0.5:19999"
        );
        assert_eq!(
            c.callback_url("https", "fd00::5".parse().unwrap()),
            "https://[fd00::5]:19999"
        );
    }

    #[test]
    fn inspection_urls_follow_ipa() {
        let c = cfg("ipa-api-url=http://h:6385/").unwrap();
        assert!(c.inspection_urls().is_empty(), "off unless asked for");
        assert_eq!(c.collectors(), ["default", "logs"]);
        let c = cfg("ipa-api-url=http://h:6385/,http://g:6385 ipa-inspection-collectors=default")
            .unwrap();
        let urls: Vec<_> = c.inspection_urls().iter().map(|u| u.to_string()).collect();
        assert_eq!(
            urls,
            [
                "http://h:6385/v1/continue_inspection",
                "http://g:6385/v1/continue_inspection"
            ]
        );
        assert_eq!(c.collectors(), ["default"]);
        let c = cfg(
            "ipa-api-url=http://h:6385 ipa-inspection-callback-url=http://i:5050/v1/continue \
            ipa-inspection-dhcp-all-interfaces=1 ipa-inspection-dhcp-wait-timeout=0 \
            ipa-collect-lldp=1 ipa-lldp-timeout=0.5",
        )
        .unwrap();
        assert_eq!(c.inspection_urls()[0].as_str(), "http://i:5050/v1/continue");
        assert!(c.inspection_dhcp_all_interfaces && c.collect_lldp);
        assert_eq!(c.inspection_dhcp_wait_timeout, Duration::ZERO);
        assert_eq!(c.lldp_timeout, Duration::from_millis(500));
        // Inspection alone is a valid configuration (IPA skips lookup then).
        assert!(cfg("ipa-inspection-callback-url=http://i:5050/v1/continue").is_ok());
    }

    #[test]
    fn bootif_plain_form() {
        let c = cfg("ipa-api-url=http://h:1 BOOTIF=52:54:00:ab:cd:ef").unwrap();
        assert_eq!(c.boot_mac.as_deref(), Some("52:54:00:ab:cd:ef"));
    }

    #[test]
    fn defaults() {
        let c = cfg("ipa-api-url=http://h:6385").unwrap();
        assert_eq!(c.listen_port, 9999);
        assert_eq!(c.lookup_timeout, Duration::from_secs(600));
        assert!(c.auto_tls && !c.insecure);
        // IPA's disk wait: 10 looks, 3 s apart; no initialization delay.
        assert_eq!(c.disk_wait_attempts, 10);
        assert_eq!(c.disk_wait_delay, Duration::from_secs(3));
        assert_eq!(c.hardware_initialization_delay, Duration::ZERO);
    }

    #[test]
    fn nvme_sanitize_is_opt_in_and_ordered() {
        use crate::disk::nvme::SanitizeAction;
        let c = cfg("ipa-api-url=http://h").unwrap();
        assert!(c.nvme_sanitize.is_off(), "IPA's Format NVM by default");
        let c = cfg("ipa-api-url=http://h ferrite-nvme-sanitize=block,crypto").unwrap();
        assert_eq!(
            c.nvme_sanitize.actions().collect::<Vec<_>>(),
            [SanitizeAction::Block, SanitizeAction::Crypto]
        );
        let c = cfg("ipa-api-url=http://h ferrite-nvme-sanitize=off").unwrap();
        assert!(c.nvme_sanitize.is_off());
        let e = cfg("ipa-api-url=http://h ferrite-nvme-sanitize=crypto,erase").unwrap_err();
        assert!(
            e.to_string()
                .contains("\"erase\" is not a sanitize operation"),
            "{e}"
        );
    }

    #[test]
    fn disk_wait_and_initialization_delay() {
        let c = cfg(
            "ipa-api-url=http://h ipa-disk-wait-attempts=30 ipa-disk-wait-delay=1 \
            ipa-hardware-initialization-delay=5",
        )
        .unwrap();
        assert_eq!(c.disk_wait_attempts, 30);
        assert_eq!(c.disk_wait_delay, Duration::from_secs(1));
        assert_eq!(c.hardware_initialization_delay, Duration::from_secs(5));
        let off =
            cfg("ipa-api-url=http://h ipa-disk-wait-attempts=0 ipa-disk-wait-delay=0").unwrap();
        assert_eq!(
            (off.disk_wait_attempts, off.disk_wait_delay),
            (0, Duration::ZERO)
        );
    }

    #[test]
    fn malformed_values_name_the_parameter() {
        for (line, param) in [
            ("ipa-api-url=ftp://x", "ipa-api-url"),
            ("ipa-api-url=not-a-url", "ipa-api-url"),
            ("ipa-api-url=http://h BOOTIF=01-zz", "BOOTIF"),
            ("ipa-api-url=http://h ipa-insecure=maybe", "ipa-insecure"),
            (
                "ipa-api-url=http://h ipa-listen-port=70000",
                "ipa-listen-port",
            ),
            (
                "ipa-api-url=http://h ipa-advertise-host=host.example",
                "ipa-advertise-host",
            ),
            (
                "ipa-api-url=http://h ipa-lookup-timeout=-1",
                "ipa-lookup-timeout",
            ),
            (
                "ipa-api-url=http://h ipa-lookup-timeout=1.5",
                "ipa-lookup-timeout",
            ),
            (
                "ipa-api-url=http://h ipa-ironic-api-version=x",
                "ipa-ironic-api-version",
            ),
            (
                "ipa-api-url=http://h ipa-disk-wait-attempts=-1",
                "ipa-disk-wait-attempts",
            ),
            (
                "ipa-api-url=http://h ipa-disk-wait-delay=0.5",
                "ipa-disk-wait-delay",
            ),
            (
                "ipa-api-url=http://h ipa-disk-wait-delay=1e300",
                "ipa-disk-wait-delay",
            ),
            (
                "ipa-api-url=http://h ipa-hardware-initialization-delay=soon",
                "ipa-hardware-initialization-delay",
            ),
            (
                "ipa-api-url=http://h ferrite-nvme-sanitize=secure",
                "ferrite-nvme-sanitize",
            ),
            (
                "ipa-api-url=http://h ferrite-nvme-sanitize=crypto,crypto",
                "ferrite-nvme-sanitize",
            ),
        ] {
            match cfg(line) {
                Err(ConfigError::Invalid { param: p, .. }) => assert_eq!(p, param, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
            assert!(cfg(line).unwrap_err().to_string().contains(param));
        }
        assert_eq!(cfg("quiet ro"), Err(ConfigError::NoApiUrl));
    }
}
