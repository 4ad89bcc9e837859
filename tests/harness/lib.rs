//! Test harness: start the real `ferrite-conductor` and `ferrite-agent`
//! binaries on 127.0.0.1 with private ports, data dirs and fixture sysfs
//! trees, and talk to them over real HTTP.

pub mod browser;
pub mod deploy_fixture;
pub mod failover_proxy;
pub mod forward_proxy;
pub mod hold_proxy;
pub mod image_server;
pub mod images;
pub mod ironic;
pub mod pg;
pub mod recorder;
pub mod ssh;
pub mod tls;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tempfile::TempDir;

/// A binary of this workspace, built next to the test executable
/// (`scripts/test` builds them first): the parent of `deps/` for a test,
/// the executable's own directory for a binary of this crate (the
/// benchmark's release build).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let own = exe.parent().expect("executable dir");
    let beside = own.join(name);
    if beside.is_file() {
        return beside;
    }
    let dir = own.parent().expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Poll `check` until it yields `Some`, or fail after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed on drop, its output in a log file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Self {
        let out = fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn");
        Self { child, log }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Exit status if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} ----\n{}", self.log.display(), self.log_text());
        }
    }
}

/// The API user every [`Conductor`] is started with (http_basic).
pub const API_USER: &str = "ferrite-admin";
pub const API_PASSWORD: &str = "ferrite-test-password";

/// Write `<dir>/htpasswd` with [`API_USER`] (bcrypt cost 4: fast tests),
/// where ferrite-conductor looks for it by default.
pub fn write_htpasswd(dir: &Path) {
    let line =
        ferrite_conductor::auth::htpasswd::line(API_USER, API_PASSWORD, 4).expect("bcrypt line");
    fs::write(dir.join("htpasswd"), format!("{line}\n")).expect("writing htpasswd");
}

/// `Authorization: Basic` for [`API_USER`].
pub fn api_authorization() -> String {
    use base64::Engine;
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("{API_USER}:{API_PASSWORD}"));
    format!("Basic {token}")
}

/// A client that sends [`API_USER`]'s credentials on every request.
pub fn api_client() -> reqwest::Client {
    api_client_trusting(None)
}

