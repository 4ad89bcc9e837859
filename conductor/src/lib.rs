//! ferrite-conductor: the subset of Ironic that runs bare-metal nodes with
//! ferrite-agent (or IPA), on an embedded SQLite store.

pub mod agent_certs;
pub mod agent_client;
pub mod agent_clients;
pub mod agent_session;
pub mod agent_tls;
pub mod api;
pub mod auth;
pub mod boot;
pub mod cluster;
pub mod config;
pub mod configdrive;
pub mod console;
pub mod drivers;
pub mod flows;
pub mod fsm;
pub mod inspection;
pub mod metrics;
pub mod node_view;
pub mod pairing;
pub mod periodic;
pub mod power;
pub mod provision_state;
pub mod pyrepr;
pub mod ramdisk_logs;
pub mod server;
pub mod store;
pub mod time;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::Router;

/// Open the store, free locks a previous run of this host left behind,
/// and serve the API until the process is stopped.
pub async fn serve(config: config::ConductorConfig) -> anyhow::Result<()> {
    private_data_dir(&config)?;
    let database = config.database();
    let options = store::ConnectOptions {
        password: match &config.database_password_file {
            Some(path) => Some(read_password(path)?),
            None => None,
        },
        ca_file: config.database_ca_file.clone(),
    };
    let metrics = Arc::new(metrics::Metrics::new());
    let store = Arc::new(
        store::Store::connect(&database, &options, config.db_pool_size)
            .await
            .with_context(|| format!("opening the database {}", database.redacted()))?
            .with_metrics(metrics.db.clone()),
    );
    tracing::info!(database = %database.redacted(), "store open");
    let config = Arc::new(config);
    let flows = flows::Flows::new(store.clone(), config.clone(), metrics.clone())?;
    let freed = store.release_all(flows.host()).await?;
    if freed > 0 {
        tracing::warn!(nodes = freed, "released node locks left by a previous run");
    }
    flows
        .cluster()
        .register()
        .await
        .context("registering this conductor")?;
    flows.cluster().spawn();
    flows.spawn_periodic();
    flows.resume_interrupted().await?;
    let state = api::AppState {
        store,
        config: config.clone(),
        flows: flows.clone(),
        pairing: Arc::default(),
        forwarder: Arc::new(api::forward::Forwarder::new(&config)?),
        metrics,
    };
    if let Some(tftp) = config.tftp_listen {
        boot::tftp::start(
            tftp,
            config.boot_dir(),
            boot::ipxe::entry_script(&config.public_url()),
        )
        .await
        .with_context(|| format!("starting TFTP on {tftp}"))?;
    }
    let boot_state = boot::BootState {
        store: state.store.clone(),
        config: state.config.clone(),
    };
    let auth = match config.auth_strategy {
        auth::AuthStrategy::HttpBasic => {
            let path = config.htpasswd_path();
            let users = auth::BasicAuth::load(&path).with_context(|| {
                format!(
                    "auth strategy http_basic needs users in {}; or start with --auth-strategy noauth",
                    path.display()
                )
            })?;
            tracing::info!(htpasswd = %path.display(), "API authentication: http_basic");
            Some(Arc::new(users))
        }
        auth::AuthStrategy::Noauth => {
            tracing::warn!("API authentication is OFF (--auth-strategy noauth): anyone who reaches the API may enroll, deploy, power and delete nodes");
            None
        }
    };
    // The console sits inside the same authentication as the API.
    let mut api_app = api::router(state.clone())
        .merge(boot::router(boot_state.clone()))
        .merge(console::router(state.clone(), auth.clone()));
    if let Some(auth) = auth {
        api_app = api_app.layer(from_fn_with_state(auth, auth::require));
    }
    // Outermost: refused requests are counted too.
    let api_app = api_app.layer(from_fn_with_state(
        state.metrics.clone(),
        api::metrics::count_request,
    ));
    let request_timeout = Duration::from_secs(config.request_timeout);
    let limited = |app: Router| {
        app.layer(from_fn(server::layers::body_limit))
            .layer(from_fn_with_state(
                request_timeout,
                server::layers::request_timeout,
            ))
    };
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(server::tls::acceptor(cert, key)?),
        _ => None,
    };
    let mut listeners = vec![server::Listener {
        tcp: server::bind(config.listen, config.listen_backlog)
            .with_context(|| format!("listening on {}", config.listen))?,
        tls,
        app: limited(api_app),
    }];
    if let Some(metrics_listen) = config.metrics_listen {
        listeners.push(server::Listener {
            tcp: server::bind(metrics_listen, config.listen_backlog)
                .with_context(|| format!("listening on {metrics_listen} for metrics"))?,
            tls: None,
            app: limited(api::metrics::router(state.clone())),
        });
        tracing::info!(listen = %metrics_listen, "metrics without authentication at /metrics");
    }
    if let Some(boot_listen) = config.boot_http_listen {
        listeners.push(server::Listener {
            tcp: server::bind(boot_listen, config.listen_backlog)
                .with_context(|| format!("listening on {boot_listen} for boot files"))?,
            tls: None,
            app: limited(boot::router(boot_state)),
        });
        tracing::info!(listen = %boot_listen, "boot files over plain HTTP");
    } else if config.tls_cert.is_some() {
        tracing::warn!("the API is on TLS and --boot-http-listen is unset: firmware must fetch boot files over https");
    }
    server::limits::check_backlog(config.listen_backlog);
    let limits = server::Limits {
        header_read_timeout: Duration::from_secs(config.header_read_timeout),
        max_connections: server::limits::raise_nofile(config.max_connections),
    };
    tracing::info!(listen = %config.listen, public_url = %config.public_url(), data_dir = %config.data_dir.display(), "ferrite-conductor API up");
    let served = server::serve(listeners, limits, shutdown_signal())
        .await
        .context("API server failed");
    // Leave the cluster cleanly: the others take these nodes at once,
    // instead of after the heartbeat timeout.
    if let Err(e) = flows.cluster().unregister().await {
        tracing::warn!(error = %e, "could not mark this conductor offline");
    }
    served
}

/// The first line of `--database-password-file`.
fn read_password(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the database password from {}", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// The data dir holds the database (BMC passwords, agent tokens) and agent
/// certificates: 0700, the database and its WAL files 0600, whatever the
/// umask or an earlier run left. Files made later inherit the umask 077.
fn private_data_dir(config: &config::ConductorConfig) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))?;
    if let store::DatabaseUrl::Sqlite(db) = config.database() {
        for suffix in ["", "-wal", "-shm"] {
            let path = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
            if path.exists() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("making {} private", path.display()))?;
            }
        }
    }
    let certs = config.certificates_dir();
    if certs.is_dir() {
        std::fs::set_permissions(&certs, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", certs.display()))?;
    }
    Ok(())
}

/// SIGINT or SIGTERM: finish in-flight requests, then stop.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
