//! Timestamps in the two forms Ironic shows.

use chrono::{SecondsFormat, Utc};

/// API fields (`created_at`...): `2026-11-25T13:22:49.410652+00:00`.
pub fn api_now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// `driver_internal_info` values: naive UTC, `2026-11-25T13:23:07.297494`.
pub fn internal_now() -> String {
    Utc::now()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

/// Parse an API timestamp back (naive UTC).
pub fn parse_api(s: &str) -> Option<chrono::NaiveDateTime> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.naive_utc())
}

/// Parse a `driver_internal_info` timestamp.
pub fn parse_internal(s: &str) -> Option<chrono::NaiveDateTime> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_match_ironic() {
        let api = super::api_now();
        assert!(api.ends_with("+00:00") && api.len() == 32, "{api}");
        let internal = super::internal_now();
        assert_eq!(internal.len(), 26, "{internal}");
        assert!(super::parse_api(&api).is_some());
        assert!(super::parse_internal(&internal).is_some());
    }
}
