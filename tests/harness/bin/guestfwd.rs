//! QEMU's slirp runs this once per guest connection to the sealed guest's
//! 10.0.2.100:80 (`guestfwd=...-cmd:`), with the connection on stdin and
//! stdout: relay it to the conductor on 127.0.0.1:<port>. Under
//! `restrict=on` this is the guest's only way out. It replaces a Python
//! relay whose start-up (a few hundred ms on a busy host) the boot
//! timeline counted as the agent's.
//!
//! usage: ferrite-test-guestfwd PORT

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

fn main() {
    let Some(port) = std::env::args().nth(1).and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!("usage: ferrite-test-guestfwd PORT");
        std::process::exit(2);
    };
    let conductor = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferrite-test-guestfwd: connecting to 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    let mut up = conductor.try_clone().expect("cloning the socket");
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut up);
        let _ = up.shutdown(Shutdown::Write);
    });
    let mut down = conductor;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    // Flushed per read: stdout is a pipe to slirp, and a reply must not
    // wait in a buffer.
    while let Ok(n) = down.read(&mut buf) {
        if n == 0 || out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
            break;
        }
    }
}
