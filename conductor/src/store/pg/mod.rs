//! The shared engine: PostgreSQL, for several conductors on one fleet.
//! tokio-postgres connections in a deadpool pool; every wait is bounded
//! (connect, pool checkout, statement), and a lost database is
//! [`StoreError::Unavailable`], which the API answers with a 503. TLS, on
//! by default and always verified, is [`tls`]'s.

mod conductors;
mod history;
mod inventory;
mod migrations;
mod nodes;
mod ports;
mod tls;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Timeouts};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use super::{ConnectOptions, StoreError, StoreResult};

/// How long a request waits for a connection, and for one statement.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const STATEMENT_TIMEOUT_MS: u32 = 30_000;

/// Cheap to clone: the pool is shared.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
}

impl Db {
    /// Connect to `url` (`postgresql://user[:password]@host[:port]/db`,
    /// with libpq's `sslmode` and `sslrootcert`) and bring the schema up to
    /// date. A password in `options` replaces one in the URL, so that it
    /// need not sit on a command line.
    pub async fn connect(
        url: &str,
        options: &ConnectOptions,
        pool_size: usize,
    ) -> StoreResult<Self> {
        let tls::Target {
            mut config,
            mode,
            trust,
            local,
        } = tls::Target::parse(url, options.ca_file.as_deref())?;
        if let Some(password) = &options.password {
            config.password(password);
        }
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .application_name("ferrite-conductor")
            .options(format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"));
        let recycling = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = if mode == SslMode::Disable {
            if !local {
                tracing::warn!("PostgreSQL over TCP without TLS (sslmode=disable)");
            }
            Manager::from_config(config, NoTls, recycling)
        } else {
            tracing::info!(sslmode = ?mode, verified_by = %trust, "PostgreSQL over TLS");
            Manager::from_config(config, tls::connector(&trust)?, recycling)
        };
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .timeouts(Timeouts {
                wait: Some(CHECKOUT_TIMEOUT),
                create: Some(CONNECT_TIMEOUT),
                recycle: Some(CONNECT_TIMEOUT),
            })
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let db = Self { pool };
        migrations::run(&mut *db.client().await?).await?;
        let filled = db.fill_node_columns().await?;
        if filled > 0 {
            tracing::info!(
                nodes = filled,
                "filled the listing columns of nodes stored before them"
            );
        }
        Ok(db)
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            StoreError::Unavailable(match e {
                deadpool_postgres::PoolError::Timeout(_) => {
                    "timed out waiting for a database connection".to_string()
                }
                // The driver's text names the host and port, never the password.
                deadpool_postgres::PoolError::Backend(e) => {
                    let mut text = format!("cannot reach the database: {}", error_chain(&e));
                    if let Some(hint) = tls::hint(&e) {
                        text = format!("{text} ({hint})");
                    }
                    text
                }
                other => format!("cannot reach the database: {other}"),
            })
        })
    }
}

/// An error and its causes, as one line: the driver's own text is only
/// its kind ("error performing TLS handshake"), the cause says which.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text = format!("{text}: {cause}");
        next = cause.source();
    }
    text
}

/// A driver error: a lost connection is `Unavailable`; a database error
/// keeps its text.
fn db_error(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Db(format!("{} ({})", db.message(), db.code().code())),
        None if e.is_closed() || e.to_string().contains("connection") => {
            StoreError::Unavailable(format!("lost the database connection: {e}"))
        }
        None => StoreError::Unavailable(format!("database error: {e}")),
    }
}

/// Unique and foreign-key violations are conflicts, as on SQLite.
fn constraint(e: tokio_postgres::Error, message: impl FnOnce() -> String) -> StoreError {
    match e.code() {
        Some(code)
            if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::FOREIGN_KEY_VIOLATION =>
        {
            StoreError::Conflict(message())
        }
        _ => db_error(e),
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        db_error(e)
    }
}
