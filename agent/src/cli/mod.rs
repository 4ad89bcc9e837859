//! Subcommands besides running as the agent.

pub mod burn_memory;
pub mod capture;
pub mod dhcp;
pub mod net_up;
pub mod rescue_sshd;
pub mod write_image;
