//! A real PostgreSQL for the tests: `initdb` + `pg_ctl` in a temp dir, on
//! 127.0.0.1 and a free port, run as an unprivileged user (initdb refuses
//! root, and CI is root). No system service is involved.
//!
//! One shared cluster per test process ([`PgCluster::shared`]) is stopped
//! when the process exits; clusters left by a killed run are swept at the
//! next start. [`PgCluster::private`] is stopped on drop, for tests that
//! stop and start the database themselves.

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
const PREFIX: &str = "ferrite-pg-";

pub struct PgCluster {
    root: PathBuf,
    bindir: PathBuf,
    pub port: u16,
    owner: Option<(u32, u32)>,
}

static SHARED: OnceLock<PgCluster> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

extern "C" fn stop_shared() {
    if let Some(cluster) = SHARED.get() {
        cluster.stop_quietly();
    }
}

impl PgCluster {
    /// The process-wide cluster, started on first use.
    pub fn shared() -> &'static PgCluster {
        SHARED.get_or_init(|| {
            let cluster = Self::start().expect("start the test PostgreSQL cluster");
            // SAFETY: registers a plain extern "C" fn with no captured state.
            unsafe { libc::atexit(stop_shared) };
            cluster
        })
    }

    /// A cluster of one's own, stopped on drop.
    pub fn private() -> PgCluster {
        Self::start().expect("start a private PostgreSQL cluster")
    }

    fn start() -> anyhow::Result<Self> {
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
        let mut last = None;
        for _ in 0..5 {
            cluster.port = crate::free_port();
            match cluster.start_server() {
                Ok(()) => return Ok(cluster),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("pg_ctl start failed")))
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
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
            self.port,
            self.root.display()
        );
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

    /// The URL of database `name` for `--database`.
    pub fn url(&self, name: &str) -> String {
        format!("postgresql://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// A new, empty database; its URL.
    pub fn create_database(&self) -> String {
        let name = format!(
            "ferrite_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        let admin = self.url("postgres");
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
