//! The digest an image must match, chosen in IPA's order: `os_hash_*`,
//! then `checksum` as a URL (a checksum file fetched here), then
//! `checksum` by its length.

use ferrite_protocol::image_info::ImageInfo;

use super::DeployError;
use crate::image::verify::{find_in_checksums_file, Algo, Expected};

/// A checksum file holds one line per image; a few MiB is plenty
/// (IPA reads the whole file, unbounded).
pub const CHECKSUM_FILE_MAX: u64 = 4 << 20;

/// The digest to verify `info`'s image against.
pub async fn expected(
    info: &ImageInfo,
    http: &reqwest::Client,
    md5_enabled: bool,
) -> Result<Expected, DeployError> {
    if let (Some(algo), Some(value)) = (&info.os_hash_algo, &info.os_hash_value) {
        if let Some(algo) = Algo::parse(algo) {
            return Expected::new(algo, value).map_err(DeployError::InvalidParams);
        }
    }
    let checksum = info.checksum.clone().ok_or_else(|| {
        DeployError::InvalidParams(format!(
            "Image {} has no checksum this agent can verify",
            info.id
        ))
    })?;
    let hex = if checksum.starts_with("http://") || checksum.starts_with("https://") {
        let failed = |e: &dyn std::fmt::Display| {
            DeployError::download(&info.id, format!("checksum file {checksum}: {e}"))
        };
        let resp = http
            .get(&checksum)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| failed(&e))?;
        let body = super::body::read_capped(resp, CHECKSUM_FILE_MAX)
            .await
            .map_err(|e| failed(&e))?;
        let text = String::from_utf8_lossy(&body);
        let name = info
            .urls
            .first()
            .and_then(|u| u.rsplit('/').next())
            .unwrap_or_default()
            .to_string();
        find_in_checksums_file(&text, &name).ok_or_else(|| {
            DeployError::download(
                &info.id,
                format!("checksum file {checksum} has no entry for {name}"),
            )
        })?
    } else {
        checksum
    };
    let algo = Algo::by_hex_len(hex.trim().len()).ok_or_else(|| {
        DeployError::InvalidParams(format!("cannot tell the algorithm of checksum {hex:?}"))
    })?;
    if algo == Algo::Md5 && !md5_enabled {
        return Err(DeployError::InvalidParams(
            "md5 checksums are disabled by the conductor".into(),
        ));
    }
    Expected::new(algo, &hex).map_err(DeployError::InvalidParams)
}
