use clap::Parser;
use ferrite_conductor::config::ConductorConfig;
use tracing_subscriber::EnvFilter;

/// Minimal Ironic-compatible conductor: Ironic's REST API subset, the agent
/// lookup/heartbeat endpoints and the flows they drive, on SQLite.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: ConductorConfig,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print an htpasswd line (bcrypt) for USER, the password read from
    /// stdin's first line: `ferrite-conductor htpasswd admin >> htpasswd`.
    Htpasswd {
        user: String,
        /// bcrypt cost (work factor, 4 to 31).
        #[arg(long, default_value_t = bcrypt::DEFAULT_COST)]
        cost: u32,
    },
}

fn htpasswd(user: &str, cost: u32) -> anyhow::Result<()> {
    use anyhow::Context;
    if user.is_empty() || user.contains(':') {
        anyhow::bail!("a user name must be non-empty and have no ':'");
    }
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("reading the password from stdin")?;
    let password = password.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        anyhow::bail!("empty password on stdin");
    }
    println!(
        "{}",
        ferrite_conductor::auth::htpasswd::line(user, password, cost)?
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Htpasswd { user, cost }) = &cli.command {
        return htpasswd(user, *cost);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FERRITE_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,hyper=info,rustls=info,reqwest=info"))
                // The PostgreSQL driver logs every statement's parameters
                // at debug: node documents, with tokens and BMC passwords.
                // Capped whatever FERRITE_LOG asks, so no filter leaks them.
                .add_directive(
                    "tokio_postgres=info"
                        .parse()
                        .expect("a constant, valid directive"),
                ),
        )
        .with_ansi(false)
        .init();
    tokio::runtime::Runtime::new()?.block_on(ferrite_conductor::serve(cli.config))
}