/// [`api_client`] that also trusts the PEM CA bundle at `ca` (https).
pub fn api_client_trusting(ca: Option<&Path>) -> reqwest::Client {
    let mut value =
        reqwest::header::HeaderValue::from_str(&api_authorization()).expect("header value");
    value.set_sensitive(true);
    let headers = reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, value)]);
    // Idle pooled connections are dropped well before the conductor's
    // header-read timeout closes them, so a request never races that close.
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .pool_idle_timeout(Duration::from_secs(5))
        .default_headers(headers);
    if let Some(ca) = ca {
        let pem = fs::read(ca).expect("reading the CA");
        for cert in reqwest::Certificate::from_pem_bundle(&pem).expect("CA PEM") {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().expect("client")
}

/// With `--tls-cert` the API is https; the CA a client must trust is
/// `--tls-ca`, else the certificate itself.
fn tls_root(flags: &[String]) -> Option<PathBuf> {
    let value = |name: &str| {
        flags
            .iter()
            .position(|f| f == name)
            .and_then(|i| flags.get(i + 1))
            .map(PathBuf::from)
    };
    value("--tls-ca").or_else(|| value("--tls-cert"))
}

/// What tests log: everything of ours, little of the libraries.
pub const TEST_LOG: &str = "debug,hyper=info,rustls=info,reqwest=info";

/// The database a test conductor runs on: its SQLite file by default, or
/// a fresh database in the shared PostgreSQL cluster when
/// `FERRITE_TEST_DATABASE=postgresql` (the same suites run on both).
#[derive(Clone, Debug)]
pub enum TestDb {
    Sqlite(PathBuf),
    Postgres(String),
}

impl TestDb {
    fn for_data_dir(dir: &Path) -> Self {
        if Self::postgres_selected() {
            Self::Postgres(pg::PgCluster::shared().create_database())
        } else {
            Self::Sqlite(dir.join("ferrite.sqlite"))
        }
    }

    /// Whether this run's conductors use PostgreSQL.
    pub fn postgres_selected() -> bool {
        std::env::var("FERRITE_TEST_DATABASE").is_ok_and(|v| v == "postgresql")
    }

    fn flags(&self) -> Vec<String> {
        match self {
            Self::Sqlite(_) => vec![],
            Self::Postgres(url) => vec!["--database".into(), url.clone()],
        }
    }

    /// The stored JSON document of a node.
    pub fn node_data(&self, uuid: &str) -> Option<String> {
        match self {
            Self::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).ok()?;
                conn.busy_timeout(Duration::from_secs(5)).ok()?;
                conn.query_row("SELECT data FROM nodes WHERE uuid = ?1", [uuid], |r| {
                    r.get(0)
                })
                .ok()
            }
            Self::Postgres(url) => {
                let uuid = uuid.to_string();
                pg::blocking(url, move |c| {
                    Box::pin(async move {
                        let row = c
                            .query_opt("SELECT data FROM nodes WHERE uuid = $1", &[&uuid])
                            .await?;
                        Ok(row.map(|r| r.get::<_, String>(0)))
                    })
                })
                .ok()
                .flatten()
            }
        }
    }

    /// Write a node's row behind the conductor's back: the document and/or
    /// the provision-state column; the number of rows changed.
    pub fn set_node(&self, uuid: &str, data: Option<&str>, provision_state: Option<&str>) -> u64 {
        self.execute(
            "UPDATE nodes SET data = coalesce($2, data), \
             provision_state = coalesce($3, provision_state) WHERE uuid = $1",
            [Some(uuid), data, provision_state],
        )
    }

    /// The conductor's `--database` for this database.
    pub fn url(&self) -> ferrite_conductor::store::DatabaseUrl {
        match self {
            Self::Sqlite(path) => ferrite_conductor::store::DatabaseUrl::Sqlite(path.clone()),
            Self::Postgres(url) => ferrite_conductor::store::DatabaseUrl::Postgres(url.clone()),
        }
    }

    /// Empty a node's listing columns, as in a row written before schema
    /// version 6 added them.
    pub fn forget_node_columns(&self, uuid: &str) -> u64 {
        self.execute(
            "UPDATE nodes SET driver = NULL, maintenance = NULL, fault = NULL, \
             conductor_group = NULL, created_at = NULL WHERE uuid = $1",
            [Some(uuid), None, None],
        )
    }

    /// Set or clear a node's reservation, as another conductor would hold it.
    pub fn set_reservation(&self, uuid: &str, holder: Option<&str>) -> u64 {
        self.execute(
            "UPDATE nodes SET reservation = $2 WHERE uuid = $1",
            [Some(uuid), holder, None],
        )
    }

    fn execute(&self, sql: &str, params: [Option<&str>; 3]) -> u64 {
        let count = sql.matches('$').count().min(3);
        match self {
            Self::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).expect("open the conductor database");
                conn.busy_timeout(Duration::from_secs(5))
                    .expect("busy timeout");
                conn.execute(
                    &sql.replace('$', "?"),
                    rusqlite::params_from_iter(params.iter().take(count)),
                )
                .expect("update the conductor database") as u64
            }
            Self::Postgres(url) => {
                let sql = sql.to_string();
                let params: Vec<Option<String>> = params
                    .iter()
                    .take(count)
                    .map(|p| p.map(str::to_string))
                    .collect();
                pg::blocking(url, move |c| {
                    Box::pin(async move {
                        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                            .iter()
                            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
                            .collect();
                        c.execute(&sql, &refs).await
                    })
                })
                .expect("update the conductor database")
            }
        }
    }
}

