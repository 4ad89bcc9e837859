//! The wire: every JSON shape that crosses between an Ironic conductor and a
//! deploy agent. Field names and value strings are Ironic's and IPA's exactly
//! (see `shared/reference/ipa-and-ironic.md` §1–2 and the Ironic 39 captures);
//! both ferrite binaries use these types so that the two sides cannot drift.

pub mod agent_api;
pub mod command;
pub mod error;
pub mod heartbeat;
pub mod inspection;
pub mod inventory;
pub mod ironic_api;
pub mod lookup;
pub mod node;
pub mod rescue;
pub mod steps;
pub mod version;

pub use command::{CommandError, CommandList, CommandRequest, CommandResult, CommandStatus};
pub use error::{FaultBody, IronicErrorBody};
pub use heartbeat::HeartbeatRequest;
pub use lookup::{LookupConfig, LookupNode, LookupResponse};
pub use version::ApiVersion;

/// The agent version reported in heartbeats and `/v1/status`. Ironic only
/// requires it to be present; it is our own crate version.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// IPA's default API port.
pub const DEFAULT_AGENT_PORT: u16 = 9999;
