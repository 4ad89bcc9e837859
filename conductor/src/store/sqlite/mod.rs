//! The embedded engine: one SQLite file in WAL mode, the default for a
//! lab, a rack, and `scripts/demo`.

mod conductors;
mod history;
mod inventory;
mod migrations;
mod nodes;
mod ports;

use std::borrow::Cow;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

use super::{StoreError, StoreResult};

pub struct Db {
    conn: Mutex<Connection>,
}

impl Db {
    /// Open (creating if needed) the database file and bring its schema up to date.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(db_error)?;
        Self::init(conn)
    }

    /// A private in-memory database, for unit tests.
    pub fn in_memory() -> StoreResult<Self> {
        Self::init(Connection::open_in_memory().map_err(db_error)?)
    }

    fn init(mut conn: Connection) -> StoreResult<Self> {
        let setup = |conn: &mut Connection| -> rusqlite::Result<()> {
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
        };
        setup(&mut conn).map_err(db_error)?;
        migrations::migrations()
            .to_latest(&mut conn)
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        let db = Self {
            conn: Mutex::new(conn),
        };
        let filled = db.fill_node_columns()?;
        if filled > 0 {
            tracing::info!(
                nodes = filled,
                "filled the listing columns of nodes stored before them"
            );
        }
        Ok(db)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The shared statements use PostgreSQL's `$N`; SQLite's spelling is `?N`.
fn q(sql: &str) -> Cow<'_, str> {
    if sql.contains('$') {
        Cow::Owned(sql.replace('$', "?"))
    } else {
        Cow::Borrowed(sql)
    }
}

fn db_error(e: rusqlite::Error) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Map SQLite's constraint violations to a conflict with a readable message.
fn constraint(e: rusqlite::Error, message: impl FnOnce() -> String) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(message())
        }
        _ => db_error(e),
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        db_error(e)
    }
}
