//! Ironic API microversions (`X-OpenStack-Ironic-API-Version`).

use std::fmt;
use std::str::FromStr;

/// Request/response header carrying the negotiated microversion.
pub const VERSION_HEADER: &str = "X-OpenStack-Ironic-API-Version";
pub const MIN_VERSION_HEADER: &str = "X-OpenStack-Ironic-API-Minimum-Version";
pub const MAX_VERSION_HEADER: &str = "X-OpenStack-Ironic-API-Maximum-Version";
/// Optional request id IPA forwards from `ipa-global-request-id`.
pub const REQUEST_ID_HEADER: &str = "X-OpenStack-Request-ID";

/// A `major.minor` Ironic API microversion. Ordered, so `min`/`max` work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

impl ApiVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// Lookup and heartbeat endpoints exist.
    pub const RAMDISK_ENDPOINTS: Self = Self::new(1, 22);
    /// IPA's floor when negotiation fails (`MIN_IRONIC_VERSION`).
    pub const IPA_MINIMUM: Self = Self::new(1, 31);
    /// Heartbeat carries `agent_version`.
    pub const AGENT_VERSION: Self = Self::new(1, 36);
    /// Lookup hands out `agent_token`; heartbeat carries it.
    pub const AGENT_TOKEN: Self = Self::new(1, 62);
    /// Heartbeat carries `agent_verify_ca`; agents may use auto-TLS.
    pub const AGENT_VERIFY_CA: Self = Self::new(1, 68);
    /// Heartbeat carries `agent_status` / `agent_status_message`.
    pub const AGENT_STATUS: Self = Self::new(1, 72);
    /// `/v1/continue_inspection` exists.
    pub const CONTINUE_INSPECTION: Self = Self::new(1, 84);
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid API version {0:?}: expected <major>.<minor>")]
pub struct ParseVersionError(pub String);

impl FromStr for ApiVersion {
    type Err = ParseVersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseVersionError(s.to_string());
        let (major, minor) = s.trim().split_once('.').ok_or_else(err)?;
        Ok(Self {
            major: major.parse().map_err(|_| err())?,
            minor: minor.parse().map_err(|_| err())?,
        })
    }
}

impl serde::Serialize for ApiVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ApiVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        let v: ApiVersion = "1.115".parse().unwrap();
        assert_eq!(v, ApiVersion::new(1, 115));
        assert!(v > ApiVersion::AGENT_VERIFY_CA);
        assert!(ApiVersion::new(1, 9) < ApiVersion::new(1, 10));
        assert_eq!(v.to_string(), "1.115");
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "1", "1.", "a.b", "1.2.3", "latest"] {
            assert!(bad.parse::<ApiVersion>().is_err(), "{bad}");
        }
    }
}