pub struct Conductor {
    pub proc: Proc,
    pub url: String,
    pub dir: TempDir,
    pub http: reqwest::Client,
    pub db: TestDb,
    host: String,
    port: u16,
    flags: Vec<String>,
    log_filter: String,
    runs: u32,
}

impl Conductor {
    /// Start with extra flags (e.g. `--fast-track true`); returns once the API answers.
    pub async fn start(flags: &[&str]) -> Self {
        Self::start_on("127.0.0.1", flags).await
    }

    /// [`Conductor::start`] listening on `host` (an IPv6 one in brackets).
    pub async fn start_on(host: &str, flags: &[&str]) -> Self {
        Self::start_with(host, None, flags, TEST_LOG).await
    }

    /// [`Conductor::start`] on a database of the test's choosing (a
    /// private PostgreSQL cluster), whatever `FERRITE_TEST_DATABASE` says.
    pub async fn start_on_db(db: TestDb, flags: &[&str]) -> Self {
        Self::start_with("127.0.0.1", Some(db), flags, TEST_LOG).await
    }

    /// [`Conductor::start_on`] with `FERRITE_LOG=log_filter` (the benchmark
    /// runs at `info`: debug logging would be most of what it measures).
    pub async fn start_logging(host: &str, flags: &[&str], log_filter: &str) -> Self {
        Self::start_with(host, None, flags, log_filter).await
    }

    /// The general form: listen on `host`, on `db` (else as the run says),
    /// with `FERRITE_LOG=log_filter`.
    pub async fn start_with(
        host: &str,
        db: Option<TestDb>,
        flags: &[&str],
        log_filter: &str,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        write_htpasswd(dir.path());
        let port = free_port();
        let db = db.unwrap_or_else(|| TestDb::for_data_dir(dir.path()));
        let flags: Vec<String> = db
            .flags()
            .into_iter()
            .chain(flags.iter().map(|f| f.to_string()))
            .collect();
        let proc = Self::spawn(dir.path(), host, port, &flags, log_filter, "conductor.log");
        let root = tls_root(&flags);
        let scheme = if root.is_some() { "https" } else { "http" };
        let conductor = Self {
            proc,
            url: format!("{scheme}://{host}:{port}"),
            dir,
            http: api_client_trusting(root.as_deref()),
            db,
            host: host.to_string(),
            port,
            flags,
            log_filter: log_filter.to_string(),
            runs: 1,
        };
        conductor.wait_ready().await;
        conductor
    }

    fn spawn(
        dir: &Path,
        host: &str,
        port: u16,
        flags: &[String],
        log_filter: &str,
        log: &str,
    ) -> Proc {
        let mut cmd = Command::new(bin("ferrite-conductor"));
        cmd.arg("--listen")
            .arg(format!("{host}:{port}"))
            .arg("--data-dir")
            .arg(dir);
        // One name unless the test gives each conductor its own.
        if !flags.iter().any(|f| f == "--host") {
            cmd.arg("--host").arg("test-conductor");
        }
        cmd.args(flags).env("FERRITE_LOG", log_filter);
        Proc::spawn(cmd, dir.join(log))
    }

    async fn wait_ready(&self) {
        let probe = self.http.clone();
        let root = format!("{}/", self.url);
        wait_for("the conductor API", Duration::from_secs(60), || {
            let probe = probe.clone();
            let root = root.clone();
            async move {
                probe
                    .get(&root)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            }
        })
        .await;
    }

    /// Kill the conductor outright (SIGKILL: no graceful shutdown) and
    /// start it again on the same port and data directory.
    pub async fn kill_and_restart(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        self.runs += 1;
        let log = format!("conductor-{}.log", self.runs);
        let host = self.host.clone();
        self.proc = Self::spawn(
            self.dir.path(),
            &host,
            self.port,
            &self.flags,
            &self.log_filter,
            &log,
        );
        self.wait_ready().await;
    }

