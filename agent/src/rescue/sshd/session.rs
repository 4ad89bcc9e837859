//! One channel's program: the rescue shell (a login shell, `shell`) or a
//! command (`exec`: `sh -c <command>`), on a pseudo-terminal when the
//! client asked for one, else on pipes (stderr as extended data). Its
//! output goes to the client through the session's bounded queue (russh
//! holds it while the client's window is shut); the client's input
//! reaches it through a bounded queue of its own. When the program ends
//! (and its output is drained, at most [`DRAIN_AFTER_EXIT`] later) the
//! client gets its exit status, EOF and close.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use russh::server::Handle;
use russh::ChannelId;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::pty::{self, Size};

/// Client input waiting for the program: this many chunks (each at most
/// a packet, 32 KiB).
pub const INPUT_QUEUE: usize = 32;
/// Output is read in chunks of this size.
const READ_CHUNK: usize = 16 * 1024;
/// After the program exits, its output (a background job holding the
/// terminal may keep it open) is forwarded this much longer at most.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// How sessions run their programs.
#[derive(Debug, Clone)]
pub struct ShellConfig {
    /// The shell: `sh -l` for a login, `sh -c` for a command.
    pub shell: PathBuf,
}

/// What the client asked the channel to run.
pub enum Program {
    Shell,
    Exec(Vec<u8>),
}

/// The terminal the client asked for (`pty-req`).
#[derive(Debug, Clone)]
pub struct TermRequest {
    pub term: String,
    pub size: Size,
}

/// A started program: where the client's input goes, and its terminal
/// (for window changes).
pub struct Running {
    pub input: mpsc::Sender<Bytes>,
    pub master: Option<Arc<AsyncFd<OwnedFd>>>,
    /// Dropped with the channel (closed, or the client left): the
    /// program's process group then gets SIGHUP, as on a terminal hang-up.
    _hangup: oneshot::Sender<()>,
}

fn command(
    config: &ShellConfig,
    program: &Program,
    term: Option<&TermRequest>,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&config.shell);
    match program {
        // argv[0] "-sh": a login shell (busybox picks its applet from it).
        Program::Shell => {
            cmd.arg0("-sh");
        }
        Program::Exec(line) => {
            cmd.arg("-c").arg(OsString::from_vec(line.clone()));
        }
    }
    cmd.env_clear()
        .env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
        .env("HOME", "/")
        .env("USER", super::auth::USER)
        .env("LOGNAME", super::auth::USER)
        .env("SHELL", &config.shell)
        .env("PS1", "ferrite-rescue# ")
        .current_dir("/")
        .kill_on_drop(true);
    if let Some(t) = term {
        cmd.env("TERM", &t.term);
    }
    cmd
}

