//! Pseudo-terminals for interactive sessions: `openpty` with the client's
//! window size, and window-change (`TIOCSWINSZ`, which also sends the
//! shell SIGWINCH).

use std::os::fd::{AsRawFd, OwnedFd};

use nix::pty::{openpty, Winsize};

/// A window size as the client gives it (columns, rows, pixels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub cols: u32,
    pub rows: u32,
    pub pix_width: u32,
    pub pix_height: u32,
}

impl Size {
    fn winsize(self) -> Winsize {
        // A client may send anything; the kernel's fields are u16.
        let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        Winsize {
            ws_row: clamp(self.rows),
            ws_col: clamp(self.cols),
            ws_xpixel: clamp(self.pix_width),
            ws_ypixel: clamp(self.pix_height),
        }
    }
}

pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

pub fn open(size: Size) -> std::io::Result<Pty> {
    let pty = openpty(Some(&size.winsize()), None).map_err(std::io::Error::from)?;
    Ok(Pty {
        master: pty.master,
        slave: pty.slave,
    })
}

/// Tell the terminal (and so its foreground process group) the new size.
pub fn resize(master: &impl AsRawFd, size: Size) -> std::io::Result<()> {
    let ws = size.winsize();
    // SAFETY: TIOCSWINSZ reads one struct winsize from the pointer, which
    // lives across the call; the fd is a pty master we own.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_set_and_clamped() {
        let pty = open(Size {
            cols: 100,
            rows: 30,
            pix_width: 0,
            pix_height: 0,
        })
        .unwrap();
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        let get = |ws: &mut libc::winsize| {
            // SAFETY: TIOCGWINSZ writes one struct winsize.
            let rc = unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, ws) };
            assert_eq!(rc, 0);
        };
        get(&mut ws);
        assert_eq!((ws.ws_col, ws.ws_row), (100, 30));
        resize(
            &pty.master,
            Size {
                cols: 1 << 20,
                rows: 50,
                pix_width: 0,
                pix_height: 0,
            },
        )
        .unwrap();
        get(&mut ws);
        assert_eq!((ws.ws_col, ws.ws_row), (u16::MAX, 50));
    }
}
