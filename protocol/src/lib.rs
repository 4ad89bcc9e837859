//! The wire: every JSON shape that crosses between an Ironic conductor and a
//! deploy agent. Field names and value strings are Ironic's and IPA's exactly
//! (docs/wire.md says what each rule is and where upstream it comes from;
//! tests/fixtures/interop holds real traffic with Ironic 39 and IPA 13);
//! both ferrite binaries use these types so that the two sides cannot drift.

pub mod agent_api;
pub mod command;
pub mod error;
pub mod heartbeat;
pub mod image_info;
pub mod inspection;
pub mod inventory;
pub mod ironic_api;
pub mod lookup;
pub mod loose;
pub mod node;
pub mod rescue;
pub mod steps;
pub mod version;

pub use command::{CommandError, CommandList, CommandRequest, CommandResult, CommandStatus};
pub use error::{FaultBody, IronicErrorBody};
pub use heartbeat::HeartbeatRequest;
pub use lookup::{LookupConfig, LookupNode, LookupResponse};
pub use version::ApiVersion;

/// The ironic-python-agent release whose wire behaviour ferrite-agent
/// implements (the Ironic 39 captures were made with IPA 13.0.0).
macro_rules! ipa_compat {
    () => {
        "13.0.0"
    };
}

/// [`AGENT_VERSION`]'s first part: the IPA release this agent stands in for.
pub const IPA_COMPAT_VERSION: &str = ipa_compat!();

/// The agent version reported in heartbeats (`agent_version`) and in
/// `/v1/status`: `<IPA release>+ferrite.<ferrite version>`, e.g.
/// `13.0.0+ferrite.0.1.0`. It parses as a PEP 440 version with a local
/// label (and as SemVer with build metadata), so tooling that compares
/// agent versions against IPA releases sees the IPA release whose API we
/// speak, and a person sees which ferrite build it is. Ironic 39 only
/// requires the field to be present (HTTP 400 otherwise) and stores it in
/// `driver_internal_info.agent_version`; it compares it with nothing.
pub const AGENT_VERSION: &str = concat!(ipa_compat!(), "+ferrite.", env!("CARGO_PKG_VERSION"));

/// `User-Agent` on the agent's downloads (images, checksum files, config
/// drives), so image servers and proxies can tell them apart in their logs.
pub const USER_AGENT: &str = concat!(
    "ferrite-agent/",
    env!("CARGO_PKG_VERSION"),
    " (ironic-python-agent/",
    ipa_compat!(),
    " compatible)"
);

/// IPA's default API port.
pub const DEFAULT_AGENT_PORT: u16 = 9999;

#[cfg(test)]
mod version_tests {
    #[test]
    fn agent_version_is_ipa_release_plus_ferrite_build() {
        let (ipa, ferrite) = super::AGENT_VERSION.split_once("+ferrite.").unwrap();
        assert_eq!(ipa, super::IPA_COMPAT_VERSION);
        assert_eq!(ferrite, env!("CARGO_PKG_VERSION"));
        for part in ipa.split('.').chain(ferrite.split('.')) {
            part.parse::<u32>().unwrap();
        }
    }
}