    /// `PUT /v1/nodes/{uuid}/states/provision` with `body`: status and JSON.
    pub async fn provision(&self, uuid: &str, body: Value) -> (u16, Value) {
        let r = self
            .request(
                reqwest::Method::PUT,
                &format!("/v1/nodes/{uuid}/states/provision"),
            )
            .json(&body)
            .send()
            .await
            .expect("PUT states/provision");
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(Value::Null))
    }

    /// A provision verb as the `baremetal` CLI sends it: retried while the
    /// node is locked (409; a heartbeat's work holds the lock briefly), as
    /// ironicclient retries. Status and JSON of the last answer.
    pub async fn act(&self, uuid: &str, body: Value) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, answer) = self.provision(uuid, body.clone()).await;
            if code != 409 || Instant::now() > deadline {
                return (code, answer);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `PUT .../states/power`, retried while the node is locked (409), as
    /// ironicclient retries; the status.
    pub async fn set_power(&self, uuid: &str, target: &str) -> u16 {
        self.put_retrying_409(
            &format!("/v1/nodes/{uuid}/states/power"),
            json!({ "target": target }),
        )
        .await
    }

    /// `PUT .../management/boot_device`, retried while the node is locked.
    pub async fn set_boot_device(&self, uuid: &str, device: &str, persistent: bool) -> u16 {
        self.put_retrying_409(
            &format!("/v1/nodes/{uuid}/management/boot_device"),
            json!({ "boot_device": device, "persistent": persistent }),
        )
        .await
    }

    async fn put_retrying_409(&self, path: &str, body: Value) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let code = self
                .request(reqwest::Method::PUT, path)
                .json(&body)
                .send()
                .await
                .expect("PUT")
                .status()
                .as_u16();
            if code != 409 || Instant::now() > deadline {
                return code;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Wait until the node is in `want`; returns the node.
    pub async fn wait_state(&self, uuid: &str, want: &str, within: Duration) -> Value {
        wait_for(&format!("{uuid} in {want}"), within, || {
            let n = self.node(uuid);
            async move {
                let n = n.await;
                (n["provision_state"] == want).then_some(n)
            }
        })
        .await
    }

    /// Wait until no flow holds the node's lock: a state shows before the
    /// flow that set it has finished (a power-off after a failure) and let go.
    pub async fn wait_unlocked(&self, uuid: &str, within: Duration) -> Value {
        wait_for(&format!("{uuid} unlocked"), within, || {
            let n = self.node(uuid);
            async move {
                let n = n.await;
                n["reservation"].is_null().then_some(n)
            }
        })
        .await
    }

    /// Wait until an agent has heartbeated for the node; its callback URL.
    pub async fn wait_agent(&self, uuid: &str) -> String {
        wait_for("the agent's heartbeat", Duration::from_secs(60), || {
            let n = self.node(uuid);
            async move {
                n.await["driver_internal_info"]["agent_url"]
                    .as_str()
                    .map(str::to_string)
            }
        })
        .await
    }

    /// A real agent for `uuid` (its disks given in `params`, e.g.
    /// `ferrite-disks=`): the node's port, the agent, and its first
    /// heartbeat seen.
    pub async fn start_agent_for(&self, uuid: &str, mac: &str, params: &[&str]) -> Agent {
        self.create_port(uuid, mac).await;
        let agent = Agent::start(&self.url, &[mac], params);
        self.wait_agent(uuid).await;
        agent
    }

    /// Sets the node's whole `instance_info`.
    pub async fn set_instance_info(&self, uuid: &str, info: Value) {
        self.patch_node(
            uuid,
            json!([{"op": "add", "path": "/instance_info", "value": info}]),
        )
        .await;
    }

    /// PATCH a node, retried while it is locked (409) as ironicclient does.
    pub async fn patch_node(&self, uuid: &str, ops: Value) {
        let code = wait_for("PATCH accepted", Duration::from_secs(30), || {
            let req = self
                .request(reqwest::Method::PATCH, &format!("/v1/nodes/{uuid}"))
                .json(&ops);
            async move {
                let code = req.send().await.expect("PATCH").status().as_u16();
                (code != 409).then_some(code)
            }
        })
        .await;
        assert_eq!(code, 200, "PATCH {ops}");
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The API's socket address (for a proxy in front of it).
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        format!("{}:{}", self.host, self.port)
            .parse()
            .expect("the conductor's listen address")
    }

    /// A fake-hardware node taken through manage and provide (no automated
    /// cleaning), so it is `available`; its UUID.
    pub async fn available_node(&self, fields: Value) -> String {
        let mut body = json!({"driver": "fake-hardware", "automated_clean": false});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), fields.as_object()) {
            body.extend(extra.clone());
        }
        let node = self.create_node(body).await;
        let uuid = node["uuid"].as_str().expect("uuid").to_string();
        let wait = Duration::from_secs(30);
        assert_eq!(self.act(&uuid, json!({"target": "manage"})).await.0, 202);
        self.wait_state(&uuid, "manageable", wait).await;
        assert_eq!(self.act(&uuid, json!({"target": "provide"})).await.0, 202);
        self.wait_state(&uuid, "available", wait).await;
        uuid
    }

    /// A request with the newest microversion, as the `baremetal` CLI sends.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .header("X-OpenStack-Ironic-API-Version", "latest")
    }

    pub async fn create_node(&self, body: Value) -> Value {
        let resp = self
            .request(reqwest::Method::POST, "/v1/nodes")
            .json(&body)
            .send()
            .await
            .expect("POST node");
        assert_eq!(
            resp.status(),
            201,
            "create node: {}",
            resp.text().await.unwrap_or_default()
        );
        resp.json().await.expect("node json")
    }

    pub async fn create_port(&self, node: &str, mac: &str) -> Value {
        let resp = self
            .request(reqwest::Method::POST, "/v1/ports")
            .json(&json!({"node_uuid": node, "address": mac}))
            .send()
            .await
            .expect("POST port");
        assert_eq!(
            resp.status(),
            201,
            "create port: {}",
            resp.text().await.unwrap_or_default()
        );
        resp.json().await.expect("port json")
    }

    pub async fn node(&self, ident: &str) -> Value {
        let resp = self
            .request(reqwest::Method::GET, &format!("/v1/nodes/{ident}"))
            .send()
            .await
            .expect("GET node");
        assert_eq!(resp.status(), 200);
        resp.json().await.expect("node json")
    }

    /// `GET /v1/nodes/{uuid}/inventory`: what inspection stored.
    pub async fn inventory(&self, uuid: &str) -> Value {
        let resp = self
            .request(reqwest::Method::GET, &format!("/v1/nodes/{uuid}/inventory"))
            .send()
            .await
            .expect("GET inventory");
        assert_eq!(resp.status(), 200, "GET /v1/nodes/{uuid}/inventory");
        resp.json().await.expect("inventory json")
    }

    /// The unmasked agent token, read from the conductor's database (the
    /// API masks it, as Ironic does).
    pub fn agent_token(&self, uuid: &str) -> Option<String> {
        let node: Value = serde_json::from_str(&self.db.node_data(uuid)?).ok()?;
        node["driver_internal_info"]["agent_secret_token"]
            .as_str()
            .map(str::to_string)
    }

    /// Put a node straight into `state` in the database, document and
    /// column alike: for states no API verb reaches from where it is.
    pub fn force_state(&self, uuid: &str, state: &str) {
        let data = self.db.node_data(uuid).expect("the node's stored record");
        let mut doc: Value = serde_json::from_str(&data).expect("a readable record");
        doc["provision_state"] = json!(state);
        let changed = self.db.set_node(uuid, Some(&doc.to_string()), Some(state));
        assert_eq!(changed, 1, "force {uuid} into {state}");
    }

    /// Wait for a heartbeat over TLS: the certificate the agent sent.
    pub async fn wait_agent_certificate(&self, uuid: &str, within: Duration) -> String {
        wait_for("the agent certificate at the conductor", within, || {
            let pem = self.agent_certificate(uuid);
            async move { pem }
        })
        .await
    }

    /// The certificate the agent sent, as the conductor stored it.
    pub fn agent_certificate(&self, uuid: &str) -> Option<String> {
        fs::read_to_string(
            self.data_dir()
                .join("certificates")
                .join(format!("{uuid}.crt")),
        )
        .ok()
    }
}

