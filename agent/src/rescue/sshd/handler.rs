//! One client connection: password authentication for `rescue` (at most
//! [`MAX_PASSWORD_ATTEMPTS`] tries), then session channels (at most
//! [`MAX_CHANNELS`]): `pty-req`, `shell`, `exec`, `window-change`, data
//! and EOF. Everything else (port forwarding, agent and X11 forwarding,
//! subsystems such as sftp) is refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet, Pty};
use tokio::sync::mpsc::error::TrySendError;
use tracing::{info, warn};

use super::auth::{PasswordCheck, Refusal};
use super::pty::Size;
use super::session::{self, Program, Running, ShellConfig, TermRequest};

/// Password tries per connection (OpenSSH's client asks three times).
pub const MAX_PASSWORD_ATTEMPTS: u32 = 3;
/// Session channels open at once per connection.
const MAX_CHANNELS: usize = 4;
/// A program that does not take the client's input for this long gets
/// its channel closed rather than stalling the whole connection.
const INPUT_STALL: Duration = Duration::from_secs(30);
/// Longest `TERM` value kept.
const MAX_TERM: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Ssh(#[from] russh::Error),
}

/// The methods the server offers: password only.
pub fn methods() -> MethodSet {
    MethodSet::from(&[MethodKind::Password][..])
}

#[derive(Default)]
struct ChannelState {
    term: Option<TermRequest>,
    running: Option<Running>,
}

pub struct Connection {
    peer: String,
    check: Arc<PasswordCheck>,
    shell: Arc<ShellConfig>,
    /// Set once the client is in; the server's login timer reads it.
    authenticated: Arc<AtomicBool>,
    failures: u32,
    channels: HashMap<ChannelId, ChannelState>,
}

impl Connection {
    pub fn new(
        peer: Option<SocketAddr>,
        check: Arc<PasswordCheck>,
        shell: Arc<ShellConfig>,
        authenticated: Arc<AtomicBool>,
    ) -> Self {
        Self {
            peer: peer.map_or_else(|| "?".to_string(), |p| p.to_string()),
            check,
            shell,
            authenticated,
            failures: 0,
            channels: HashMap::new(),
        }
    }

    fn reject() -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(methods()),
            partial_success: false,
        }
    }

    /// Start the channel's program and say whether it started.
    fn run(
        &mut self,
        channel: ChannelId,
        program: Program,
        session: &mut Session,
    ) -> Result<(), HandlerError> {
        let Some(state) = self.channels.get_mut(&channel) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        if state.running.is_some() {
            // One program per channel (RFC 4254 6.5).
            session.channel_failure(channel)?;
            return Ok(());
        }
        match session::start(
            &self.shell,
            program,
            state.term.clone(),
            session.handle(),
            channel,
        ) {
            Ok(running) => {
                state.running = Some(running);
                session.channel_success(channel)?;
            }
            Err(e) => {
                warn!(peer = %self.peer, "rescue ssh: starting {}: {e}", self.shell.shell.display());
                session.channel_failure(channel)?;
            }
        }
        Ok(())
    }
}

impl russh::server::Handler for Connection {
    type Error = HandlerError;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Self::reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if self.failures >= MAX_PASSWORD_ATTEMPTS {
            return Ok(Auth::reject());
        }
        match self.check.verify(user, password) {
            Ok(()) => {
                info!(peer = %self.peer, "rescue ssh: {user} logged in");
                Ok(Auth::Accept)
            }
            Err(refusal) => {
                self.failures += 1;
                let why = match refusal {
                    Refusal::WrongUser => "only the user \"rescue\" may log in".to_string(),
                    Refusal::WrongPassword => "wrong password".to_string(),
                    Refusal::NoUsableHash => match self.check.as_ref() {
                        PasswordCheck::Unusable(e) => format!("no usable rescue password: {e}"),
                        PasswordCheck::Hash(_) => "no usable rescue password".to_string(),
                    },
                };
                // The user name as a debug string: a client's bytes are
                // not to reach the console raw.
                warn!(
                    peer = %self.peer,
                    "rescue ssh: login refused for {user:?} ({why}); attempt {} of {MAX_PASSWORD_ATTEMPTS}",
                    self.failures
                );
                Ok(if self.failures >= MAX_PASSWORD_ATTEMPTS {
                    Auth::reject()
                } else {
                    Self::reject()
                })
            }
        }
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        self.authenticated.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.channels.len() >= MAX_CHANNELS {
            warn!(peer = %self.peer, "rescue ssh: more than {MAX_CHANNELS} sessions on one connection; refused");
            reply
                .reject(russh::ChannelOpenFailure::ResourceShortage)
                .await;
            return Ok(());
        }
        // The requests and data come through the handler's methods; the
        // channel object itself is not read, so it must not hold them.
        let id = channel.id();
        drop(channel);
        self.channels.insert(id, ChannelState::default());
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Dropping the state drops the input queue; the program, if still
        // running, sees its terminal or stdin go away.
        self.channels.remove(&channel);
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(running) = self
            .channels
            .get_mut(&channel)
            .and_then(|s| s.running.as_mut())
        {
            // The input queue's sender goes: the program's stdin closes.
            let (closed, _) = tokio::sync::mpsc::channel(1);
            running.input = closed;
        }
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(state) = self.channels.get_mut(&channel) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        let term: String = term
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(MAX_TERM)
            .collect();
        state.term = Some(TermRequest {
            term: if term.is_empty() {
                "vt100".into()
            } else {
                term
            },
            size: Size {
                cols: col_width,
                rows: row_height,
                pix_width,
                pix_height,
            },
        });
        session.channel_success(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.run(channel, Program::Shell, session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.run(channel, Program::Exec(data.to_vec()), session)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        info!(peer = %self.peer, "rescue ssh: subsystem {name:?} refused");
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let size = Size {
            cols: col_width,
            rows: row_height,
            pix_width,
            pix_height,
        };
        if let Some(state) = self.channels.get_mut(&channel) {
            if let Some(term) = state.term.as_mut() {
                term.size = size;
            }
            if let Some(master) = state.running.as_ref().and_then(|r| r.master.as_ref()) {
                session::resize(master, size);
            }
        }
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(running) = self.channels.get(&channel).and_then(|s| s.running.as_ref()) else {
            return Ok(());
        };
        let chunk = Bytes::copy_from_slice(data);
        let stalled = match running.input.try_send(chunk) {
            Ok(()) | Err(TrySendError::Closed(_)) => false,
            Err(TrySendError::Full(chunk)) => {
                // Wait for the program, but not for ever: this holds up
                // the whole connection.
                let input = running.input.clone();
                tokio::time::timeout(INPUT_STALL, input.send(chunk))
                    .await
                    .is_err()
            }
        };
        if stalled {
            warn!(peer = %self.peer, "rescue ssh: the program took no input for {INPUT_STALL:?}; closing its channel");
            self.channels.remove(&channel);
            session.close(channel)?;
        }
        Ok(())
    }
}
