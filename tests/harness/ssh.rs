//! The host's OpenSSH client (`ssh`, from `openssh-client`), logging in
//! with a password through `SSH_ASKPASS` (no sshpass, no terminal): the
//! rescue ssh server's tests log in as a tenant would.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// What one `ssh` run gave.
#[derive(Debug)]
pub struct SshRun {
    /// `ssh`'s exit status: the remote program's, or 255 for ssh's own errors.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl SshRun {
    /// The server's host key fingerprint as the client saw it (`-v`).
    pub fn host_key_fingerprint(&self) -> Option<String> {
        self.stderr
            .lines()
            .find_map(|l| l.split("Server host key: ssh-ed25519 ").nth(1))
            .map(|f| f.trim().to_string())
    }
}

/// Who logs in where.
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub password: &'a str,
}

/// One login: `command` (or a login shell when `None`), `input` on its
/// stdin, a terminal with `tty`. Host keys are neither checked nor kept
/// (each start of the server has a new one). `dir` holds the askpass script.
pub async fn ssh(
    dir: &Path,
    login: Login<'_>,
    command: Option<&str>,
    tty: bool,
    input: &[u8],
    within: Duration,
) -> SshRun {
    let Login {
        host,
        port,
        user,
        password,
    } = login;
    // The askpass program prints the password from the environment, so it
    // is in no file and on no command line.
    let askpass = dir.join("ssh-askpass.sh");
    if !askpass.exists() {
        std::fs::write(
            &askpass,
            "#!/bin/sh\nprintf '%s\\n' \"$FERRITE_TEST_SSH_PASSWORD\"\n",
        )
        .expect("writing the askpass script");
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700))
            .expect("chmod the askpass script");
    }
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args(["-v", "-F", "/dev/null", "-p", &port.to_string()])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "PreferredAuthentications=password"])
        .args(["-o", "PubkeyAuthentication=no"])
        .args(["-o", "NumberOfPasswordPrompts=1"])
        .args(["-o", "ConnectTimeout=20"])
        .args(["-o", "ServerAliveInterval=10"])
        .arg(if tty { "-tt" } else { "-T" })
        .arg(format!("{user}@{host}"));
    if let Some(c) = command {
        cmd.arg(c);
    }
    cmd.env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .env("FERRITE_TEST_SSH_PASSWORD", password)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .expect("running ssh (scripts/setup installs openssh-client)");
    let mut stdin = child.stdin.take().expect("ssh's stdin");
    let input = input.to_vec();
    // Fed slowly enough for a shell to start first; then EOF.
    let feeder = tokio::spawn(async move {
        for line in input.split_inclusive(|&b| b == b'\n') {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if stdin.write_all(line).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(stdin);
    });
    let out = tokio::time::timeout(within, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("ssh to {host}:{port} did not finish within {within:?}"))
        .expect("ssh's output");
    feeder.abort();
    SshRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
