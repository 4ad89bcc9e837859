//! The real OpenStack Ironic (PyPI `ironic` 39.x, installed by scripts/setup
//! into build/ironic-venv), run standalone on 127.0.0.1: the all-in-one
//! `ironic` process (API and conductor, `rpc_transport = none`), noauth,
//! SQLite, fake power and management, the `direct` deploy, the `agent`
//! (in-band) inspection, and agent TLS required as Ironic's default.
//! Shared by the interop tests and the fleet benchmark.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{free_port, wait_for, Proc};
use serde_json::{json, Value};
use tempfile::TempDir;

pub fn venv_bin(venv: &str, name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../build")
        .join(venv)
        .join("bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup (it installs the pinned ironic and \
         ironic-python-agent into build/)",
        path.display()
    );
    path
}

/// `ironic.conf`: sections of options, ours over the defaults.
pub struct Config(BTreeMap<&'static str, BTreeMap<&'static str, String>>);

impl Config {
    fn standalone(state: &Path, api_port: u16) -> Self {
        let s = |p: &str| state.join(p).display().to_string();
        let mut c = Self(BTreeMap::new());
        for (section, key, value) in [
            ("DEFAULT", "auth_strategy", "noauth".to_string()),
            ("DEFAULT", "rpc_transport", "none".into()),
            ("DEFAULT", "host", "ferrite-interop".into()),
            ("DEFAULT", "my_ip", "127.0.0.1".into()),
            ("DEFAULT", "debug", "True".into()),
            ("DEFAULT", "log_dir", s("log")),
            ("DEFAULT", "log_file", "ironic.log".into()),
            ("DEFAULT", "state_path", s("")),
            ("DEFAULT", "tempdir", s("tmp")),
            (
                "DEFAULT",
                "enabled_hardware_types",
                "fake-hardware,manual-management".into(),
            ),
            // `pxe` only so that manual-management (no fake boot) loads.
            ("DEFAULT", "enabled_boot_interfaces", "fake,pxe".into()),
            ("DEFAULT", "enabled_deploy_interfaces", "direct,fake".into()),
            ("DEFAULT", "default_deploy_interface", "direct".into()),
            ("DEFAULT", "enabled_power_interfaces", "fake".into()),
            ("DEFAULT", "enabled_management_interfaces", "fake".into()),
            (
                "DEFAULT",
                "enabled_inspect_interfaces",
                "agent,fake,no-inspect".into(),
            ),
            ("DEFAULT", "enabled_network_interfaces", "noop".into()),
            ("DEFAULT", "default_network_interface", "noop".into()),
            (
                "DEFAULT",
                "enabled_raid_interfaces",
                "agent,fake,no-raid".into(),
            ),
            ("DEFAULT", "enabled_bios_interfaces", "fake,no-bios".into()),
            (
                "DEFAULT",
                "enabled_vendor_interfaces",
                "fake,no-vendor".into(),
            ),
            (
                "DEFAULT",
                "enabled_rescue_interfaces",
                "fake,no-rescue".into(),
            ),
            (
                "DEFAULT",
                "enabled_firmware_interfaces",
                "fake,no-firmware".into(),
            ),
            ("DEFAULT", "enabled_storage_interfaces", "noop".into()),
            ("DEFAULT", "enabled_console_interfaces", "no-console".into()),
            ("api", "host_ip", "127.0.0.1".into()),
            ("api", "port", api_port.to_string()),
            ("api", "api_workers", "1".into()),
            (
                "database",
                "connection",
                format!("sqlite:///{}", s("ironic.sqlite")),
            ),
            ("dhcp", "dhcp_provider", "none".into()),
            ("deploy", "http_root", s("httpboot")),
            ("deploy", "http_url", "http://127.0.0.1:9".into()),
            ("agent", "certificates_path", s("certificates")),
            ("agent", "deploy_logs_local_path", s("deploy-logs")),
            // After standby.power_off Ironic polls the (fake) power state
            // 2x1 s instead of 6x5 s, then powers off out of band.
            ("agent", "post_deploy_get_power_state_retries", "2".into()),
            (
                "agent",
                "post_deploy_get_power_state_retry_interval",
                "1".into(),
            ),
            ("pxe", "tftp_root", s("tftpboot")),
            ("pxe", "images_path", s("images")),
            ("pxe", "instance_master_path", s("master")),
            // Fake boot cannot manage an inspection boot: "unmanaged".
            ("inspector", "require_managed_boot", "False".into()),
            (
                "inspector",
                "hooks",
                "$default_hooks,memory,cpus,root-device,boot-mode".into(),
            ),
            ("service_catalog", "auth_type", "none".into()),
            (
                "service_catalog",
                "endpoint_override",
                format!("http://127.0.0.1:{api_port}"),
            ),
            ("oslo_concurrency", "lock_path", s("locks")),
        ] {
            c.set(section, key, value);
        }
        c
    }

