//! The rescue ssh server: how a tenant reaches a rescued machine. After
//! `rescue.finalize_rescue` PID 1 runs it (`ferrite-agent rescue-sshd`, a
//! process of its own, respawned if it ends) on port 22. The user
//! `rescue` logs in with the password whose crypt hash Ironic sent, and
//! gets a root shell on a pseudo-terminal, or runs a command (`ssh host
//! cmd`, exit status returned).
//!
//! Built on russh (pure Rust; ring for its crypto). Limits: password
//! authentication only, [`handler::MAX_PASSWORD_ATTEMPTS`] per connection,
//! [`MAX_CONNECTIONS`] connections at once (more are closed at once),
//! [`LOGIN_GRACE`] to log in, bounded queues both ways. The host key is
//! made at each start and never stored: its fingerprint is logged.

pub mod auth;
pub mod handler;
pub mod host_key;
pub mod pty;
pub mod session;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use russh::server::Config;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use auth::PasswordCheck;
use session::ShellConfig;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 8;
/// Time from connect to login (OpenSSH's LoginGraceTime is 120 s).
pub const LOGIN_GRACE: Duration = Duration::from_secs(60);
/// Failed logins cost this long (russh makes every rejection take it).
const REJECTION_TIME: Duration = Duration::from_secs(1);

pub struct Settings {
    pub listen: Vec<SocketAddr>,
    pub password_file: PathBuf,
    pub shell: PathBuf,
}

fn config(key: russh::keys::PrivateKey) -> Config {
    Config {
        server_id: russh::SshId::Standard("SSH-2.0-ferrite_rescue".into()),
        methods: handler::methods(),
        auth_rejection_time: REJECTION_TIME,
        // OpenSSH's client asks "none" first to learn the methods.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![key],
        // The "none" probe counts as one.
        max_auth_attempts: handler::MAX_PASSWORD_ATTEMPTS as usize + 1,
        // A shell may sit idle; keepalives find clients that are gone.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 4,
        window_size: 1 << 20,
        nodelay: true,
        ..Config::default()
    }
}

/// Bind the first address that works (`[::]:22` may fail on a kernel
/// without IPv6; then `0.0.0.0:22`).
async fn bind(listen: &[SocketAddr]) -> anyhow::Result<TcpListener> {
    let mut last = None;
    for addr in listen {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => {
                warn!("rescue ssh: cannot listen on {addr}: {e}");
                last = Some(e);
            }
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("no address to listen on"), Into::into))
        .context("starting the rescue ssh server")
}

/// Serve until the process is killed.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let check = Arc::new(PasswordCheck::load(&settings.password_file));
    if let PasswordCheck::Unusable(e) = check.as_ref() {
        error!("rescue ssh: {e}; every login will be refused");
    }
    let key = host_key::generate()?;
    let fingerprint = host_key::fingerprint(&key);
    let config = Arc::new(config(key));
    let shell = Arc::new(ShellConfig {
        shell: settings.shell.clone(),
    });
    let listener = bind(&settings.listen).await?;
    let local = listener.local_addr().context("the listening address")?;
    info!(
        "rescue ssh: listening on {local}; log in as \"{}\" with the rescue password; \
         host key ED25519 {fingerprint}",
        auth::USER
    );
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: wait instead of spinning.
                warn!("rescue ssh: accept: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!("rescue ssh: {peer}: {MAX_CONNECTIONS} connections already; closed");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let authenticated = Arc::new(AtomicBool::new(false));
        let connection = handler::Connection::new(
            Some(peer),
            check.clone(),
            shell.clone(),
            authenticated.clone(),
        );
        let config = config.clone();
        tokio::spawn(async move {
            let _slot = slot;
            serve(config, stream, peer, connection, authenticated).await;
        });
    }
}

/// One connection, until it ends; cut at [`LOGIN_GRACE`] if not logged in.
async fn serve(
    config: Arc<Config>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    connection: handler::Connection,
    authenticated: Arc<AtomicBool>,
) {
    // The version exchange is inside run_stream: bounded by the grace too.
    let running = match tokio::time::timeout(
        LOGIN_GRACE,
        russh::server::run_stream(config, stream, connection),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            info!("rescue ssh: {peer}: {e}");
            return;
        }
        Err(_) => {
            info!("rescue ssh: {peer}: no ssh greeting within {LOGIN_GRACE:?}");
            return;
        }
    };
    let handle = running.handle();
    let grace = tokio::spawn(async move {
        tokio::time::sleep(LOGIN_GRACE).await;
        if !authenticated.load(Ordering::SeqCst) {
            info!("rescue ssh: {peer}: not logged in within {LOGIN_GRACE:?}; disconnecting");
            let _ = handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    "login grace time over".into(),
                    "en".into(),
                )
                .await;
        }
    });
    match running.await {
        Ok(()) => info!("rescue ssh: {peer}: connection closed"),
        Err(handler::HandlerError::Ssh(e)) => info!("rescue ssh: {peer}: {e}"),
    }
    grace.abort();
}