/// Start `program` for `channel`; its output and end go to the client
/// through `handle`.
pub fn start(
    config: &ShellConfig,
    program: Program,
    term: Option<TermRequest>,
    handle: Handle,
    channel: ChannelId,
) -> std::io::Result<Running> {
    let mut cmd = command(config, &program, term.as_ref());
    let (input_tx, input_rx) = mpsc::channel::<Bytes>(INPUT_QUEUE);
    let with_pty = term.is_some();
    let master = match &term {
        Some(t) => {
            let pty = pty::open(t.size)?;
            cmd.stdin(pty.slave.try_clone()?)
                .stdout(pty.slave.try_clone()?)
                .stderr(pty.slave);
            Some(pty.master)
        }
        None => {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            None
        }
    };
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // PID 1 and the server block signals; the program must get them.
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            libc::setsid();
            if with_pty {
                // The terminal becomes the session's: job control, Ctrl-C.
                libc::ioctl(0, libc::TIOCSCTTY as _, 0);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    // The parent's copies of the slave went with `cmd`'s stdio.
    drop(cmd);
    let pid = child.id().unwrap_or_default();
    match &program {
        Program::Shell => info!(pid, pty = with_pty, "rescue ssh: shell started"),
        Program::Exec(_) => info!(pid, pty = with_pty, "rescue ssh: command started"),
    }

    let (hangup_tx, hangup_rx) = oneshot::channel::<()>();
    let running;
    let mut outputs = tokio::task::JoinSet::new();
    match master {
        Some(master) => {
            set_nonblocking(&master)?;
            // SAFETY: the OwnedFd is the AsyncFd's: it stays open, the
            // same descriptor, until the AsyncFd drops it.
            let master = unsafe { AsyncFd::register(master) }.map_err(|e| e.into_parts().1)?;
            let master = Arc::new(master);
            outputs.spawn(pump_out(
                PtyIo(master.clone()),
                handle.clone(),
                channel,
                None,
            ));
            tokio::spawn(pump_in(PtyIo(master.clone()), input_rx));
            running = Running {
                input: input_tx,
                master: Some(master),
                _hangup: hangup_tx,
            };
        }
        None => {
            let (Some(stdin), Some(stdout), Some(stderr)) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take())
            else {
                return Err(std::io::Error::other("the program's pipes are missing"));
            };
            outputs.spawn(pump_out(stdout, handle.clone(), channel, None));
            outputs.spawn(pump_out(stderr, handle.clone(), channel, Some(1)));
            tokio::spawn(pump_in(stdin, input_rx));
            running = Running {
                input: input_tx,
                master: None,
                _hangup: hangup_tx,
            };
        }
    }
    tokio::spawn(async move {
        // The child is not reaped before `wait` returns, so its pid (and
        // process group, from setsid) cannot be another's when signalled.
        let status = tokio::select! {
            status = child.wait() => status,
            _ = hangup_rx => {
                if let Some(group) = i32::try_from(pid).ok().filter(|&g| g > 1) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(group),
                        nix::sys::signal::Signal::SIGHUP,
                    );
                }
                child.wait().await
            }
        };
        // The output first (the last lines of a command), then the end.
        let drained = tokio::time::timeout(DRAIN_AFTER_EXIT, async {
            while outputs.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            debug!(
                pid,
                "rescue ssh: output still open after the program ended; closing"
            );
            outputs.abort_all();
        }
        let code = match status {
            Ok(s) => exit_code(s),
            Err(e) => {
                warn!(pid, "rescue ssh: waiting for the program: {e}");
                255
            }
        };
        info!(pid, code, "rescue ssh: program ended");
        let _ = handle.exit_status_request(channel, code).await;
        let _ = handle.eof(channel).await;
        let _ = handle.close(channel).await;
    });
    Ok(running)
}

/// The exit status ssh reports: the code, or 128 + the signal, as a
/// shell does.
fn exit_code(status: ExitStatus) -> u32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u32,
        (None, Some(sig)) => 128 + sig as u32,
        (None, None) => 255,
    }
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(std::io::Error::from)?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(std::io::Error::from)?;
    Ok(())
}

/// The program's output (or stderr, `ext` 1) to the client, until EOF.
async fn pump_out<R: AsyncRead + Unpin>(
    mut from: R,
    handle: Handle,
    channel: ChannelId,
    ext: Option<u32>,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => n,
            // EIO: the terminal's last user closed it.
            Err(_) => return,
        };
        let data = Bytes::copy_from_slice(&buf[..n]);
        let sent = match ext {
            None => handle.data(channel, data).await,
            Some(code) => handle.extended_data(channel, code, data).await,
        };
        if sent.is_err() {
            return;
        }
    }
}

/// The client's input to the program, until the client's EOF (the queue's
/// sender dropped) or the program stops reading.
async fn pump_in<W: AsyncWrite + Unpin>(mut to: W, mut input: mpsc::Receiver<Bytes>) {
    while let Some(chunk) = input.recv().await {
        if to.write_all(&chunk).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// A pty master as async reader and writer.
struct PtyIo(Arc<AsyncFd<OwnedFd>>);

impl AsyncRead for PtyIo {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        loop {
            let mut guard = match self.0.poll_read_ready(cx) {
                Poll::Ready(Ok(g)) => g,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref(), unfilled).map_err(std::io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyIo {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        loop {
            let mut guard = match self.0.poll_write_ready(cx) {
                Poll::Ready(Ok(g)) => g,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from))
            {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        // A terminal has no half close: the client's EOF ends nothing.
        std::task::Poll::Ready(Ok(()))
    }
}

/// A window change from the client.
pub fn resize(master: &AsyncFd<OwnedFd>, size: Size) {
    if let Err(e) = pty::resize(master.get_ref(), size) {
        debug!("rescue ssh: window change: {e}");
    }
}
