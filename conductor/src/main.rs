use clap::Parser;
use ferrite_conductor::config::ConductorConfig;
use tracing_subscriber::EnvFilter;

/// Minimal Ironic-compatible conductor: Ironic's REST API subset, the agent
/// lookup/heartbeat endpoints and the flows they drive, on SQLite.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: ConductorConfig,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FERRITE_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,hyper=info,rustls=info,reqwest=info")),
        )
        .with_ansi(false)
        .init();
    tokio::runtime::Runtime::new()?.block_on(ferrite_conductor::serve(cli.config))
}
