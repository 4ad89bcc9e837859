//! The conductor's store: nodes and ports as JSON documents (Ironic's field
//! set is wide and grows), with the fields we query or constrain on (uuid,
//! name, MAC, state, reservation) as real columns.
//!
//! Two engines run the same statements ([`rows::sql`]): SQLite, embedded,
//! the default; and PostgreSQL, which several conductors share. The enum
//! dispatches statically, because [`Store::update_node`] takes a closure.

mod node_query;
mod pg;
mod rows;
mod sqlite;

use std::path::Path;

use ferrite_protocol::node::{Node, Port};
use serde_json::Value;

use crate::metrics::DbMetrics;

pub use node_query::{NodeQuery, Page, SortKey};
pub use rows::{ConductorRecord, HistoryEvent, StateCount, StoredInventory, CORRUPT_FAULT};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Db(String),
    /// The database cannot be reached now; the request may be retried.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("schema migration failed: {0}")]
    Migration(String),
    #[error("{0}")]
    Config(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Where the store lives: `--database`.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl DatabaseUrl {
    /// `sqlite:///abs/path` (or `sqlite://rel/path`), or
    /// `postgresql://…`/`postgres://…`.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite:// needs a file path".into());
            }
            Ok(Self::Sqlite(path.into()))
        } else if url.starts_with("postgresql://") || url.starts_with("postgres://") {
            Ok(Self::Postgres(url.to_string()))
        } else {
            Err("the database URL must start with sqlite:// or postgresql://".into())
        }
    }

    /// For logs: the engine and where, never a password.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
            Self::Postgres(url) => match url::Url::parse(url) {
                Ok(u) => format!(
                    "postgresql://{}:{}{}",
                    u.host_str().unwrap_or("localhost"),
                    u.port().unwrap_or(5432),
                    u.path()
                ),
                Err(_) => "postgresql://(unparsed URL)".into(),
            },
        }
    }
}

/// Debug output is the redacted form: a config dump must not leak a password.
impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// How to reach a PostgreSQL server, beyond its URL. No `Debug`: it
/// holds the password.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// `--database-password-file`'s: replaces a password in the URL.
    pub password: Option<String>,
    /// `--database-ca-file`: the PEM CAs that may issue the server's
    /// certificate, instead of the system's trust store.
    pub ca_file: Option<std::path::PathBuf>,
}

enum Engine {
    Sqlite(sqlite::Db),
    Postgres(pg::Db),
}

/// The database, and the time each operation takes there (every
/// operation goes through one of these methods: the one place to time).
pub struct Store {
    engine: Engine,
    metrics: DbMetrics,
}

impl Store {
    fn new(engine: Engine) -> Self {
        Self {
            engine,
            metrics: DbMetrics::default(),
        }
    }

    /// Report operation times to `metrics` (the conductor's registry).
    pub fn with_metrics(mut self, metrics: DbMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    async fn timed<T, E>(
        &self,
        operation: &'static str,
        run: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = std::time::Instant::now();
        let result = run.await;
        self.metrics
            .observe(operation, started.elapsed(), result.is_ok());
        result
    }

    /// Open (creating if needed) a SQLite file and bring its schema up to date.
    pub fn open(path: &Path) -> StoreResult<Self> {
        Ok(Self::new(Engine::Sqlite(sqlite::Db::open(path)?)))
    }

    /// A private in-memory SQLite database, for unit tests.
    pub fn in_memory() -> StoreResult<Self> {
        Ok(Self::new(Engine::Sqlite(sqlite::Db::in_memory()?)))
    }

    /// Open the database `url` names, with a pool of `pool_size` connections
    /// where the engine pools.
    pub async fn connect(
        url: &DatabaseUrl,
        options: &ConnectOptions,
        pool_size: usize,
    ) -> StoreResult<Self> {
        match url {
            DatabaseUrl::Sqlite(path) => Self::open(path),
            DatabaseUrl::Postgres(url) => Ok(Self::new(Engine::Postgres(
                pg::Db::connect(url, options, pool_size).await?,
            ))),
        }
    }

    pub fn engine(&self) -> &'static str {
        match &self.engine {
            Engine::Sqlite(_) => "sqlite",
            Engine::Postgres(_) => "postgresql",
        }
    }