pub struct Agent {
    pub proc: Proc,
    pub port: u16,
    pub dir: TempDir,
}

impl Agent {
    /// Start against `api_url` with NICs of the given MACs in a fixture sysfs.
    pub fn start(api_url: &str, macs: &[&str], extra_params: &[&str]) -> Self {
        Self::start_with_sysfs(api_url, macs, extra_params, |_| {})
    }

    /// [`Agent::start`], with `prepare` adding to the fixture sysfs (its
    /// root is passed) before the agent starts.
    pub fn start_with_sysfs(
        api_url: &str,
        macs: &[&str],
        extra_params: &[&str],
        prepare: impl FnOnce(&Path),
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for (i, mac) in macs.iter().enumerate() {
            let nic = dir.path().join(format!("sys/class/net/eth{i}"));
            fs::create_dir_all(&nic).expect("fixture sysfs");
            fs::write(nic.join("address"), format!("{mac}\n")).expect("address");
            fs::write(nic.join("type"), "1\n").expect("type");
            fs::create_dir_all(nic.join("device")).expect("fixture device");
        }
        // Block devices are the host's real ones (loop devices in tests); the
        // agent only touches those its `ferrite-disks` allow-list names.
        fs::create_dir_all(dir.path().join("sys")).expect("fixture sysfs");
        std::os::unix::fs::symlink("/sys/block", dir.path().join("sys/block"))
            .expect("block symlink");
        // The host's memory description (read only): SMBIOS tables when
        // it has them, else its memory blocks.
        for part in ["firmware/dmi", "devices/system/memory"] {
            let host = Path::new("/sys").join(part);
            let link = dir.path().join("sys").join(part);
            if host.is_dir() {
                fs::create_dir_all(link.parent().expect("parent")).expect("fixture sysfs");
                std::os::unix::fs::symlink(&host, &link).expect("sysfs symlink");
            }
        }
        prepare(&dir.path().join("sys"));
        let port = free_port();
        // These machines have their disks (loop devices, often smaller than
        // the 4 GiB a deploy without hints needs) from the start: the agent
        // looks for its root disk as IPA does, without the pauses between
        // looks (tests/ramdisk/slow_disk.rs covers a disk that comes late).
        let cmdline = format!(
            "console=ttyS0 ipa-api-url={api_url} ipa-listen-host=127.0.0.1 ipa-listen-port={port} \
             ipa-advertise-host=127.0.0.1 ipa-advertise-port={port} ipa-disk-wait-delay=0 {}",
            extra_params.join(" ")
        );
        let mut cmd = Command::new(bin("ferrite-agent"));
        cmd.arg("--cmdline")
            .arg(cmdline)
            .arg("--sysfs-root")
            .arg(dir.path().join("sys"))
            .arg("--run-dir")
            .arg(dir.path().join("run"))
            .arg("--rescue-root")
            .arg(dir.path().join("rescue"))
            .env("FERRITE_LOG", "debug,hyper=info,rustls=info,reqwest=info");
        let proc = Proc::spawn(cmd, dir.path().join("agent.log"));
        Self { proc, port, dir }
    }

    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

/// An HTTPS client that trusts exactly this PEM (as Ironic does with
/// `agent_verify_ca`; pinned as ferrite-conductor does), or plain HTTP when
/// `pem` is `None`.
pub fn agent_client(pem: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_secs(30));
    if let Some(pem) = pem {
        let tls = ferrite_conductor::agent_tls::pinned_client_config(pem.as_bytes())
            .context("the agent PEM")?;
        builder = builder.use_preconfigured_tls(tls);
    }
    Ok(builder.build()?)
}

