//! A real PostgreSQL for the tests: `initdb` + `pg_ctl` in a temp dir, on
//! 127.0.0.1 and a free port, run as an unprivileged user (initdb refuses
//! root, and CI is root). No system service is involved.
//!
//! One shared cluster per test process ([`PgCluster::shared`]) is stopped
//! when the process exits; clusters left by a killed run are swept at the
//! next start. [`PgCluster::private`] is stopped on drop, for tests that
//! stop and start the database themselves.
//!
//! [`PgCluster::shared_tls`] speaks only TLS on TCP (`hostssl`, SCRAM with
//! [`TLS_PASSWORD`]), with a server certificate for 127.0.0.1 and localhost
//! from a test CA; the harness's own connections to it take the Unix socket.

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use anyhow::{bail, Context};

/// The superuser initdb creates; trust auth on 127.0.0.1 only.
pub const USER: &str = "ferrite";
/// [`USER`]'s password on the TLS cluster, where TCP needs one.
pub const TLS_PASSWORD: &str = "tls-Pa55word";
const PREFIX: &str = "ferrite-pg-";

pub struct PgCluster {
    root: PathBuf,
    bindir: PathBuf,
    pub port: u16,
    owner: Option<(u32, u32)>,
    tls: Option<ServerTls>,
}

/// The TLS cluster's certificate files.
struct ServerTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

static SHARED: OnceLock<PgCluster> = OnceLock::new();
static SHARED_TLS: OnceLock<PgCluster> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

extern "C" fn stop_shared() {
    for shared in [&SHARED, &SHARED_TLS] {
        if let Some(cluster) = shared.get() {
            cluster.stop_quietly();
        }
    }
}

fn stop_shared_at_exit() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a plain extern "C" fn with no captured state.
    REGISTERED.call_once(|| unsafe {
        libc::atexit(stop_shared);
    });
}

impl PgCluster {
    /// The process-wide cluster, started on first use.
    pub fn shared() -> &'static PgCluster {
        SHARED.get_or_init(|| {
            let cluster = Self::start(false).expect("start the test PostgreSQL cluster");
            stop_shared_at_exit();
            cluster
        })
    }

    /// The process-wide TLS-only cluster, started on first use.
    pub fn shared_tls() -> &'static PgCluster {
        SHARED_TLS.get_or_init(|| {
            let cluster = Self::start(true).expect("start the TLS PostgreSQL cluster");
            stop_shared_at_exit();
            cluster
        })
    }

    /// A cluster of one's own, stopped on drop.
    pub fn private() -> PgCluster {
        Self::start(false).expect("start a private PostgreSQL cluster")
    }

    fn start(tls: bool) -> anyhow::Result<Self> {
        sweep_dead_clusters();
        let bindir = bindir()?;
        let serial = DATABASES.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("{PREFIX}{}-{serial}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let owner = unprivileged_owner()?;
        if let Some((uid, gid)) = owner {
            chown(&root, Some(uid), Some(gid)).context("chown the cluster dir")?;
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))?;
        let mut cluster = Self {
            root,
            bindir,
            port: 0,
            owner,
            tls: None,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data().display().to_string(),
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        if tls {
            cluster.tls = Some(cluster.require_tls()?);
        }
        let mut last = None;
        for _ in 0..5 {
            cluster.port = crate::free_port();
            match cluster.start_server() {
                Ok(()) if tls => {
                    cluster.set_password()?;
                    return Ok(cluster);
                }
                Ok(()) => return Ok(cluster),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("pg_ctl start failed")))
    }

    /// Certificates for 127.0.0.1 and localhost from a fresh CA, owned by
    /// the server's user (the key 0600, or PostgreSQL refuses it), and a
    /// pg_hba.conf that lets TCP in only over TLS, with a password.
    fn require_tls(&self) -> anyhow::Result<ServerTls> {
        let dir = self.root.join("tls");
        fs::create_dir_all(&dir)?;
        let (ca, cert, key) = crate::tls::ca_and_server_for(&dir, &["127.0.0.1", "localhost"]);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600))?;
        if let Some((uid, gid)) = self.owner {
            for path in [&dir, &ca, &cert, &key] {
                chown(path, Some(uid), Some(gid))
                    .with_context(|| format!("chown {}", path.display()))?;
            }
        }
        // initdb made the file; rewriting it keeps its owner.
        fs::write(
            self.data().join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .context("writing pg_hba.conf")?;
        Ok(ServerTls { ca, cert, key })
    }

    fn set_password(&self) -> anyhow::Result<()> {
        let statement = format!("ALTER ROLE {USER} PASSWORD '{TLS_PASSWORD}'");
        blocking(&self.admin_url("postgres"), move |client| {
            Box::pin(async move { client.batch_execute(&statement).await })
        })
        .context("setting the TLS cluster's password")
    }

    /// The CA that issued the TLS cluster's server certificate.
    pub fn ca_file(&self) -> &Path {
        &self.tls.as_ref().expect("a TLS cluster").ca
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The postmaster's pid (the parent of every server process).
    pub fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The server's log, for a failed test's diagnosis.
    pub fn log(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut cmd = Command::new(self.bindir.join(tool));
        cmd.args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .env("LC_ALL", "C");
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid).env("HOME", &self.root);
        }
        let out = cmd.output().with_context(|| format!("running {tool}"))?;
        if !out.status.success() {
            bail!(
                "{tool} {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Stop the server (`pg_ctl stop -m fast`): clients get errors at once.
    pub fn stop(&self) -> anyhow::Result<()> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )
    }

    /// Start it again on the same port, after [`PgCluster::stop`].
    pub fn restart(&self) -> anyhow::Result<()> {
        self.start_server()
    }

    /// `pg_ctl start` on `self.port`, 127.0.0.1 only, durability off (a
    /// test database), waiting until it accepts connections.
    fn start_server(&self) -> anyhow::Result<()> {
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
            self.port,
            self.root.display()
        );
        if let Some(tls) = &self.tls {
            options += &format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                tls.cert.display(),
                tls.key.display()
            );
        }
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-l",
                &self.log().display().to_string(),
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ],
        )
    }

    fn stop_quietly(&self) {
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        let _ = fs::remove_dir_all(&self.root);
    }

    /// The URL of database `name` for `--database`: plaintext on the
    /// plain clusters; on the TLS one, without `sslmode` (the test says).
    pub fn url(&self, name: &str) -> String {
        let url = format!("postgresql://{USER}@127.0.0.1:{}/{name}", self.port);
        match self.tls {
            Some(_) => url,
            None => format!("{url}?sslmode=disable"),
        }
    }

    /// The harness's own way in: TCP on the plain clusters, the Unix
    /// socket (trusted, no TLS) on the TLS one.
    pub fn admin_url(&self, name: &str) -> String {
        match self.tls {
            Some(_) => format!(
                "postgresql://{USER}@{}:{}/{name}",
                percent_encode(&self.root.display().to_string()),
                self.port
            ),
            None => self.url(name),
        }
    }

    /// A new, empty database; its URL.
    pub fn create_database(&self) -> String {
        let name = format!(
            "ferrite_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        let admin = self.admin_url("postgres");
        let statement = format!("CREATE DATABASE {name}");
        blocking(&admin, move |client| {
            Box::pin(async move { client.batch_execute(&statement).await })
        })
        .expect("CREATE DATABASE");
        self.url(&name)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop_quietly();
    }
}

