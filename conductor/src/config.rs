//! Conductor settings: flags, each also settable from the environment.
//! Defaults suit a single embedded conductor (SQLite under the data dir).

use ferrite_protocol::rescue::HashAlgorithm;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::auth::AuthStrategy;

/// `[agent]deploy_logs_collect`: when the ramdisk's logs are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeployLogsCollect {
    /// At the end of every deploy and clean, and when one fails.
    #[value(name = "always")]
    Always,
    /// When a deploy or clean step fails (Ironic's default).
    #[value(name = "on_failure")]
    OnFailure,
    #[value(name = "never")]
    Never,
}

/// `[inspector]add_ports`: which inspected NICs get ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InspectorAddPorts {
    /// The PXE NIC if known, else all.
    #[value(name = "pxe")]
    Pxe,
    /// Those with an IP.
    #[value(name = "active")]
    Active,
    #[value(name = "all")]
    All,
    #[value(name = "disabled")]
    Disabled,
}

#[derive(Debug, Clone, Args)]
pub struct ConductorConfig {
    /// Address the Ironic API listens on.
    #[arg(long, env = "FERRITE_LISTEN", default_value = "127.0.0.1:6385")]
    pub listen: SocketAddr,
    /// Base URL clients and ramdisks reach the API at (links, ipa-api-url).
    /// Defaults to http://<listen>.
    #[arg(long, env = "FERRITE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// `[DEFAULT]auth_strategy`: `http_basic` (users from --htpasswd-file)
    /// or `noauth` (anyone who reaches the port may do anything: only for
    /// a closed lab; logged as a warning at start). The ramdisk's and the
    /// firmware's routes are open either way, as in Ironic.
    #[arg(long, env = "FERRITE_AUTH_STRATEGY", value_enum, default_value_t = AuthStrategy::HttpBasic)]
    pub auth_strategy: AuthStrategy,
    /// `[DEFAULT]http_basic_auth_user_file`: htpasswd file with bcrypt
    /// entries only (`htpasswd -nB USER`, or `ferrite-conductor htpasswd
    /// USER`). Default: <data-dir>/htpasswd.
    #[arg(long, env = "FERRITE_HTPASSWD_FILE")]
    pub htpasswd_file: Option<PathBuf>,
    /// PEM certificate chain for HTTPS on --listen (with --tls-key).
    /// public_url then defaults to https://<listen>.
    #[arg(long, env = "FERRITE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "FERRITE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA the deploy ramdisk must trust for the API (handed to it by
    /// the iPXE script as /etc/ferrite/ca.pem). Default: --tls-cert itself
    /// (right for a self-signed certificate).
    #[arg(long, env = "FERRITE_TLS_CA", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// Plain-HTTP listener for what firmware fetches (iPXE scripts, boot
    /// files, images) when the API is on TLS, as Ironic's separate
    /// http_url server. Off when unset (boot files then stay on --listen).
    #[arg(long, env = "FERRITE_BOOT_HTTP_LISTEN")]
    pub boot_http_listen: Option<SocketAddr>,
    /// Serve `GET /metrics` (Prometheus) here too, in plain HTTP and
    /// without authentication, for a scraper on a management network or
    /// localhost. Off when unset; `/metrics` on --listen is always there,
    /// behind the API's authentication.
    #[arg(long, env = "FERRITE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Base URL firmware reaches the boot files at. Defaults to
    /// http://<boot-http-listen> when that is set, else public_url.
    #[arg(long, env = "FERRITE_BOOT_PUBLIC_URL")]
    pub boot_public_url: Option<String>,
    /// Seconds a client has to send a request's headers (slow clients,
    /// half-open connections); also bounds the TLS handshake.
    #[arg(long, env = "FERRITE_HEADER_READ_TIMEOUT", default_value_t = 10)]
    pub header_read_timeout: u64,
    /// Seconds to produce a response, reading the request body included;
    /// streaming a response body (a boot file, an image) is not timed.
    #[arg(long, env = "FERRITE_REQUEST_TIMEOUT", default_value_t = 60)]
    pub request_timeout: u64,
    /// Connections served at once, over all listeners; beyond it new ones
    /// wait in the kernel's backlog (logged). RLIMIT_NOFILE is raised to
    /// its hard limit at start so that the cap is reachable.
    #[arg(long, env = "FERRITE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Listen backlog of the API and boot listeners: connections the
    /// kernel completes before they are accepted (a boot storm's agents
    /// all connect at once). The kernel caps it at net.core.somaxconn.
    #[arg(long, env = "FERRITE_LISTEN_BACKLOG", default_value_t = 4096)]
    pub listen_backlog: u32,
    /// `[conductor]workers_pool_size`: heartbeats handled at once; a
    /// heartbeat that finds them all busy is left for the next one.
    #[arg(long, env = "FERRITE_WORKERS_POOL_SIZE", default_value_t = 300,
          value_parser = clap::value_parser!(u32).range(3..))]
    pub workers_pool_size: u32,
    /// Seconds a heartbeat leaves alone an agent the conductor could not
    /// connect to; doubled on each further failure up to
    /// --agent-backoff-max, reset when it answers or its URL changes.
    #[arg(long, env = "FERRITE_AGENT_BACKOFF", default_value_t = 30)]
    pub agent_backoff: u64,
    /// Longest --agent-backoff window, seconds.
    #[arg(long, env = "FERRITE_AGENT_BACKOFF_MAX", default_value_t = 600)]
    pub agent_backoff_max: u64,
    /// State directory: the SQLite database and agent certificates live here.
    #[arg(long, env = "FERRITE_DATA_DIR", default_value = "/var/lib/ferrite")]
    pub data_dir: PathBuf,
    /// The database: `sqlite:///path/file` (default:
    /// `sqlite://<data-dir>/ferrite.sqlite`), or
    /// `postgresql://user@host:port/dbname[?sslmode=…]` for several
    /// conductors sharing one fleet (TLS required unless `sslmode` says
    /// `prefer` or `disable`, or the host is a Unix socket). Never logged
    /// with its password.
    #[arg(long, env = "FERRITE_DATABASE", value_parser = crate::store::DatabaseUrl::parse)]
    pub database: Option<crate::store::DatabaseUrl>,
    /// A file whose first line is the PostgreSQL password, so that it need
    /// not be in the URL, on a command line or in the environment.
    #[arg(long, env = "FERRITE_DATABASE_PASSWORD_FILE")]
    pub database_password_file: Option<PathBuf>,
    /// PEM file of the CAs that may issue the PostgreSQL server's
    /// certificate (default: the system's trust store). The certificate
    /// and host name are always verified when TLS is used.
    #[arg(long, env = "FERRITE_DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,
    /// PostgreSQL connections this conductor keeps at most.
    #[arg(long, env = "FERRITE_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,
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
    /// `[conductor]enable_bios_bootloader_install`: let agents run the
    /// image's grub-install for BIOS partition images (Ironic's default: off).
    #[arg(long, env = "FERRITE_ENABLE_BIOS_BOOTLOADER_INSTALL", default_value_t = false, action = clap::ArgAction::Set)]
    pub enable_bios_bootloader_install: bool,
    /// `[conductor]permitted_image_formats`: image formats agents may
    /// write (sent to them in the lookup `config`), comma-separated.
    #[arg(
        long,
        env = "FERRITE_PERMITTED_IMAGE_FORMATS",
        value_delimiter = ',',
        default_value = "raw,gpt,qcow2,iso"
    )]
    pub permitted_image_formats: Vec<String>,
    /// `[conductor]disable_deep_image_inspection`: agents skip the format
    /// checks (sent to them in the lookup `config`).
    #[arg(long, env = "FERRITE_DISABLE_DEEP_IMAGE_INSPECTION", default_value_t = false, action = clap::ArgAction::Set)]
    pub disable_deep_image_inspection: bool,
    /// `[api]restrict_lookup`: only allow lookup in the states Ironic allows.
    #[arg(long, env = "FERRITE_RESTRICT_LOOKUP", default_value_t = true, action = clap::ArgAction::Set)]
    pub restrict_lookup: bool,
    /// Deploy ramdisk files served at /boot/files/ and over TFTP
    /// (deploy.kernel, deploy.initramfs, undionly.kpxe, ipxe.efi...).
    /// Default: <data-dir>/boot.
    #[arg(long, env = "FERRITE_BOOT_DIR")]
    pub boot_dir: Option<PathBuf>,
    /// Instance images served at /images/. Default: <data-dir>/images.
    #[arg(long, env = "FERRITE_IMAGES_DIR")]
    pub images_dir: Option<PathBuf>,
    /// Serve the boot directory over TFTP here (e.g. 0.0.0.0:69); off when unset.
    #[arg(long, env = "FERRITE_TFTP_LISTEN")]
    pub tftp_listen: Option<SocketAddr>,
    /// `[pxe]kernel_append_params`: extra deploy ramdisk kernel parameters,
    /// unless the node's `driver_info.kernel_append_params` says otherwise.
    #[arg(
        long,
        env = "FERRITE_KERNEL_APPEND_PARAMS",
        default_value = "nofb vga=normal console=tty0 console=ttyS0,115200n8"
    )]
    pub kernel_append_params: String,
    /// `[conductor]automated_clean`: clean on `provide` and after undeploy.
    #[arg(long, env = "FERRITE_AUTOMATED_CLEAN", default_value_t = true, action = clap::ArgAction::Set)]
    pub automated_clean: bool,
    /// `[conductor]deploy_callback_timeout`: seconds in `wait call-back` without a heartbeat.
    #[arg(long, env = "FERRITE_DEPLOY_CALLBACK_TIMEOUT", default_value_t = 1800)]
    pub deploy_callback_timeout: u64,
    /// `[conductor]clean_callback_timeout`: seconds in `clean wait` without a heartbeat.
    #[arg(long, env = "FERRITE_CLEAN_CALLBACK_TIMEOUT", default_value_t = 1800)]
    pub clean_callback_timeout: u64,
    /// `[conductor]inspect_wait_timeout`: seconds in `inspect wait`.
    #[arg(long, env = "FERRITE_INSPECT_WAIT_TIMEOUT", default_value_t = 1800)]
    pub inspect_wait_timeout: u64,
    /// `[conductor]rescue_callback_timeout`: seconds in `rescue wait`
    /// without a heartbeat.
    #[arg(long, env = "FERRITE_RESCUE_CALLBACK_TIMEOUT", default_value_t = 1800)]
    pub rescue_callback_timeout: u64,
    /// `[conductor]rescue_kernel`: the rescue ramdisk's kernel for nodes
    /// whose `driver_info` has no `rescue_kernel`/`rescue_ramdisk` pair: an
    /// http(s) URL, or a file name in the boot directory. With neither, a
    /// rescue is refused (Ironic's `validate_rescue`).
    #[arg(long, env = "FERRITE_RESCUE_KERNEL")]
    pub rescue_kernel: Option<String>,
    /// `[conductor]rescue_ramdisk`: the rescue ramdisk's initramfs, as
    /// `--rescue-kernel`.
    #[arg(long, env = "FERRITE_RESCUE_RAMDISK")]
    pub rescue_ramdisk: Option<String>,
    /// `[conductor]rescue_password_hash_algorithm`: the crypt(3) hash the
    /// rescue password is sent to the ramdisk in (`sha256` or `sha512`).
    #[arg(long, env = "FERRITE_RESCUE_PASSWORD_HASH_ALGORITHM", default_value = "sha256",
          value_parser = parse_hash_algorithm)]
    pub rescue_password_hash_algorithm: HashAlgorithm,
    /// `[conductor]conductor_group`: nodes of this group only ("" is the default group).
    #[arg(long, env = "FERRITE_CONDUCTOR_GROUP", default_value = "")]
    pub conductor_group: String,
    /// `[conductor]heartbeat_interval`: seconds between this conductor's
    /// keepalives in the `conductors` table.
    #[arg(
        long,
        env = "FERRITE_CONDUCTOR_HEARTBEAT_INTERVAL",
        default_value_t = 10
    )]
    pub conductor_heartbeat_interval: u64,
    /// `[conductor]heartbeat_timeout`: seconds after which a conductor whose
    /// keepalive stopped is dead, and its nodes and reservations are taken over.
    #[arg(
        long,
        env = "FERRITE_CONDUCTOR_HEARTBEAT_TIMEOUT",
        default_value_t = 60
    )]
    pub conductor_heartbeat_timeout: u64,
    /// `[conductor]node_locked_retry_attempts`: how many times a request
    /// (a provision verb, power, a node update, a lookup) tries to take a
    /// node another task holds before it answers NodeLocked (409).
    #[arg(long, env = "FERRITE_NODE_LOCKED_RETRY_ATTEMPTS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub node_locked_retry_attempts: u32,
    /// `[conductor]node_locked_retry_interval`: seconds between those tries.
    #[arg(long, env = "FERRITE_NODE_LOCKED_RETRY_INTERVAL", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(0..=60))]
    pub node_locked_retry_interval: u64,
    /// `[DEFAULT]hash_ring_reset_interval`: seconds between hash ring rebuilds.
    #[arg(long, env = "FERRITE_HASH_RING_RESET_INTERVAL", default_value_t = 15)]
    pub hash_ring_reset_interval: u64,
    /// `[DEFAULT]hash_partition_exponent`: 2^N ring partitions per conductor.
    #[arg(long, env = "FERRITE_HASH_PARTITION_EXPONENT", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(0..=16))]
    pub hash_partition_exponent: u32,
    /// `[api]max_limit`: the most items one page of a collection returns,
    /// and the page size when a request gives no `limit`.
    #[arg(long, env = "FERRITE_API_MAX_LIMIT", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub api_max_limit: u64,
    /// `[conductor]check_provision_state_interval`: seconds between timeout checks.
    #[arg(long, env = "FERRITE_PERIODIC_INTERVAL", default_value_t = 10)]
    pub periodic_interval: u64,
    /// Clean step priority overrides, `step=priority` (Ironic's
    /// `[deploy]erase_devices_priority` and friends), comma-separated.
    #[arg(long, env = "FERRITE_CLEAN_STEP_PRIORITIES", value_delimiter = ',')]
    pub clean_step_priorities: Vec<String>,
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
    #[arg(long, env = "FERRITE_INSPECTOR_ADD_PORTS", value_enum,
          default_value_t = InspectorAddPorts::Pxe)]
    pub inspector_add_ports: InspectorAddPorts,
    /// `[agent]deploy_logs_collect`: `always`, `on_failure` or `never`: when
    /// to fetch the ramdisk's logs (`log.collect_system_logs`) and keep them.
    #[arg(long, env = "FERRITE_DEPLOY_LOGS_COLLECT", value_enum,
          default_value_t = DeployLogsCollect::OnFailure)]
    pub deploy_logs_collect: DeployLogsCollect,
    /// `[conductor]file_url_allowed_paths`: directories `file://` image
    /// sources may be under, comma-separated. Empty (the default): every
    /// `file://` source is refused. /dev, /sys, /proc, /boot, /run and /etc
    /// are refused whatever this says, as in Ironic (OSSA-2025-001).
    #[arg(long, env = "FERRITE_FILE_URL_ALLOWED_PATHS", value_delimiter = ',')]
    pub file_url_allowed_paths: Vec<PathBuf>,
    /// `[agent]deploy_logs_local_path`: where the logs go.
    /// Default: <data-dir>/ramdisk-logs.
    #[arg(long, env = "FERRITE_DEPLOY_LOGS_LOCAL_PATH")]
    pub deploy_logs_local_path: Option<PathBuf>,
    /// `[conductor]sync_power_state_interval`: seconds between power-state
    /// sync rounds over this conductor's nodes; 0 disables them.
    #[arg(long, env = "FERRITE_SYNC_POWER_STATE_INTERVAL", default_value_t = 120)]
    pub sync_power_state_interval: u64,
    /// `[conductor]power_state_sync_max_retries`: failed syncs in a row a
    /// node may have before it goes into maintenance with a power failure.
    #[arg(
        long,
        env = "FERRITE_POWER_STATE_SYNC_MAX_RETRIES",
        default_value_t = 3
    )]
    pub power_state_sync_max_retries: u32,
    /// `[conductor]sync_power_state_workers`: nodes synced at once.
    #[arg(long, env = "FERRITE_SYNC_POWER_STATE_WORKERS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub sync_power_state_workers: u32,
    /// `[conductor]periodic_max_workers`: the cap on any periodic task's
    /// concurrency, power sync included.
    #[arg(long, env = "FERRITE_PERIODIC_MAX_WORKERS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub periodic_max_workers: u32,
    /// `[conductor]force_power_state_during_sync`: a machine found in
    /// another power state than recorded is powered back to the recorded
    /// one (true), or the record follows the machine (false).
    #[arg(long, env = "FERRITE_FORCE_POWER_STATE_DURING_SYNC", default_value_t = true, action = clap::ArgAction::Set)]
    pub force_power_state_during_sync: bool,
    /// `[conductor]power_failure_recovery_interval`: seconds between checks
    /// of nodes in maintenance for a power failure; a good read ends it. 0
    /// disables them.
    #[arg(
        long,
        env = "FERRITE_POWER_FAILURE_RECOVERY_INTERVAL",
        default_value_t = 300
    )]
    pub power_failure_recovery_interval: u64,
}

