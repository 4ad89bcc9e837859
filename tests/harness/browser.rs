//! A real headless Chromium driven over WebDriver: Debian's `chromium`
//! and `chromium-driver` (scripts/setup installs both), and the
//! `fantoccini` client. Chromium reaches only loopback: every other
//! address goes to a proxy on a closed port, and its background services
//! (updates, sync, safe browsing) are off.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::{free_port, wait_for, Proc};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// ChromeDriver (and the Chromium it starts) in a process group of their
/// own, removed with it.
pub struct Browser {
    pub client: Client,
    driver: Proc,
    _profile: TempDir,
    artifacts: PathBuf,
}

/// Where screenshots go: `target/test-artifacts/console/`, kept after the
/// run (CI's log names each file).
pub fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/console");
    std::fs::create_dir_all(&dir).expect("creating the artifacts directory");
    dir
}

impl Browser {
    /// A fresh browser with a window `width` × `height`.
    pub async fn start(width: u32, height: u32) -> Self {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: scripts/setup installs chromium and chromium-driver"
            );
        }
        let profile = tempfile::tempdir().expect("a profile directory");
        let port = free_port();
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .process_group(0);
        let driver = Proc::spawn(cmd, profile.path().join("chromedriver.log"));
        let url = format!("http://127.0.0.1:{port}");
        let status = reqwest::Client::new();
        wait_for("chromedriver", Duration::from_secs(30), || async {
            let r = status.get(format!("{url}/status")).send().await.ok()?;
            let v: Value = r.json().await.ok()?;
            (v["value"]["ready"] == true).then_some(())
        })
        .await;
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    // Root in CI: Chromium's sandbox needs an unprivileged user.
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().join("profile").display()),
                    // Loopback only: anything else is sent to a closed port.
                    "--proxy-server=http://127.0.0.1:9",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-default-apps",
                    "--disable-domain-reliability",
                    "--disable-client-side-phishing-detection",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--password-store=basic",
                ],
            },
        });
        let caps = caps.as_object().cloned().unwrap_or_default();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            Duration::from_secs(60),
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&url),
        )
        .await
        .expect("a Chromium session within 60 s")
        .expect("a Chromium session");
        Self {
            client,
            driver,
            _profile: profile,
            artifacts: artifacts_dir(),
        }
    }

    /// Saves the window as `<name>.png` among the artifacts; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = self.artifacts.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("writing the screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// The text of the first element matching `css`, if there is one.
    pub async fn text(&self, css: &str) -> Option<String> {
        let el = self.client.find(Locator::Css(css)).await.ok()?;
        el.text().await.ok()
    }

    /// Waits until the first element matching `css` has text for which
    /// `want` holds, and returns that text.
    pub async fn wait_text(
        &self,
        what: &str,
        css: &str,
        within: Duration,
        want: impl Fn(&str) -> bool,
    ) -> String {
        wait_for(what, within, || async {
            let t = self.text(css).await?;
            want(&t).then_some(t)
        })
        .await
    }

    /// Runs `script` in the page (a function body; `arguments` are `args`).
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("running {script}: {e}"))
    }

    /// The page's path and query, as the address bar has it.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("the current URL");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Ends the session (Chromium exits) before the driver is killed.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(20), self.client.clone().close()).await;
    }

    pub fn driver_log(&self) -> String {
        self.driver.log_text()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and any Chromium it left behind.
        let pid = self.driver.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's process group.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}