/// Run `f` on a client of `url`, from synchronous code (or from inside a
/// test's runtime): on a thread of its own with a runtime of its own.
pub fn blocking<T, F>(url: &str, f: F) -> Result<T, tokio_postgres::Error>
where
    T: Send + 'static,
    F: for<'c> FnOnce(
            &'c tokio_postgres::Client,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send + 'c>,
        > + Send
        + 'static,
{
    let url = url.to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            let driver = tokio::spawn(connection);
            let result = f(&client).await;
            drop(client);
            let _ = driver.await;
            result
        })
    })
    .join()
    .expect("PostgreSQL helper thread")
}

/// `/` and other reserved bytes as %XX, for a socket directory as a URL's host.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `$FERRITE_PG_BINDIR`, else the newest `/usr/lib/postgresql/*/bin`, else
/// the directory of `initdb` on PATH.
fn bindir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("FERRITE_PG_BINDIR") {
        return Ok(dir.into());
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| dir.join("initdb").exists())
        .context("PostgreSQL's initdb not found: install the postgresql package (scripts/setup does) or set FERRITE_PG_BINDIR")
}

/// As root, the cluster runs as `postgres` (Debian's package user), else
/// `nobody`; otherwise as ourselves.
fn unprivileged_owner() -> anyhow::Result<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Some(user) = nix::unistd::User::from_name(name)? {
            return Ok(Some((user.uid.as_raw(), user.gid.as_raw())));
        }
    }
    bail!("running as root, and neither a postgres nor a nobody user exists to run PostgreSQL as")
}

/// Stop and remove clusters whose test process is gone.
fn sweep_dead_clusters() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let pidfile = entry.path().join("data/postmaster.pid");
        if let Some(server) = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(server),
                nix::sys::signal::Signal::SIGQUIT,
            );
        }
        let _ = fs::remove_dir_all(entry.path());
    }
}
