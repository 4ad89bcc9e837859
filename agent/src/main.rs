use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use ferrite_agent::config::{parse_cmdline, Config};

/// Deploy agent for OpenStack Ironic, wire-compatible with ironic-python-agent.
///
/// Settings come from the kernel command line (IPA's names: ipa-api-url,
/// BOOTIF, ipa-advertise-host, ...); `--param` overrides single values, for
/// running outside a ramdisk.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Kernel command line to read.
    #[arg(long, default_value = "/proc/cmdline", conflicts_with = "cmdline")]
    cmdline_file: PathBuf,
    /// Kernel command line given literally instead of read from a file.
    #[arg(long)]
    cmdline: Option<String>,
    /// Override one parameter, e.g. `-p ipa-api-url=http://127.0.0.1:6385`.
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Root of the sysfs tree to read hardware from (fixtures in tests).
    #[arg(long, default_value = "/sys")]
    sysfs_root: PathBuf,
    /// Root of the procfs tree to read from.
    #[arg(long, default_value = "/proc")]
    procfs_root: PathBuf,
    /// Root of the device tree (`/dev/disk/by-path` links).
    #[arg(long, default_value = "/dev")]
    dev_root: PathBuf,
    /// Scratch directory for the TLS certificate and key.
    #[arg(long, default_value = "/run/ferrite-agent")]
    run_dir: PathBuf,
    /// Root under which rescue mode writes `etc/ipa-rescue-config/` and
    /// `etc/.rescued` (tests point it at a temporary tree).
    #[arg(long, default_value = "/")]
    rescue_root: PathBuf,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Stream an image to a block device or file with the deploy engine.
    WriteImage(ferrite_agent::cli::write_image::WriteImageArgs),
    /// Print this machine's hardware inventory (IPA's `list_hardware_info`) as JSON.
    Inventory {
        /// Do not ask the BMC for its addresses (Ironic's `agent_skip_bmc_detect`).
        #[arg(long)]
        skip_bmc: bool,
        /// Listen this many seconds for LLDP on each NIC (`ipa-collect-lldp`).
        #[arg(long, value_name = "SECONDS")]
        lldp: Option<f64>,
    },
    /// Record what the inventory reads (sysfs, procfs, /dev links) as a
    /// test fixture tree or tar; `--sysfs-root` etc. choose the sources.
    CaptureHardware(ferrite_agent::cli::capture::CaptureArgs),
    /// Run the ramdisk's DHCP client on one interface and print the lease.
    Dhcp(ferrite_agent::cli::dhcp::DhcpArgs),
    /// Bring up IPv6 and/or VLAN interfaces as PID 1 does, and print the addresses.
    NetUp(ferrite_agent::cli::net_up::NetUpArgs),
    /// The rescue ssh server PID 1 runs once the machine is rescued.
    RescueSshd(ferrite_agent::cli::rescue_sshd::RescueSshdArgs),
    /// The memory burn-in's worker process (started by `burnin_memory`).
    #[command(hide = true)]
    BurnMemory(ferrite_agent::cli::burn_memory::BurnMemoryArgs),
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let cmdline = match &cli.cmdline {
        Some(line) => line.clone(),
        None => std::fs::read_to_string(&cli.cmdline_file)
            .with_context(|| format!("reading {}", cli.cmdline_file.display()))?,
    };
    let mut params: BTreeMap<String, String> = parse_cmdline(&cmdline);
    for p in &cli.params {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--param {p:?}: expected KEY=VALUE"))?;
        params.insert(k.to_string(), v.to_string());
    }
    let mut config = Config::from_params(&params)?;
    config.sysfs_root = cli.sysfs_root.clone();
    config.procfs_root = cli.procfs_root.clone();
    config.dev_root = cli.dev_root.clone();
    config.run_dir = cli.run_dir.clone();
    config.rescue_root = cli.rescue_root.clone();
    Ok(config)
}

