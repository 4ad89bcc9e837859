//! /etc/resolv.conf as the merged view of every address source's DNS
//! servers and search domains (one entry per source, e.g. "eth0 dhcpv4"),
//! rewritten whenever a source changes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;

use tracing::warn;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    pub servers: Vec<IpAddr>,
    pub search: Vec<String>,
}

#[derive(Debug)]
pub struct Resolv {
    path: PathBuf,
    sources: Mutex<BTreeMap<String, Dns>>,
}

impl Resolv {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            sources: Mutex::new(BTreeMap::new()),
        }
    }

    /// Set (or, with an empty `dns`, clear) what `source` contributes.
    pub fn set(&self, source: &str, dns: Dns) {
        let text = {
            let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
            if dns == Dns::default() {
                if sources.remove(source).is_none() {
                    return;
                }
            } else if sources.get(source) == Some(&dns) {
                return;
            } else {
                sources.insert(source.to_string(), dns);
            }
            render(sources.values())
        };
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = std::fs::write(&self.path, text) {
            warn!("writing {}: {e}", self.path.display());
        }
    }
}

/// Servers and domains in source order, each once. The C resolvers read
/// only the first three `nameserver` lines; all are written anyway, for
/// whoever reads the file.
pub fn render<'a>(sources: impl Iterator<Item = &'a Dns>) -> String {
    let mut servers: Vec<IpAddr> = Vec::new();
    let mut search: Vec<&str> = Vec::new();
    for dns in sources {
        for s in &dns.servers {
            if !servers.contains(s) {
                servers.push(*s);
            }
        }
        for d in &dns.search {
            if !search.contains(&d.as_str()) {
                search.push(d);
            }
        }
    }
    let mut text = String::new();
    if !search.is_empty() {
        text.push_str(&format!("search {}\n", search.join(" ")));
    }
    for s in servers {
        text.push_str(&format!("nameserver {s}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_merge_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/resolv.conf");
        let r = Resolv::new(&path);
        r.set(
            "eth0 dhcpv4",
            Dns {
                servers: vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
                search: vec!["lab.example".into()],
            },
        );
        r.set(
            "eth1 dhcpv4",
            Dns {
                servers: vec!["10.0.0.2".parse().unwrap(), "fd00::1".parse().unwrap()],
                search: vec!["example".into(), "lab.example".into()],
            },
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "search lab.example example\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n\
             nameserver fd00::1\n"
        );
        r.set("eth0 dhcpv4", Dns::default());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "search example lab.example\nnameserver 10.0.0.2\nnameserver fd00::1\n"
        );
    }
}