    pub async fn create_node(&self, node: &Node) -> StoreResult<()> {
        self.timed("create_node", async {
            match &self.engine {
                Engine::Sqlite(db) => db.create_node(node),
                Engine::Postgres(db) => db.create_node(node).await,
            }
        })
        .await
    }

    /// By UUID, or by name when the ident is not a known UUID.
    pub async fn get_node(&self, ident: &str) -> StoreResult<Node> {
        self.timed("get_node", async {
            match &self.engine {
                Engine::Sqlite(db) => db.get_node(ident),
                Engine::Postgres(db) => db.get_node(ident).await,
            }
        })
        .await
    }

    /// [`Store::list_nodes`] from the columns alone (name, UUID, states,
    /// reservation, driver, conductor group, maintenance, power state,
    /// provision_updated_at); every other field is its default. For
    /// sweeps over the fleet: no document is read.
    pub async fn list_node_heads(&self, query: &NodeQuery) -> StoreResult<Vec<Node>> {
        self.timed("list_node_heads", async {
            match &self.engine {
                Engine::Sqlite(db) => db.list_node_heads(query),
                Engine::Postgres(db) => db.list_node_heads(query).await,
            }
        })
        .await
    }

    /// Nodes per provision state, power state and maintenance: one
    /// `GROUP BY` over the columns, for the metrics scrape.
    pub async fn node_state_counts(&self) -> StoreResult<Vec<StateCount>> {
        self.timed("node_state_counts", async {
            match &self.engine {
                Engine::Sqlite(db) => db.node_state_counts(),
                Engine::Postgres(db) => db.node_state_counts().await,
            }
        })
        .await
    }

    pub async fn list_nodes(&self, query: &NodeQuery) -> StoreResult<Vec<Node>> {
        self.timed("list_nodes", async {
            match &self.engine {
                Engine::Sqlite(db) => db.list_nodes(query),
                Engine::Postgres(db) => db.list_nodes(query).await,
            }
        })
        .await
    }

    /// Read-modify-write one node atomically. `update` may refuse with an error.
    pub async fn update_node<E, F>(&self, ident: &str, update: F) -> Result<Node, E>
    where
        E: From<StoreError>,
        F: FnOnce(&mut Node) -> Result<(), E>,
    {
        let started = std::time::Instant::now();
        // An update its caller refused is not a database error.
        let mut refused = false;
        let result = {
            let update = |n: &mut Node| {
                let r = update(n);
                refused = r.is_err();
                r
            };
            match &self.engine {
                Engine::Sqlite(db) => db.update_node(ident, update),
                Engine::Postgres(db) => db.update_node(ident, update).await,
            }
        };
        self.metrics
            .observe("update_node", started.elapsed(), result.is_ok() || refused);
        result
    }

    pub async fn delete_node(&self, uuid: &str) -> StoreResult<()> {
        self.timed("delete_node", async {
            match &self.engine {
                Engine::Sqlite(db) => db.delete_node(uuid),
                Engine::Postgres(db) => db.delete_node(uuid).await,
            }
        })
        .await
    }

    /// Take the node's exclusive lock for `host`; `Ok(false)` if someone holds it.
    pub async fn try_reserve(&self, uuid: &str, host: &str) -> StoreResult<bool> {
        self.timed("try_reserve", async {
            match &self.engine {
                Engine::Sqlite(db) => db.try_reserve(uuid, host),
                Engine::Postgres(db) => db.try_reserve(uuid, host).await,
            }
        })
        .await
    }

    pub async fn release(&self, uuid: &str, host: &str) -> StoreResult<()> {
        self.timed("release", async {
            match &self.engine {
                Engine::Sqlite(db) => db.release(uuid, host),
                Engine::Postgres(db) => db.release(uuid, host).await,
            }
        })
        .await
    }

