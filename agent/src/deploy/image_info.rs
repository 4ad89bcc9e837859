//! `image_info`: validation (IPA's `_validate_image_info`) and the choice
//! of the expected checksum (IPA's order: `os_hash_*`, then `checksum` as a
//! URL, then `checksum` by length).

use base64::Engine;
use serde_json::{Map, Value};

use crate::errors::RestError;
use crate::image::verify::{find_in_checksums_file, Algo, Expected};

/// A checksum file holds one line per image; a few MiB is plenty
/// (IPA reads the whole file, unbounded).
pub const CHECKSUM_FILE_MAX: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq)]
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
}

fn opt_str(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
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
        Ok(Self {
            id,
            urls,
            disk_format: opt_str(map, "disk_format"),
            image_type: opt_str(map, "image_type"),
            checksum,
            os_hash_algo,
            os_hash_value,
            authorization,
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
    }
}
