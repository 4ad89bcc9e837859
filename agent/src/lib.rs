//! ferrite-agent: a deploy ramdisk agent that speaks ironic-python-agent's
//! protocol. `main.rs` is a thin shell over [`agent::run`].

pub mod agent;
pub mod api;
pub mod bootloader;
pub mod cli;
pub mod command_progress;
pub mod commands;
pub mod config;
pub mod consoles;
pub mod deploy;
pub mod disk;
pub mod errors;
pub mod hardware;
pub mod image;
pub mod init;
pub mod ironic;
pub mod logbuf;
pub mod logfile;
pub mod power;
pub mod rescue;
pub mod secret_file;
pub mod state;
pub mod timeline;
pub mod tls;
pub mod token_store;
