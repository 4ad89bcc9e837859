//! `/sbin/modprobe` for the kernel. When code in the kernel needs a module
//! nobody loaded (a filesystem at mount time, a crypto algorithm, a block
//! major), request_module() runs `/sbin/modprobe -q -- <name>`; in the
//! ramdisk that path is a link to the agent binary, which answers from the
//! same tables PID 1 uses.

use super::Loader;

/// The kernel's call, `modprobe -q -- NAME`; the exit status is what it
/// waits for (0: loaded or already there).
pub fn main(args: &[String]) -> i32 {
    let names: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if names.is_empty() {
        eprintln!("usage: modprobe [-q] [--] MODULE");
        return 1;
    }
    let loader = match Loader::for_running_kernel() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("modprobe: {e:#}");
            return 1;
        }
    };
    let mut status = 0;
    for name in names {
        if !loader.knows(name) {
            status = 1;
        } else {
            loader.load(name);
        }
    }
    status
}