    /// [`Store::release`] from a `Drop`, which cannot await. SQLite's call
    /// is synchronous; PostgreSQL's is spawned at once on the runtime, so
    /// the lock is free a statement's time after the guard's scope ends.
    /// Blocking a worker thread instead (`block_in_place`) made tokio start
    /// threads without end under load, and memory grew with them.
    /// `failed` hears of a release that did not happen.
    pub fn release_on_drop(
        &self,
        uuid: &str,
        host: &str,
        failed: impl FnOnce(StoreError) + Send + 'static,
    ) {
        match &self.engine {
            Engine::Sqlite(db) => {
                if let Err(e) = db.release(uuid, host) {
                    failed(e);
                }
            }
            Engine::Postgres(db) => {
                let handle = match tokio::runtime::Handle::try_current() {
                    Ok(handle) => handle,
                    Err(e) => return failed(StoreError::Unavailable(e.to_string())),
                };
                let db = db.clone();
                let (uuid, host) = (uuid.to_string(), host.to_string());
                handle.spawn(async move {
                    if let Err(e) = db.release(&uuid, &host).await {
                        failed(e);
                    }
                });
            }
        }
    }

    /// Drop every lock held by `host` (locks of a conductor that died).
    pub async fn release_all(&self, host: &str) -> StoreResult<usize> {
        self.timed("release_all", async {
            match &self.engine {
                Engine::Sqlite(db) => db.release_all(host),
                Engine::Postgres(db) => db.release_all(host).await,
            }
        })
        .await
    }

    pub async fn create_port(&self, port: &Port) -> StoreResult<()> {
        self.timed("create_port", async {
            match &self.engine {
                Engine::Sqlite(db) => db.create_port(port),
                Engine::Postgres(db) => db.create_port(port).await,
            }
        })
        .await
    }

    pub async fn get_port(&self, uuid: &str) -> StoreResult<Port> {
        self.timed("get_port", async {
            match &self.engine {
                Engine::Sqlite(db) => db.get_port(uuid),
                Engine::Postgres(db) => db.get_port(uuid).await,
            }
        })
        .await
    }

    pub async fn port_by_address(&self, address: &str) -> StoreResult<Option<Port>> {
        self.timed("port_by_address", async {
            match &self.engine {
                Engine::Sqlite(db) => db.port_by_address(address),
                Engine::Postgres(db) => db.port_by_address(address).await,
            }
        })
        .await
    }

    pub async fn list_ports(&self, node_uuid: Option<&str>) -> StoreResult<Vec<Port>> {
        self.timed("list_ports", async {
            match &self.engine {
                Engine::Sqlite(db) => db.list_ports(node_uuid),
                Engine::Postgres(db) => db.list_ports(node_uuid).await,
            }
        })
        .await
    }

    pub async fn update_port(&self, port: &Port) -> StoreResult<()> {
        self.timed("update_port", async {
            match &self.engine {
                Engine::Sqlite(db) => db.update_port(port),
                Engine::Postgres(db) => db.update_port(port).await,
            }
        })
        .await
    }

    pub async fn delete_port(&self, uuid: &str) -> StoreResult<()> {
        self.timed("delete_port", async {
            match &self.engine {
                Engine::Sqlite(db) => db.delete_port(uuid),
                Engine::Postgres(db) => db.delete_port(uuid).await,
            }
        })
        .await
    }

    /// Append to a node's history (`GET /v1/nodes/{id}/history`).
    pub async fn record_event(
        &self,
        node_uuid: &str,
        severity: &str,
        event_type: &str,
        event: &str,
        conductor: &str,
    ) -> StoreResult<()> {
        let event = HistoryEvent {
            uuid: uuid::Uuid::new_v4().to_string(),
            created_at: crate::time::api_now(),
            severity: severity.into(),
            event_type: event_type.into(),
            event: event.into(),
            conductor: Some(conductor.into()),
            user: None,
        };
        self.timed("record_event", async {
            match &self.engine {
                Engine::Sqlite(db) => db.record_event(&event, node_uuid),
                Engine::Postgres(db) => db.record_event(&event, node_uuid).await,
            }
        })
        .await
    }

    pub async fn history(&self, node_uuid: &str) -> StoreResult<Vec<HistoryEvent>> {
        self.timed("history", async {
            match &self.engine {
                Engine::Sqlite(db) => db.history(node_uuid),
                Engine::Postgres(db) => db.history(node_uuid).await,
            }
        })
        .await
    }

