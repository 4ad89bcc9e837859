//! The agent session: what a node's `driver_internal_info` carries about
//! the ramdisk running on it, under Ironic's key names (the REST API
//! shows them, and Ironic's own tools read them). One typed view, so that
//! the heartbeat, the agent clients, fast track and the wipes read and
//! write the same keys.

use ferrite_protocol::node::Node;
use serde_json::{Map, Value};

/// Where the agent's command API listens (`callback_url`).
pub const URL: &str = "agent_url";
/// The token lookup handed the agent; every heartbeat and command carries it.
pub const TOKEN: &str = "agent_secret_token";
/// Set when the token came from the kernel command line (virtual media).
pub const TOKEN_PREGENERATED: &str = "agent_secret_token_pregenerated";
/// The path of the agent's certificate, when it sent one.
pub const VERIFY_CA: &str = "agent_verify_ca";
/// When the agent last heartbeated (Ironic's internal time format).
pub const LAST_HEARTBEAT: &str = "agent_last_heartbeat";
/// The agent's version, from its heartbeats.
pub const VERSION: &str = "agent_version";
pub const STATUS: &str = "agent_status";
pub const STATUS_MESSAGE: &str = "agent_status_message";

/// What ends with the ramdisk (Ironic's `wipe_token_and_url`, plus the
/// heartbeat time, so that fast track cannot trust a URL that is gone).
const ENDS_WITH_THE_RAMDISK: &[&str] = &[TOKEN, TOKEN_PREGENERATED, URL, VERIFY_CA, LAST_HEARTBEAT];

/// A node's agent session, read from its `driver_internal_info`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentSession {
    pub url: Option<String>,
    pub token: Option<String>,
    /// The recorded certificate path (which may be another conductor's).
    pub verify_ca: Option<String>,
    pub last_heartbeat: Option<String>,
}

fn text(dii: &Map<String, Value>, key: &str) -> Option<String> {
    dii.get(key).and_then(Value::as_str).map(str::to_string)
}

impl AgentSession {
    pub fn read(dii: &Map<String, Value>) -> Self {
        Self {
            url: text(dii, URL),
            token: text(dii, TOKEN),
            verify_ca: text(dii, VERIFY_CA),
            last_heartbeat: text(dii, LAST_HEARTBEAT),
        }
    }

    pub fn of(node: &Node) -> Self {
        Self::read(&node.driver_internal_info)
    }

    /// Forget the session: the ramdisk is gone (power off, a new boot, the
    /// end of a flow).
    pub fn wipe(dii: &mut Map<String, Value>) {
        for key in ENDS_WITH_THE_RAMDISK {
            dii.remove(*key);
        }
    }
}

/// What a heartbeat records.
pub struct Beat<'a> {
    pub url: &'a str,
    pub version: Option<&'a str>,
    pub status: Option<&'a str>,
    pub status_message: Option<&'a str>,
    /// The certificate's path, when the agent sent one.
    pub verify_ca: Option<String>,
    pub at: String,
}

impl Beat<'_> {
    pub fn record(self, dii: &mut Map<String, Value>) {
        let mut put = |key: &str, value: &str| {
            dii.insert(key.into(), Value::String(value.to_string()));
        };
        put(URL, self.url);
        if let Some(v) = self.version {
            put(VERSION, v);
        }
        if let Some(s) = self.status {
            put(STATUS, s);
        }
        if let Some(m) = self.status_message {
            put(STATUS_MESSAGE, m);
        }
        if let Some(path) = &self.verify_ca {
            put(VERIFY_CA, path);
        }
        put(LAST_HEARTBEAT, &self.at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_beat_is_read_back_and_wiped_with_the_ramdisk() {
        let mut dii = Map::new();
        dii.insert(TOKEN.into(), json!("t0ken"));
        dii.insert(VERSION.into(), json!("old"));
        Beat {
            url: "https://10.0.0.5:9999",
            version: Some("13.0.0"),
            status: None,
            status_message: None,
            verify_ca: Some("/var/lib/ferrite/certificates/n.crt".into()),
            at: "2026-12-05T01:02:03.000000".into(),
        }
        .record(&mut dii);
        let s = AgentSession::read(&dii);
        assert_eq!(s.url.as_deref(), Some("https://10.0.0.5:9999"));
        assert_eq!(s.token.as_deref(), Some("t0ken"));
        assert_eq!(
            s.verify_ca.as_deref(),
            Some("/var/lib/ferrite/certificates/n.crt")
        );
        assert_eq!(
            s.last_heartbeat.as_deref(),
            Some("2026-12-05T01:02:03.000000")
        );
        assert_eq!(dii[VERSION], "13.0.0");
        AgentSession::wipe(&mut dii);
        assert_eq!(AgentSession::read(&dii), AgentSession::default());
        assert_eq!(
            dii[VERSION], "13.0.0",
            "the version stays, as Ironic keeps it"
        );
    }
}
