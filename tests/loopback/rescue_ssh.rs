//! The rescue ssh server (`ferrite-agent rescue-sshd`) on 127.0.0.1, with
//! a SHA-512 crypt hash as Ironic sends it, and the host's OpenSSH client
//! logging in: a command returns its output and exit status, a terminal
//! session gets a pty and a login shell; a wrong password, another user,
//! and an unusable hash file are refused. Neither password nor hash
//! reaches the server's log.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferrite_protocol::rescue::{crypt_hash, HashAlgorithm, SALT_LEN};
use ferrite_tests::ssh::{ssh, Login};
use ferrite_tests::{bin, free_port, wait_for, Proc};

const PASSWORD: &str = "Tenant-ssh-pw-4471";
const WITHIN: Duration = Duration::from_secs(60);

/// The server on 127.0.0.1 with `hash_file`; returns it once it listens,
/// and the host key fingerprint it logged.
async fn start_server(dir: &Path, hash_file: &Path, name: &str) -> (Proc, u16, String) {
    let port = free_port();
    let mut cmd = Command::new(bin("ferrite-agent"));
    cmd.arg("rescue-sshd")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--password-file")
        .arg(hash_file)
        .args(["--shell", "/bin/sh"]);
    let proc = Proc::spawn(cmd, dir.join(format!("{name}.log")));
    let line = wait_for("the server to listen", WITHIN, || {
        let log = proc.log_text();
        async move {
            log.lines()
                .find(|l| l.contains("rescue ssh: listening on"))
                .map(str::to_string)
        }
    })
    .await;
    let fingerprint = line
        .split("host key ED25519 ")
        .nth(1)
        .unwrap_or_else(|| panic!("no fingerprint in {line:?}"))
        .trim()
        .to_string();
    (proc, port, fingerprint)
}

fn login(port: u16, user: &'static str, password: &'static str) -> Login<'static> {
    Login {
        host: "127.0.0.1",
        port,
        user,
        password,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rescue_user_logs_in_with_the_password_and_nobody_else() {
    let dir = tempfile::tempdir().unwrap();
    let hash = crypt_hash(PASSWORD, &[9u8; SALT_LEN], HashAlgorithm::Sha512).unwrap();
    let hash_file = dir.path().join("ipa-rescue-password");
    std::fs::write(&hash_file, &hash).unwrap();
    let (server, port, fingerprint) = start_server(dir.path(), &hash_file, "sshd").await;
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");

    // A command: its output, its exit status; the key the client saw is
    // the one the console shows.
    let run = ssh(
        dir.path(),
        login(port, "rescue", PASSWORD),
        Some("echo rescued-$((1+1)); echo to-stderr >&2; exit 3"),
        false,
        b"",
        WITHIN,
    )
    .await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(run.stdout.lines().any(|l| l == "rescued-2"), "{run:?}");
    assert!(run.stderr.contains("to-stderr"), "{run:?}");
    assert_eq!(run.host_key_fingerprint().as_deref(), Some(&*fingerprint));

    // A command's stdin reaches it, and its EOF ends it.
    let run = ssh(
        dir.path(),
        login(port, "rescue", PASSWORD),
        Some("wc -l"),
        false,
        b"one\ntwo\nthree\n",
        WITHIN,
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout.trim(), "3", "{run:?}");

    // A terminal: the command runs on a pty.
    let run = ssh(
        dir.path(),
        login(port, "rescue", PASSWORD),
        Some("tty; exit 5"),
        true,
        b"",
        WITHIN,
    )
    .await;
    assert_eq!(run.code, Some(5), "{run:?}");
    assert!(run.stdout.contains("/dev/pts/"), "{run:?}");

    // An interactive login shell on a pty, driven through stdin.
    let run = ssh(
        dir.path(),
        login(port, "rescue", PASSWORD),
        None,
        true,
        b"echo shell-$((2+3)) $USER\nexit 7\n",
        WITHIN,
    )
    .await;
    assert_eq!(run.code, Some(7), "{run:?}");
    assert!(run.stdout.contains("shell-5 rescue"), "{run:?}");

    // Refusals: a wrong password, another user with the right one.
    for (user, password) in [("rescue", "Tenant-ssh-pw-4472"), ("root", PASSWORD)] {
        let run = ssh(
            dir.path(),
            login(port, user, password),
            Some("echo IN"),
            false,
            b"",
            WITHIN,
        )
        .await;
        assert_eq!(run.code, Some(255), "{user}: {run:?}");
        assert!(!run.stdout.contains("IN"), "{user}: {run:?}");
        assert!(run.stderr.contains("Permission denied"), "{user}: {run:?}");
    }
    let log = server.log_text();
    assert!(
        log.contains("login refused for \"rescue\" (wrong password)"),
        "{log}"
    );
    assert!(
        log.contains("login refused for \"root\" (only the user \"rescue\" may log in)"),
        "{log}"
    );
    assert!(log.contains("rescue ssh: rescue logged in"), "{log}");
    assert!(!log.contains(PASSWORD) && !log.contains(&hash), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_hash_file_refuses_every_login() {
    let dir = tempfile::tempdir().unwrap();
    let hash_file = dir.path().join("ipa-rescue-password");
    std::fs::write(&hash_file, PASSWORD).unwrap();
    let (server, port, _) = start_server(dir.path(), &hash_file, "sshd-bad").await;
    let run = ssh(
        dir.path(),
        login(port, "rescue", PASSWORD),
        Some("echo IN"),
        false,
        b"",
        WITHIN,
    )
    .await;
    assert_eq!(run.code, Some(255), "{run:?}");
    assert!(!run.stdout.contains("IN"), "{run:?}");
    let log = server.log_text();
    assert!(
        log.contains("holds no SHA-crypt ($5$/$6$) hash; every login will be refused"),
        "{log}"
    );
    assert!(log.contains("no usable rescue password"), "{log}");
    assert!(!log.contains(PASSWORD), "{log}");
}
