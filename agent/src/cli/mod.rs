//! Subcommands besides running as the agent.

pub mod dhcp;
pub mod write_image;
