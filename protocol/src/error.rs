//! Error bodies. The agent answers WSME-style `{faultcode, faultstring}`;
//! the Ironic API wraps the same object, JSON-encoded, in `error_message`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultBody {
    /// `Client` for 4xx, `Server` for 5xx.
    pub faultcode: String,
    pub faultstring: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debuginfo: Option<String>,
}

impl FaultBody {
    pub fn for_status(status: u16, faultstring: impl Into<String>) -> Self {
        Self {
            faultcode: if status >= 500 { "Server" } else { "Client" }.into(),
            faultstring: faultstring.into(),
            debuginfo: None,
        }
    }
}

/// Ironic API error: `{"error_message": "{\"faultcode\": ..., \"faultstring\": ..., \"debuginfo\": null}"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IronicErrorBody {
    pub error_message: String,
}

impl IronicErrorBody {
    pub fn new(status: u16, faultstring: impl Into<String>) -> Self {
        let inner = serde_json::json!({
            "faultcode": if status >= 500 { "Server" } else { "Client" },
            "faultstring": faultstring.into(),
            "debuginfo": null,
        });
        Self {
            error_message: inner.to_string(),
        }
    }

    /// The human text inside, whatever the nesting.
    pub fn faultstring(&self) -> String {
        serde_json::from_str::<FaultBody>(&self.error_message)
            .map(|f| f.faultstring)
            .unwrap_or_else(|_| self.error_message.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ironic_body_matches_capture() {
        let captured = r#"{"error_message": "{\"faultcode\": \"Client\", \"faultstring\": \"TLS is required by configuration\", \"debuginfo\": null}"}"#;
        let parsed: IronicErrorBody = serde_json::from_str(captured).unwrap();
        assert_eq!(parsed.faultstring(), "TLS is required by configuration");
        let ours = IronicErrorBody::new(400, "TLS is required by configuration");
        let a: serde_json::Value = serde_json::from_str(&ours.error_message).unwrap();
        let b: serde_json::Value = serde_json::from_str(&parsed.error_message).unwrap();
        assert_eq!(a, b);
    }
}