/// Parse Ironic's naive `driver_internal_info` timestamps.
pub fn parse_internal_time(s: &str) -> anyhow::Result<chrono::NaiveDateTime> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .with_context(|| format!("bad timestamp {s}"))
}

/// Fail unless the process exits by itself within `timeout`.
pub async fn wait_exit(
    proc: &mut Proc,
    timeout: Duration,
) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = proc.exited() {
            return Ok(status);
        }
        if Instant::now() > deadline {
            bail!("process did not exit within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A conductor with one node and port, and an agent that looked the node up
/// and heartbeated (over auto-TLS): the agent's API is ready for commands.
pub struct Pair {
    pub conductor: Conductor,
    pub agent: Agent,
    pub uuid: String,
    pub pem: String,
}

impl Pair {
    /// Fast-track conductor (lookup allowed in `enroll`) plus `conductor_flags`;
    /// the agent gets `agent_params` on its command line.
    pub async fn start(conductor_flags: &[&str], mac: &str, agent_params: &[&str]) -> Self {
        let mut flags = vec!["--fast-track", "true"];
        flags.extend_from_slice(conductor_flags);
        let conductor = Conductor::start(&flags).await;
        let node = conductor
            .create_node(json!({"driver": "fake-hardware", "name": "node-0"}))
            .await;
        let uuid = node["uuid"].as_str().expect("uuid").to_string();
        conductor.create_port(&uuid, mac).await;
        let agent = Agent::start(&conductor.url, &[mac], agent_params);
        let pem = conductor
            .wait_agent_certificate(&uuid, Duration::from_secs(60))
            .await;
        // The first heartbeat makes the conductor ask the agent for its
        // clean steps; a test's own command sent meanwhile would get the
        // agent's 409 "busy". Start once that exchange is over.
        // (An agent whose steps can not be fetched never gets there: such a
        // pair starts after a bounded wait all the same.)
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let node = conductor.node(&uuid).await;
            if node["driver_internal_info"]
                .get("agent_cached_clean_steps_refreshed")
                .is_some()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            conductor,
            agent,
            uuid,
            pem,
        }
    }

    /// The agent's command API as the conductor uses it (token, verified TLS).
    pub fn api(&self) -> AgentApi {
        AgentApi {
            client: agent_client(Some(&self.pem)).expect("agent client"),
            base: self.agent.url("https"),
            token: self.conductor.agent_token(&self.uuid).expect("token"),
        }
    }
}

/// A client of the agent's IPA API.
#[derive(Clone)]
pub struct AgentApi {
    pub client: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl AgentApi {
    /// `POST /v1/commands/?agent_token=…<query>`; status and JSON body.
    pub async fn post(&self, query: &str, body: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!(
                "{}/v1/commands/?agent_token={}{query}",
                self.base, self.token
            ))
            .json(&body)
            .send()
            .await
            .expect("POST command");
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    /// `name` with `params`, waiting for the result. While the agent is
    /// busy with another command (409, e.g. the conductor's
    /// `get_clean_steps` after a heartbeat), retry as Ironic does.
    pub async fn run(&self, name: &str, params: Value) -> Value {
        self.run_within(name, params, Duration::from_secs(30)).await
    }

    /// [`AgentApi::run`], retrying for up to `within` while the agent is busy
    /// (a ramdisk under TCG can take longer over its first commands).
    pub async fn run_within(&self, name: &str, params: Value, within: Duration) -> Value {
        let body = json!({"name": name, "params": params});
        let deadline = Instant::now() + within;
        loop {
            let (code, result) = self.post("&wait=true", body.clone()).await;
            if code != 409 || Instant::now() > deadline {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }
}
