//! `image_info`, the image a deploy writes, as Ironic's `_get_image_info`
//! sends it with `standby.prepare_image` and the `write_image` deploy step:
//! parsed once, into types, with IPA's validation (`_validate_image_info`)
//! and the partition-image fields (`work_on_disk`'s arguments).

use base64::Engine;
use serde_json::{Map, Value};
use url::Url;

use crate::loose::value_as_bool;

/// Why an `image_info` was refused; IPA answers each with
/// `InvalidCommandParamsError`, whose details are these texts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageInfoError {
    #[error("image_info must be an object")]
    NotAnObject,
    #[error("Image is missing 'id' field.")]
    NoId,
    #[error("Image {0} is missing 'urls' or it is empty")]
    NoUrls(String),
    #[error("Image {id} has neither a usable checksum nor os_hash_algo and os_hash_value{}",
        if *.md5_refused { " (md5 checksums are disabled)" } else { "" })]
    NoChecksum { id: String, md5_refused: bool },
    #[error("image_request_authorization is not base64 text")]
    Authorization,
    #[error("image_info.proxies: {0}")]
    Proxy(#[from] ProxyError),
    #[error("image_info.proxies must be an object of scheme to proxy URL")]
    ProxiesNotAnObject,
    #[error("image_info.proxies: unknown scheme {0:?} (http or https)")]
    ProxyScheme(String),
    #[error("image_info.no_proxy must be a string")]
    NoProxyNotAString,
    #[error("a partition image needs root_mb in image_info")]
    NoRootSize,
    #[error("{0} must be a whole number of MiB")]
    NotMib(String),
    #[error("{key} must be a whole number of MiB, not {value:?}")]
    NotMibText { key: String, value: String },
    #[error("disk_label {0:?} is neither gpt nor msdos")]
    DiskLabel(String),
}

/// The image to write. The `Authorization` value is a secret: `Debug`
/// shows it as `***`.
#[derive(Clone, PartialEq)]
pub struct ImageInfo {
    pub id: String,
    pub urls: Vec<String>,
    pub disk_format: Option<String>,
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    /// Full `Authorization` header value, if the image server wants one.
    pub authorization: Option<String>,
    /// `proxies` (`{"http": …, "https": …}`) and `no_proxy`.
    pub proxies: Option<Proxies>,
    /// `image_type: partition`: the layout to make around the image;
    /// `None` for a whole-disk image.
    pub partition: Option<PartitionParams>,
}

impl std::fmt::Debug for ImageInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageInfo")
            .field("id", &self.id)
            .field("urls", &self.urls)
            .field("disk_format", &self.disk_format)
            .field("checksum", &self.checksum)
            .field("os_hash_algo", &self.os_hash_algo)
            .field("os_hash_value", &self.os_hash_value)
            .field("authorization", &self.authorization.as_ref().map(|_| "***"))
            .field("proxies", &self.proxies)
            .field("partition", &self.partition)
            .finish()
    }
}

/// A partition image's disk label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskLabel {
    Gpt,
    Msdos,
}

impl DiskLabel {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "gpt" => Some(Self::Gpt),
            "msdos" | "dos" | "mbr" => Some(Self::Msdos),
            _ => None,
        }
    }
}

/// The partition-image fields of `image_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionParams {
    pub root_mb: u64,
    pub swap_mb: u64,
    pub ephemeral_mb: u64,
    pub ephemeral_format: String,
    pub preserve_ephemeral: bool,
    pub uefi: bool,
    pub label: DiskLabel,
}

/// The proxies Ironic asks for (`driver_info.image_http_proxy`,
/// `image_https_proxy`, `image_no_proxy`). A proxy URL may carry
/// credentials: `Debug` and [`Proxies::describe_url`] never show them.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxies {
    /// For `http://` image URLs.
    pub http: Option<Url>,
    /// For `https://` image URLs (a CONNECT tunnel).
    pub https: Option<Url>,
    /// Hosts reached directly: comma-separated names (a name also covers
    /// its subdomains), IP addresses, CIDR ranges, or `*` (as `no_proxy`).
    pub no_proxy: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("proxy {which:?}: {reason}")]
pub struct ProxyError {
    pub which: String,
    pub reason: String,
}