/// musl's allocator returns large blocks to the kernel on every free, so
/// each 1 MiB image chunk costs an mmap and 256 page faults; mimalloc keeps
/// and reuses them (and does the same job under glibc).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // No transparent huge pages for the agent and what it runs: they back
    // mimalloc's per-thread pages 2 MiB at a time, and with a dozen image
    // threads each touching a little, writing a 1 GiB zstd qcow2 peaked at
    // 74-80 MiB resident instead of 53, at no gain in speed.
    // Best effort: a kernel without THP has nothing to disable.
    let _ = nix::sys::prctl::set_thp_disable(true);
    // The ramdisk's /init: set the machine up, then run and supervise the
    // agent proper (this binary again, as a child).
    if std::process::id() == 1 {
        ferrite_agent::init::run();
    }
    // The kernel's request_module() runs /sbin/modprobe (a link to this
    // binary in the ramdisk) for filesystems, crypto and the like.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name() == Some("modprobe".as_ref()) {
        let args: Vec<String> = std::env::args().skip(1).collect();
        std::process::exit(ferrite_agent::init::modules::modprobe::main(&args));
    }
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Inventory { skip_bmc, lldp }) => {
            let mut config = Config {
                sysfs_root: cli.sysfs_root.clone(),
                procfs_root: cli.procfs_root.clone(),
                dev_root: cli.dev_root.clone(),
                ..Config::default()
            };
            if let Some(secs) = lldp {
                config.collect_lldp = true;
                config.lldp_timeout = std::time::Duration::try_from_secs_f64(secs)
                    .context("--lldp: expected a number of seconds")?;
            }
            let inventory = ferrite_agent::hardware::inventory::collect_for(&config, skip_bmc);
            println!("{}", serde_json::to_string_pretty(&inventory)?);
            return Ok(());
        }
        Some(Command::WriteImage(args)) => {
            ferrite_agent::logbuf::init(false);
            if let Err(e) = ferrite_agent::cli::write_image::run(args) {
                eprintln!("ferrite-agent write-image: {e:#}");
                std::process::exit(1);
            }
            return Ok(());
        }
        Some(Command::CaptureHardware(args)) => {
            let roots = ferrite_agent::hardware::inventory::Roots {
                sysfs: cli.sysfs_root.clone(),
                procfs: cli.procfs_root.clone(),
                dev: cli.dev_root.clone(),
            };
            if let Err(e) = ferrite_agent::cli::capture::run(args, &roots) {
                eprintln!("ferrite-agent capture-hardware: {e:#}");
                std::process::exit(1);
            }
            return Ok(());
        }
        Some(Command::Dhcp(args)) => {
            ferrite_agent::logbuf::init(true);
            if let Err(e) = ferrite_agent::cli::dhcp::run(args) {
                eprintln!("ferrite-agent dhcp: {e:#}");
                std::process::exit(1);
            }
            return Ok(());
        }
        Some(Command::NetUp(args)) => {
            ferrite_agent::logbuf::init(true);
            if let Err(e) = ferrite_agent::cli::net_up::run(args) {
                eprintln!("ferrite-agent net-up: {e:#}");
                std::process::exit(1);
            }
            return Ok(());
        }
        Some(Command::RescueSshd(args)) => {
            ferrite_agent::logbuf::init(false);
            if let Err(e) = ferrite_agent::cli::rescue_sshd::run(args) {
                // To the console (and the agent's log file) through logbuf.
                tracing::error!("ferrite-agent rescue-sshd: {e:#}");
                std::process::exit(1);
            }
            return Ok(());
        }
        Some(Command::BurnMemory(args)) => {
            if let Err(e) = ferrite_agent::cli::burn_memory::run(args) {
                eprintln!("ferrite-agent burn-memory: {e:#}");
                std::process::exit(1);
            }
            return Ok(());
        }
        None => {}
    }
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrite-agent: configuration error: {e:#}");
            std::process::exit(2);
        }
    };
    let logs = ferrite_agent::logbuf::init(config.debug);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(ferrite_agent::agent::run(config, logs))
}
