//! Subcommands besides running as the agent.

pub mod capture;
pub mod dhcp;
pub mod write_image;
