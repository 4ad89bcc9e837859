//! Conductor settings: flags, each also settable from the environment.
//! Defaults suit a single embedded conductor (SQLite under the data dir).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct ConductorConfig {
    /// Address the Ironic API listens on.
    #[arg(long, env = "FERRITE_LISTEN", default_value = "127.0.0.1:6385")]
    pub listen: SocketAddr,
    /// Base URL clients and ramdisks reach the API at (links, ipa-api-url).
    /// Defaults to http://<listen>.
    #[arg(long, env = "FERRITE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// State directory: the SQLite database and agent certificates live here.
    #[arg(long, env = "FERRITE_DATA_DIR", default_value = "/var/lib/ferrite")]
    pub data_dir: PathBuf,
    /// This conductor's name, used for node reservations.
    #[arg(long, env = "FERRITE_HOST")]
    pub host: Option<String>,
    /// `[api]ramdisk_heartbeat_timeout`: seconds; agents beat at 30–60 % of it.
    #[arg(long, env = "FERRITE_HEARTBEAT_TIMEOUT", default_value_t = 300)]
    pub heartbeat_timeout: u64,
    /// `[agent]require_tls`: refuse heartbeats whose callback URL is not https.
    #[arg(long, env = "FERRITE_REQUIRE_TLS", default_value_t = true, action = clap::ArgAction::Set)]
    pub require_tls: bool,
    /// `[deploy]fast_track`: also allow lookup in enroll/manageable/available.
    #[arg(long, env = "FERRITE_FAST_TRACK", default_value_t = false, action = clap::ArgAction::Set)]
    pub fast_track: bool,
    /// `[api]restrict_lookup`: only allow lookup in the states Ironic allows.
    #[arg(long, env = "FERRITE_RESTRICT_LOOKUP", default_value_t = true, action = clap::ArgAction::Set)]
    pub restrict_lookup: bool,
    /// Hardware types nodes may use.
    #[arg(long, env = "FERRITE_HARDWARE_TYPES", value_delimiter = ',', default_value = crate::drivers::DEFAULT_HARDWARE_TYPES)]
    pub enabled_hardware_types: Vec<String>,
    /// `[agent]command_timeout`: seconds per agent API request.
    #[arg(long, env = "FERRITE_AGENT_COMMAND_TIMEOUT", default_value_t = 60)]
    pub agent_command_timeout: u64,
    /// `[agent]max_command_attempts`: retries on connection failures.
    #[arg(long, env = "FERRITE_AGENT_MAX_COMMAND_ATTEMPTS", default_value_t = 3)]
    pub agent_max_command_attempts: u32,
    /// `[agent]command_wait_interval`: seconds between polls of a running command.
    #[arg(long, env = "FERRITE_AGENT_COMMAND_WAIT_INTERVAL", default_value_t = 6)]
    pub agent_command_wait_interval: u64,
    /// `[agent]command_wait_attempts`.
    #[arg(
        long,
        env = "FERRITE_AGENT_COMMAND_WAIT_ATTEMPTS",
        default_value_t = 100
    )]
    pub agent_command_wait_attempts: u32,
    /// `[inspector]add_ports`: which inspected NICs get ports: `pxe` (the
    /// PXE NIC if known, else all), `active` (those with an IP), `all`, or
    /// `disabled`.
    #[arg(long, env = "FERRITE_INSPECTOR_ADD_PORTS", default_value = "pxe",
          value_parser = ["pxe", "active", "all", "disabled"])]
    pub inspector_add_ports: String,
}

impl ConductorConfig {
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .to_string()
    }

    pub fn host_name(&self) -> String {
        self.host.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "ferrite-conductor".into())
        })
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("ferrite.sqlite")
    }

    pub fn certificates_dir(&self) -> PathBuf {
        self.data_dir.join("certificates")
    }

    pub fn agent_command_timeout(&self) -> Duration {
        Duration::from_secs(self.agent_command_timeout)
    }
}
