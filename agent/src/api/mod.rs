//! IPA's REST API on port 9999: the routes, the command registry and the
//! runner that enforces one command at a time.

pub mod body;
pub mod registry;
pub mod runner;
pub mod server;

pub use server::{router, serve, ApiState};
