//! Schema versions on PostgreSQL: the twins of the SQLite migrations, with
//! the same numbers. Append new ones; never edit a released one.
//!
//! Each runs in its own transaction under an advisory lock, so conductors
//! starting together apply it once, and `ferrite_schema` records it.

use tokio_postgres::Client;

use crate::store::rows::schema;
use crate::store::{StoreError, StoreResult};

/// An arbitrary constant: the key of the advisory lock that serialises
/// schema changes between conductors.
const MIGRATION_LOCK: i64 = 0x6665_7272_6974_6531;

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE nodes (
        id BIGSERIAL PRIMARY KEY,
        uuid TEXT NOT NULL UNIQUE,
        name TEXT UNIQUE,
        instance_uuid TEXT UNIQUE,
        provision_state TEXT NOT NULL,
        reservation TEXT,
        data TEXT NOT NULL
    );
    CREATE TABLE ports (
        id BIGSERIAL PRIMARY KEY,
        uuid TEXT NOT NULL UNIQUE,
        address TEXT NOT NULL UNIQUE,
        node_uuid TEXT NOT NULL REFERENCES nodes(uuid) ON DELETE CASCADE,
        data TEXT NOT NULL
    );
    CREATE INDEX ports_node_uuid ON ports(node_uuid);",
    "CREATE TABLE node_inventory (
        node_uuid TEXT PRIMARY KEY REFERENCES nodes(uuid) ON DELETE CASCADE,
        inventory TEXT NOT NULL,
        plugin_data TEXT NOT NULL,
        created_at TEXT NOT NULL
    );",
    "CREATE TABLE node_history (
        id BIGSERIAL PRIMARY KEY,
        uuid TEXT NOT NULL UNIQUE,
        node_uuid TEXT NOT NULL REFERENCES nodes(uuid) ON DELETE CASCADE,
        created_at TEXT NOT NULL,
        severity TEXT NOT NULL,
        event_type TEXT NOT NULL,
        event TEXT NOT NULL,
        conductor TEXT,
        \"user\" TEXT
    );
    CREATE INDEX node_history_node ON node_history(node_uuid);",
    schema::V4_CONDUCTORS,
    schema::V5_AGENT_CERTIFICATES,
    schema::V6_NODE_COLUMNS,
];

/// Bring the schema up to date.
pub async fn run(client: &mut Client) -> StoreResult<()> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS ferrite_schema (
            version BIGINT PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await?;
    tx.commit().await?;
    for (index, ddl) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM ferrite_schema WHERE version = $1",
                &[&version],
            )
            .await?
            .is_some();
        if !done {
            tx.batch_execute(ddl)
                .await
                .map_err(|e| StoreError::Migration(format!("version {version}: {e}")))?;
            tx.execute(
                "INSERT INTO ferrite_schema (version) VALUES ($1)",
                &[&version],
            )
            .await?;
            tracing::info!(version, "applied PostgreSQL schema migration");
        }
        tx.commit().await?;
    }
    let newer = client
        .query_one("SELECT coalesce(max(version), 0) FROM ferrite_schema", &[])
        .await?
        .try_get::<_, i64>(0)?;
    if newer > MIGRATIONS.len() as i64 {
        return Err(StoreError::Migration(format!(
            "the database is at schema version {newer}, newer than this conductor's {}; upgrade the conductor",
            MIGRATIONS.len()
        )));
    }
    Ok(())
}
