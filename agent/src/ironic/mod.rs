//! Talking to the Ironic API: version negotiation, lookup, heartbeats.

pub mod client;
pub mod heartbeat;
pub mod inspection;
pub mod lookup;

pub use client::IronicClient;
