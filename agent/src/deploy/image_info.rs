//! `image_info`: validation (IPA's `_validate_image_info`) and the choice
//! of the expected checksum (IPA's order: `os_hash_*`, then `checksum` as a
//! URL, then `checksum` by length).

use base64::Engine;
use serde_json::{Map, Value};

use crate::errors::RestError;
use crate::image::source::Proxies;
use crate::image::verify::{find_in_checksums_file, Algo, Expected};

/// A checksum file holds one line per image; a few MiB is plenty
/// (IPA reads the whole file, unbounded).
pub const CHECKSUM_FILE_MAX: u64 = 4 << 20;

#[derive(Clone, PartialEq)]
pub struct ImageInfo {
    pub id: String,
    pub urls: Vec<String>,
    pub disk_format: Option<String>,
    pub image_type: Option<String>,
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    /// Full `Authorization` header value, if the image server wants one.
    pub authorization: Option<String>,
    /// `proxies` (`{"http": …, "https": …}`) and `no_proxy`.
    pub proxies: Option<Proxies>,
}

/// The `Authorization` value is a secret: shown as `***`.
impl std::fmt::Debug for ImageInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageInfo")
            .field("id", &self.id)
            .field("urls", &self.urls)
            .field("disk_format", &self.disk_format)
            .field("image_type", &self.image_type)
            .field("checksum", &self.checksum)
            .field("os_hash_algo", &self.os_hash_algo)
            .field("os_hash_value", &self.os_hash_value)
            .field("authorization", &self.authorization.as_ref().map(|_| "***"))
            .field("proxies", &self.proxies)
            .finish()
    }
}

fn opt_str(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `proxies` and `no_proxy` as Ironic's `_get_image_info` sends them (it
/// sends `no_proxy` only with `proxies`). IPA hands them to requests
/// unchecked; here a malformed one fails validation, naming which proxy
/// but never echoing its URL (it may hold a password).
fn parse_proxies(map: &Map<String, Value>) -> Result<Option<Proxies>, RestError> {
    let bad = |e: crate::image::source::ProxyError| {
        RestError::invalid_params(format!("image_info.proxies: {e}"))
    };
    let proxies = match map.get("proxies") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(p)) => p,
        Some(_) => {
            return Err(RestError::invalid_params(
                "image_info.proxies must be an object of scheme to proxy URL",
            ))
        }
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
        let url = Proxies::parse_url(scheme, raw).map_err(bad)?;
        match scheme.as_str() {
            "http" => parsed.http = Some(url),
            "https" => parsed.https = Some(url),
            other => {
                return Err(RestError::invalid_params(format!(
                    "image_info.proxies: unknown scheme {other:?} (http or https)"
                )))
            }
        }
    }
    parsed.no_proxy = match map.get("no_proxy") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(no_proxy_hosts(s)).filter(|s| !s.is_empty()),
        Some(_) => {
            return Err(RestError::invalid_params(
                "image_info.no_proxy must be a string",
            ))
        }
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

impl ImageInfo {
    pub fn parse(raw: &Value, md5_enabled: bool) -> Result<Self, RestError> {
        let map = raw
            .as_object()
            .ok_or_else(|| RestError::invalid_params("image_info must be an object"))?;
        let id = opt_str(map, "id")
            .ok_or_else(|| RestError::invalid_params("Image is missing 'id' field."))?;
        let urls: Vec<String> = match map.get("urls") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        if urls.is_empty() {
            return Err(RestError::invalid_params(format!(
                "Image {id} is missing 'urls' or it is empty"
            )));
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
            return Err(RestError::invalid_params(format!(
                "Image {id} has neither a usable checksum nor os_hash_algo and os_hash_value{}",
                if checksum.is_some() && !md5_enabled {
                    " (md5 checksums are disabled)"
                } else {
                    ""
                }
            )));
        }
        let authorization = match (
            opt_str(map, "image_request_authorization"),
            opt_str(map, "image_server_user"),
        ) {
            (Some(encoded), _) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.as_bytes())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        RestError::invalid_params("image_request_authorization is not base64 text")
                    })?,
            ),
            (None, Some(user)) => {
                let password = opt_str(map, "image_server_password").unwrap_or_default();
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
                ))
            }
            _ => None,
        };
        let proxies = parse_proxies(map)?;
        Ok(Self {
            id,
            urls,
            disk_format: opt_str(map, "disk_format"),
            image_type: opt_str(map, "image_type"),
            checksum,
            os_hash_algo,
            os_hash_value,
            authorization,
            proxies,
        })
    }

    /// The digest to verify against. A checksum URL is fetched here.
    pub async fn expected(
        &self,
        http: &reqwest::Client,
        md5_enabled: bool,
    ) -> Result<Expected, RestError> {
        if let (Some(algo), Some(value)) = (&self.os_hash_algo, &self.os_hash_value) {
            if let Some(algo) = Algo::parse(algo) {
                return Expected::new(algo, value).map_err(RestError::invalid_params);
            }
        }
        let checksum = self.checksum.clone().ok_or_else(|| {
            RestError::invalid_params(format!(
                "Image {} has no checksum this agent can verify",
                self.id
            ))
        })?;
        let hex = if checksum.starts_with("http://") || checksum.starts_with("https://") {
            let resp = http
                .get(&checksum)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| {
                    RestError::image_download(&self.id, format!("checksum file {checksum}: {e}"))
                })?;
            let body = super::body::read_capped(resp, CHECKSUM_FILE_MAX)
                .await
                .map_err(|e| {
                    RestError::image_download(&self.id, format!("checksum file {checksum}: {e}"))
                })?;
            let text = String::from_utf8_lossy(&body);
            let name = self.urls[0]
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            find_in_checksums_file(&text, &name).ok_or_else(|| {
                RestError::image_download(
                    &self.id,
                    format!("checksum file {checksum} has no entry for {name}"),
                )
            })?
        } else {
            checksum
        };
        let algo = Algo::by_hex_len(hex.trim().len()).ok_or_else(|| {
            RestError::invalid_params(format!("cannot tell the algorithm of checksum {hex:?}"))
        })?;
        if algo == Algo::Md5 && !md5_enabled {
            return Err(RestError::invalid_params(
                "md5 checksums are disabled by the conductor",
            ));
        }
        Expected::new(algo, &hex).map_err(RestError::invalid_params)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn validates_like_ipa() {
        let ok = json!({"id": "i", "urls": ["http://h/i.img"], "os_hash_algo": "sha256", "os_hash_value": "a"});
        assert!(ImageInfo::parse(&ok, true).is_ok());
        let no_urls = json!({"id": "i", "urls": [], "checksum": "x".repeat(64)});
        assert!(ImageInfo::parse(&no_urls, true)
            .unwrap_err()
            .details
            .contains("urls"));
        let md5 = json!({"id": "i", "urls": ["u"], "checksum": "f".repeat(32)});
        assert!(ImageInfo::parse(&md5, true).is_ok());
        assert!(ImageInfo::parse(&md5, false).is_err());
        let none = json!({"id": "i", "urls": ["u"]});
        assert_eq!(
            ImageInfo::parse(&none, true).unwrap_err().kind,
            "InvalidCommandParamsError"
        );
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
        let err = with(json!({"proxies": {"http": "ftp://user:s3cret@p:21"}})).unwrap_err();
        assert!(
            err.details.contains("ftp") && !err.details.contains("s3cret"),
            "{}",
            err.details
        );
        assert!(with(json!({"proxies": "http://p"})).is_err());
        assert!(with(json!({"proxies": {"gopher": "http://p"}})).is_err());
    }
}