    pub async fn save_inventory(
        &self,
        node_uuid: &str,
        inventory: &Value,
        plugin_data: &Value,
        created_at: &str,
    ) -> StoreResult<()> {
        self.timed("save_inventory", async {
            match &self.engine {
                Engine::Sqlite(db) => {
                    db.save_inventory(node_uuid, inventory, plugin_data, created_at)
                }
                Engine::Postgres(db) => {
                    db.save_inventory(node_uuid, inventory, plugin_data, created_at)
                        .await
                }
            }
        })
        .await
    }

    /// The certificate a node's agent sent (auto-TLS), for any conductor.
    pub async fn save_agent_certificate(&self, node_uuid: &str, pem: &str) -> StoreResult<()> {
        self.timed("save_agent_certificate", async {
            match &self.engine {
                Engine::Sqlite(db) => db.save_agent_certificate(node_uuid, pem),
                Engine::Postgres(db) => db.save_agent_certificate(node_uuid, pem).await,
            }
        })
        .await
    }

    pub async fn agent_certificate(&self, node_uuid: &str) -> StoreResult<Option<String>> {
        self.timed("agent_certificate", async {
            match &self.engine {
                Engine::Sqlite(db) => db.agent_certificate(node_uuid),
                Engine::Postgres(db) => db.agent_certificate(node_uuid).await,
            }
        })
        .await
    }

    pub async fn get_inventory(&self, node_uuid: &str) -> StoreResult<Option<StoredInventory>> {
        self.timed("get_inventory", async {
            match &self.engine {
                Engine::Sqlite(db) => db.get_inventory(node_uuid),
                Engine::Postgres(db) => db.get_inventory(node_uuid).await,
            }
        })
        .await
    }

    /// Register (or re-register) a conductor, online, stamped now.
    pub async fn register_conductor(&self, record: &ConductorRecord) -> StoreResult<()> {
        self.timed("register_conductor", async {
            match &self.engine {
                Engine::Sqlite(db) => db.register_conductor(record),
                Engine::Postgres(db) => db.register_conductor(record).await,
            }
        })
        .await
    }

    /// The keepalive; `false` when the row is gone (deleted by hand).
    pub async fn touch_conductor(&self, hostname: &str, at: &str, at_us: i64) -> StoreResult<bool> {
        self.timed("touch_conductor", async {
            match &self.engine {
                Engine::Sqlite(db) => db.touch_conductor(hostname, at, at_us),
                Engine::Postgres(db) => db.touch_conductor(hostname, at, at_us).await,
            }
        })
        .await
    }

    /// A clean shutdown: the others take its nodes at their next rebuild.
    pub async fn conductor_offline(&self, hostname: &str) -> StoreResult<()> {
        self.timed("conductor_offline", async {
            match &self.engine {
                Engine::Sqlite(db) => db.conductor_offline(hostname),
                Engine::Postgres(db) => db.conductor_offline(hostname).await,
            }
        })
        .await
    }

    pub async fn list_conductors(&self) -> StoreResult<Vec<ConductorRecord>> {
        self.timed("list_conductors", async {
            match &self.engine {
                Engine::Sqlite(db) => db.list_conductors(),
                Engine::Postgres(db) => db.list_conductors().await,
            }
        })
        .await
    }

    /// Free a reservation held by a dead conductor: `true` if it was freed,
    /// `false` if the holder let go or came back alive (a row of it
    /// online and updated at or after `alive_after_us`).
    pub async fn release_orphan(
        &self,
        uuid: &str,
        holder: &str,
        alive_after_us: i64,
    ) -> StoreResult<bool> {
        self.timed("release_orphan", async {
            match &self.engine {
                Engine::Sqlite(db) => db.release_orphan(uuid, holder, alive_after_us),
                Engine::Postgres(db) => db.release_orphan(uuid, holder, alive_after_us).await,
            }
        })
        .await
    }

    /// The nodes someone holds a reservation on (an indexed query).
    pub async fn reserved_nodes(&self) -> StoreResult<Vec<Node>> {
        self.timed("reserved_nodes", async {
            match &self.engine {
                Engine::Sqlite(db) => db.reserved_nodes(),
                Engine::Postgres(db) => db.reserved_nodes().await,
            }
        })
        .await
    }
}
