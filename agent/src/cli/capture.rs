//! `ferrite-agent capture-hardware --out DIR|FILE.tar|-`: record what the
//! inventory reads from this machine as a test fixture
//! (`agent/tests/fixtures/hardware/<machine>`). The ramdisk does the same
//! as PID 1 with `ferrite-capture-hardware=/dev/vdX` (see
//! `hardware::capture`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::hardware::capture::{capture, prepare_out_dir};
use crate::hardware::inventory::Roots;

#[derive(clap::Args, Debug)]
pub struct CaptureArgs {
    /// A directory (replaced if it holds a previous capture), a `.tar`
    /// file or block device, or `-` for a tar on stdout.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: CaptureArgs, roots: &Roots) -> anyhow::Result<()> {
    let tree = capture(roots);
    let out = &args.out;
    let is_block = std::fs::metadata(out).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_block_device()
    });
    if out.as_os_str() == "-" {
        let mut stdout = tree.write_tar(std::io::stdout().lock())?;
        stdout.flush()?;
        return Ok(());
    }
    if is_block || out.extension().is_some_and(|e| e == "tar") {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(!is_block)
            .truncate(!is_block)
            .open(out)
            .with_context(|| format!("opening {}", out.display()))?;
        tree.write_tar(file)?.sync_all()?;
    } else {
        prepare_out_dir(out)?;
        tree.write_dir(out)?;
    }
    eprintln!("captured {} files into {}", tree.files(), out.display());
    Ok(())
}