    pub fn set(&mut self, section: &'static str, key: &'static str, value: String) {
        self.0.entry(section).or_default().insert(key, value);
    }

    /// Drop an option, so Ironic's own default applies.
    pub fn unset(&mut self, section: &'static str, key: &'static str) {
        if let Some(options) = self.0.get_mut(section) {
            options.remove(key);
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for (section, options) in &self.0 {
            let _ = writeln!(out, "[{section}]");
            for (k, v) in options {
                let _ = writeln!(out, "{k} = {v}");
            }
            out.push('\n');
        }
        out
    }
}

pub struct Ironic {
    proc: Proc,
    pub url: String,
    pub dir: TempDir,
    http: reqwest::Client,
}

impl Ironic {
    /// Start with the standalone configuration plus `tune` applied.
    pub async fn start(tune: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        for sub in [
            "log",
            "tmp",
            "certificates",
            "deploy-logs",
            "httpboot",
            "tftpboot",
            "images",
            "master",
            "locks",
        ] {
            std::fs::create_dir_all(state.join(sub)).expect("state dir");
        }
        let port = free_port();
        let mut config = Config::standalone(&state, port);
        tune(&mut config);
        let conf = dir.path().join("ironic.conf");
        std::fs::write(&conf, config.render()).expect("ironic.conf");
        // `upgrade` cannot build an empty SQLite database; create_schema
        // makes it and stamps the head revision.
        let out = Command::new(venv_bin("ironic-venv", "ironic-dbsync"))
            .arg("--config-file")
            .arg(&conf)
            .arg("create_schema")
            .output()
            .expect("ironic-dbsync");
        assert!(
            out.status.success(),
            "ironic-dbsync create_schema: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = Command::new(venv_bin("ironic-venv", "ironic"));
        cmd.arg("--config-file").arg(&conf).process_group(0);
        let mut proc = Proc::spawn(cmd, dir.path().join("ironic.out"));
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let log = state.join("log/ironic.log");
        let probe = http.clone();
        let root = url.clone();
        wait_for("Ironic's API", Duration::from_secs(120), || {
            if let Some(status) = proc.exited() {
                panic!(
                    "ironic exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            // The launcher stays up when its conductor fails to start.
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                !text.contains("NoValidDefaultForInterface"),
                "ironic's conductor failed to start: {text}"
            );
            let probe = probe.clone();
            let root = root.clone();
            async move {
                let r = probe.get(format!("{root}/v1")).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        Self {
            proc,
            url,
            dir,
            http,
        }
    }

    /// The launcher's pid, which is also the process group of its workers.
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("state/log/ironic.log")).unwrap_or_default()
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .header("X-OpenStack-Ironic-API-Version", "latest")
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.request(method.clone(), path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A request that must succeed; its body.
    pub async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, reply) = self.call(method.clone(), path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {reply}"
        );
        reply
    }

    pub async fn node(&self, uuid: &str) -> Value {
        self.ok(reqwest::Method::GET, &format!("/v1/nodes/{uuid}"), None)
            .await
    }

    pub async fn patch_node(&self, uuid: &str, ops: Value) -> Value {
        self.ok(
            reqwest::Method::PATCH,
            &format!("/v1/nodes/{uuid}"),
            Some(ops),
        )
        .await
    }

    pub async fn provision(&self, uuid: &str, target: &str) {
        self.ok(
            reqwest::Method::PUT,
            &format!("/v1/nodes/{uuid}/states/provision"),
            Some(json!({ "target": target })),
        )
        .await;
    }

    /// Wait for `want`; any other `... failed` state ends the test with
    /// Ironic's `last_error`.
    pub async fn wait_state(&self, uuid: &str, want: &str, within: Duration) -> Value {
        let what = format!("node {uuid} to reach {want}");
        wait_for(&what, within, || async {
            let node = self.node(uuid).await;
            let state = node["provision_state"].as_str().unwrap_or_default();
            assert!(
                state == want || !state.ends_with("failed"),
                "node went to {state}: {}",
                node["last_error"]
            );
            // A stable state is reached when nothing is in flight any more.
            let stable = ["enroll", "manageable", "available", "active"].contains(&want);
            (state == want && (!stable || node["target_provision_state"].is_null())).then_some(node)
        })
        .await
    }

    pub async fn port_macs(&self, uuid: &str) -> Vec<String> {
        let ports = self
            .ok(
                reqwest::Method::GET,
                &format!("/v1/nodes/{uuid}/ports"),
                None,
            )
            .await;
        let mut macs: Vec<String> = ports["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["address"].as_str().map(str::to_string))
            .collect();
        macs.sort();
        macs
    }
}

impl Drop for Ironic {
    fn drop(&mut self) {
        // The launcher forks its API and conductor workers: end them all.
        let pgid = self.proc.child.id() as i32;
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
        if std::thread::panicking() {
            eprintln!("---- ironic.log (tail) ----");
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