impl Proxies {
    /// One proxy URL as Ironic allows it: `http(s)://…` or no scheme at
    /// all (then `http://`, as requests does).
    pub fn parse_url(which: &str, raw: &str) -> Result<Url, ProxyError> {
        let err = |reason: String| ProxyError {
            which: which.to_string(),
            reason,
        };
        let raw = raw.trim();
        let with_scheme = if raw.contains("://") {
            raw.to_string()
        } else {
            format!("http://{raw}")
        };
        // The parse error would not echo the URL, but keep it generic anyway:
        // the text may hold a password.
        let url = Url::parse(&with_scheme).map_err(|e| err(format!("not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err(format!(
                "scheme {:?} is not supported (http or https)",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(err("no host".into()));
        }
        Ok(url)
    }

    /// `scheme://host:port`, with `***@` where credentials were: for logs.
    pub fn describe_url(url: &Url) -> String {
        let creds = if url.username().is_empty() && url.password().is_none() {
            ""
        } else {
            "***@"
        };
        format!(
            "{}://{creds}{}:{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        )
    }

    /// The proxy an image URL of this scheme goes through, if any (the
    /// `no_proxy` list aside).
    pub fn for_scheme(&self, scheme: &str) -> Option<&Url> {
        match scheme {
            "http" => self.http.as_ref(),
            "https" => self.https.as_ref(),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Proxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxies")
            .field("http", &self.http.as_ref().map(Self::describe_url))
            .field("https", &self.https.as_ref().map(Self::describe_url))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

fn opt_str(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl ImageInfo {
    /// Validate and type `image_info`. `md5_enabled` is the conductor's
    /// `agent_md5_checksum_enable` (a bare 32-digit checksum is MD5).
    pub fn parse(raw: &Value, md5_enabled: bool) -> Result<Self, ImageInfoError> {
        let map = raw.as_object().ok_or(ImageInfoError::NotAnObject)?;
        let id = opt_str(map, "id").ok_or(ImageInfoError::NoId)?;
        let urls: Vec<String> = match map.get("urls") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        if urls.is_empty() {
            return Err(ImageInfoError::NoUrls(id));
        }
        let checksum = opt_str(map, "checksum");
        let os_hash_algo = opt_str(map, "os_hash_algo");
        let os_hash_value = opt_str(map, "os_hash_value");
        let checksum_ok = match &checksum {
            Some(c) if c.starts_with("http://") || c.starts_with("https://") || c.len() > 32 => {
                true
            }
            Some(_) => md5_enabled,
            None => false,
        };
        let os_hash_ok = os_hash_algo.is_some() && os_hash_value.is_some();
        if !(checksum_ok || os_hash_ok) {
            return Err(ImageInfoError::NoChecksum {
                id,
                md5_refused: checksum.is_some() && !md5_enabled,
            });
        }
        let partition = match opt_str(map, "image_type").as_deref() {
            Some("partition") => Some(PartitionParams::parse(map)?),
            _ => None,
        };
        Ok(Self {
            id,
            urls,
            disk_format: opt_str(map, "disk_format"),
            checksum,
            os_hash_algo,
            os_hash_value,
            authorization: authorization(map)?,
            proxies: parse_proxies(map)?,
            partition,
        })
    }
}

/// `image_request_authorization` (base64 of the header value), else
/// basic auth from `image_server_user` / `image_server_password`.
fn authorization(map: &Map<String, Value>) -> Result<Option<String>, ImageInfoError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(
        match (
            opt_str(map, "image_request_authorization"),
            opt_str(map, "image_server_user"),
        ) {
            (Some(encoded), _) => Some(
                b64.decode(encoded.as_bytes())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or(ImageInfoError::Authorization)?,
            ),
            (None, Some(user)) => {
                let password = opt_str(map, "image_server_password").unwrap_or_default();
                Some(format!(
                    "Basic {}",
                    b64.encode(format!("{user}:{password}"))
                ))
            }
            _ => None,
        },
    )
}

/// `proxies` and `no_proxy` as Ironic's `_get_image_info` sends them (it
/// sends `no_proxy` only with `proxies`). IPA hands them to requests
/// unchecked; here a malformed one fails validation, naming which proxy
/// but never echoing its URL (it may hold a password).
fn parse_proxies(map: &Map<String, Value>) -> Result<Option<Proxies>, ImageInfoError> {
    let proxies = match map.get("proxies") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(p)) => p,
        Some(_) => return Err(ImageInfoError::ProxiesNotAnObject),
    };
    let mut parsed = Proxies {
        http: None,
        https: None,
        no_proxy: None,
    };
    for (scheme, value) in proxies {
        let Some(raw) = value.as_str().filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        let url = Proxies::parse_url(scheme, raw)?;
        match scheme.as_str() {
            "http" => parsed.http = Some(url),
            "https" => parsed.https = Some(url),
            other => return Err(ImageInfoError::ProxyScheme(other.to_string())),
        }
    }
    parsed.no_proxy = match map.get("no_proxy") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(no_proxy_hosts(s)).filter(|s| !s.is_empty()),
        Some(_) => return Err(ImageInfoError::NoProxyNotAString),
    };
    Ok((parsed.http.is_some() || parsed.https.is_some()).then_some(parsed))
}

/// `no_proxy` as reqwest matches it: Ironic allows `host:port` entries
/// (requests then bypasses that port only); the port is dropped, so the
/// host is reached directly on any port. IPv6 addresses and CIDR ranges
/// pass unchanged.
fn no_proxy_hosts(raw: &str) -> String {
    raw.split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| match h.rsplit_once(':') {
            Some((host, port))
                if !host.contains(':')
                    && !port.is_empty()
                    && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                host
            }
            _ => h,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Ironic sends integers; older conductors and hand-made requests send strings.
fn mb(map: &Map<String, Value>, key: &str) -> Result<Option<u64>, ImageInfoError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| ImageInfoError::NotMib(key.to_string())),
        Some(Value::String(s)) => {
            s.trim()
                .parse()
                .map(Some)
                .map_err(|_| ImageInfoError::NotMibText {
                    key: key.to_string(),
                    value: s.clone(),
                })
        }
        Some(_) => Err(ImageInfoError::NotMib(key.to_string())),
    }
}

impl PartitionParams {
    fn parse(map: &Map<String, Value>) -> Result<Self, ImageInfoError> {
        let root_mb = match mb(map, "root_mb")? {
            Some(v) => v,
            None => mb(map, "root_gb")?
                .map(|g| g.saturating_mul(1024))
                .ok_or(ImageInfoError::NoRootSize)?,
        };
        let text = |k: &str| {
            map.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_ascii_lowercase)
        };
        let uefi = text("deploy_boot_mode").as_deref() == Some("uefi");
        let label = match text("disk_label") {
            Some(l) => DiskLabel::parse(&l).ok_or(ImageInfoError::DiskLabel(l))?,
            None if uefi => DiskLabel::Gpt,
            None => DiskLabel::Msdos,
        };
        Ok(Self {
            root_mb,
            swap_mb: mb(map, "swap_mb")?.unwrap_or(0),
            ephemeral_mb: mb(map, "ephemeral_mb")?.unwrap_or(0),
            ephemeral_format: text("ephemeral_format").unwrap_or_else(|| "ext4".into()),
            // oslo's `bool_from_string` as IPA reads it: unknown is false.
            preserve_ephemeral: map
                .get("preserve_ephemeral")
                .and_then(value_as_bool)
                .unwrap_or(false),
            uefi,
            label,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn validates_like_ipa() {
        let ok = json!({"id": "i", "urls": ["http://h/i.img"], "os_hash_algo": "sha256", "os_hash_value": "a"});
        let info = ImageInfo::parse(&ok, true).unwrap();
        assert_eq!(info.partition, None);
        let no_urls = json!({"id": "i", "urls": [], "checksum": "x".repeat(64)});
        assert!(ImageInfo::parse(&no_urls, true)
            .unwrap_err()
            .to_string()
            .contains("urls"));
        let md5 = json!({"id": "i", "urls": ["u"], "checksum": "f".repeat(32)});
        assert!(ImageInfo::parse(&md5, true).is_ok());
        assert_eq!(
            ImageInfo::parse(&md5, false).unwrap_err().to_string(),
            "Image i has neither a usable checksum nor os_hash_algo and os_hash_value \
             (md5 checksums are disabled)"
        );
        let none = json!({"id": "i", "urls": ["u"]});
        assert!(matches!(
            ImageInfo::parse(&none, true),
            Err(ImageInfoError::NoChecksum { .. })
        ));
        let auth = json!({"id": "i", "urls": ["u"], "checksum": "f".repeat(64), "image_server_user": "a", "image_server_password": "b"});
        assert_eq!(
            ImageInfo::parse(&auth, true)
                .unwrap()
                .authorization
                .as_deref(),
            Some("Basic YTpi")
        );
        let shown = format!("{:?}", ImageInfo::parse(&auth, true).unwrap());
        assert!(!shown.contains("YTpi") && shown.contains("***"), "{shown}");
        assert_eq!(
            ImageInfo::parse(&json!([]), true),
            Err(ImageInfoError::NotAnObject)
        );
    }

    #[test]
    fn proxies_parse_and_never_show_their_credentials() {
        let base = json!({"id": "i", "urls": ["http://h/i"], "checksum": "f".repeat(64)});
        let with = |extra: Value| {
            let mut v = base.clone();
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            ImageInfo::parse(&v, true)
        };
        assert_eq!(with(json!({})).unwrap().proxies, None);
        let info = with(
            json!({"proxies": {"http": "http://user:s3cret@proxy.example:3128",
                                            "https": "proxy.example:3129"},
                               "no_proxy": "127.0.0.1,.internal"}),
        )
        .unwrap();
        let p = info.proxies.clone().unwrap();
        assert_eq!(p.http.as_ref().unwrap().password(), Some("s3cret"));
        assert_eq!(
            p.https.as_ref().unwrap().as_str(),
            "http://proxy.example:3129/"
        );
        assert_eq!(p.no_proxy.as_deref(), Some("127.0.0.1,.internal"));
        let shown = format!("{info:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("user"),
            "{shown}"
        );
        assert!(shown.contains("http://***@proxy.example:3128"), "{shown}");
        assert_eq!(
            no_proxy_hosts(" a.example:8080, .b.example ,10.0.0.0/8,fd00::1,,c:x"),
            "a.example,.b.example,10.0.0.0/8,fd00::1,c:x"
        );
        // no_proxy alone means nothing (Ironic never sends it alone).
        assert_eq!(with(json!({"no_proxy": "x"})).unwrap().proxies, None);
        let err = with(json!({"proxies": {"http": "ftp://user:s3cret@p:21"}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ftp") && !err.contains("s3cret"), "{err}");
        assert!(with(json!({"proxies": "http://p"})).is_err());
        assert!(with(json!({"proxies": {"gopher": "http://p"}})).is_err());
    }

    #[test]
    fn partition_fields_parse_with_ipa_defaults() {
        let parse = |extra: Value| {
            let mut v = json!({"id": "i", "urls": ["u"], "checksum": "f".repeat(64),
                               "image_type": "partition"});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            ImageInfo::parse(&v, true).map(|i| i.partition.unwrap())
        };
        let p = parse(json!({"root_mb": 10240, "swap_mb": "512",
            "deploy_boot_mode": "uefi", "preserve_ephemeral": "True"}))
        .unwrap();
        assert_eq!(p.root_mb, 10240);
        assert_eq!(p.swap_mb, 512);
        assert_eq!(p.label, DiskLabel::Gpt);
        assert!(p.uefi && p.preserve_ephemeral);
        assert_eq!(p.ephemeral_format, "ext4");
        let p = parse(json!({"root_gb": 2, "disk_label": "gpt"})).unwrap();
        assert_eq!((p.root_mb, p.label, p.uefi), (2048, DiskLabel::Gpt, false));
        let p = parse(json!({"root_mb": 1})).unwrap();
        assert_eq!(p.label, DiskLabel::Msdos);
        assert_eq!(
            parse(json!({"swap_mb": 1})),
            Err(ImageInfoError::NoRootSize)
        );
        assert_eq!(
            parse(json!({"root_mb": "x"})).unwrap_err().to_string(),
            "root_mb must be a whole number of MiB, not \"x\""
        );
        assert!(parse(json!({"root_mb": 1, "disk_label": "sun"})).is_err());
    }
}