impl ConductorConfig {
    pub fn public_url(&self) -> String {
        let scheme = if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}", self.listen))
            .trim_end_matches('/')
            .to_string()
    }

    /// Where firmware fetches iPXE scripts and boot files.
    pub fn boot_url(&self) -> String {
        match (&self.boot_public_url, self.boot_http_listen) {
            (Some(url), _) => url.trim_end_matches('/').to_string(),
            (None, Some(listen)) => format!("http://{listen}"),
            (None, None) => self.public_url(),
        }
    }

    pub fn htpasswd_path(&self) -> PathBuf {
        self.htpasswd_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("htpasswd"))
    }

    /// The CA ramdisks are given, when the API is on TLS.
    pub fn tls_ca_path(&self) -> Option<PathBuf> {
        self.tls_ca.clone().or_else(|| self.tls_cert.clone())
    }

    pub fn host_name(&self) -> String {
        self.host.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "ferrite-conductor".into())
        })
    }

    pub fn database(&self) -> crate::store::DatabaseUrl {
        self.database.clone().unwrap_or_else(|| {
            crate::store::DatabaseUrl::Sqlite(self.data_dir.join("ferrite.sqlite"))
        })
    }

    pub fn boot_dir(&self) -> PathBuf {
        self.boot_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("boot"))
    }

    pub fn images_dir(&self) -> PathBuf {
        self.images_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("images"))
    }

    pub fn deploy_logs_dir(&self) -> PathBuf {
        self.deploy_logs_local_path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("ramdisk-logs"))
    }

    pub fn certificates_dir(&self) -> PathBuf {
        self.data_dir.join("certificates")
    }

    pub fn agent_command_timeout(&self) -> Duration {
        Duration::from_secs(self.agent_command_timeout)
    }
}

fn parse_hash_algorithm(name: &str) -> Result<HashAlgorithm, String> {
    HashAlgorithm::parse(name).ok_or_else(|| format!("{name}: expected sha256 or sha512"))
}
