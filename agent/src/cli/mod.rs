//! Subcommands besides running as the agent.

pub mod write_image;
