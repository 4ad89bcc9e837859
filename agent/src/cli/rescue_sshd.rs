//! `ferrite-agent rescue-sshd`: the rescue ssh server (`rescue::sshd`), as
//! PID 1 runs it once the machine is rescued; tests run it on 127.0.0.1.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use crate::rescue::sshd::{self, Settings};

#[derive(clap::Args, Debug)]
pub struct RescueSshdArgs {
    /// Address to listen on; repeat for fallbacks (the first that binds is used).
    #[arg(long, default_values = ["[::]:22", "0.0.0.0:22"])]
    pub listen: Vec<SocketAddr>,
    /// The rescue user's crypt(3) hash, as `rescue.finalize_rescue` wrote it.
    #[arg(long, default_value = "/etc/ipa-rescue-config/ipa-rescue-password")]
    pub password_file: PathBuf,
    /// The shell for logins (`-sh`) and commands (`sh -c`).
    #[arg(long, default_value = "/bin/sh")]
    pub shell: PathBuf,
}

pub fn run(args: RescueSshdArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(sshd::run(Settings {
        listen: args.listen,
        password_file: args.password_file,
        shell: args.shell,
    }))
}
