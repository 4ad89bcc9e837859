//! /etc/resolv.conf written by merging: each source (a DHCPv4 lease, a
//! DHCPv6 reply) adds its servers and search domains to what is there, so
//! the sources never overwrite each other.

use std::net::IpAddr;
use std::path::Path;

/// The resolver settings one source contributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolv {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
}

/// musl and glibc read at most three nameservers; glibc six search domains.
const MAX_NS: usize = 3;
const MAX_SEARCH: usize = 6;

/// `existing` with `add` merged in: servers and domains already there keep
/// their place, new ones follow, duplicates and lines past the limits go.
pub fn merge(existing: &str, add: &Resolv) -> String {
    let mut servers: Vec<String> = Vec::new();
    let mut search: Vec<String> = Vec::new();
    let mut other: Vec<String> = Vec::new();
    for line in existing.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => servers.extend(words.next().map(str::to_string)),
            Some("search") | Some("domain") => search.extend(words.map(str::to_string)),
            Some(_) => other.push(line.to_string()),
            None => {}
        }
    }
    servers.extend(add.nameservers.iter().map(IpAddr::to_string));
    search.extend(add.search.iter().cloned());
    dedup(&mut servers);
    dedup(&mut search);
    let mut out = String::new();
    if !search.is_empty() {
        search.truncate(MAX_SEARCH);
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    for s in servers.iter().take(MAX_NS) {
        out.push_str(&format!("nameserver {s}\n"));
    }
    for line in other {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert(s.clone()));
}

/// Merge `add` into the file at `path` (created if missing).
pub fn update(path: &Path, add: &Resolv) -> std::io::Result<()> {
    if add.nameservers.is_empty() && add.search.is_empty() {
        return Ok(());
    }
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, merge(&existing, add))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_add_to_each_other() {
        let v4 = "nameserver 10.0.2.3\nsearch lab\noptions ndots:1\n";
        let v6 = Resolv {
            nameservers: vec!["fd00::1".parse().unwrap(), "10.0.2.3".parse().unwrap()],
            search: vec!["example.test".into(), "lab".into()],
        };
        assert_eq!(
            merge(v4, &v6),
            "search lab example.test\nnameserver 10.0.2.3\nnameserver fd00::1\noptions ndots:1\n"
        );
        assert_eq!(merge("", &Resolv::default()), "");
        let many = Resolv {
            nameservers: (1..=5).map(|i| IpAddr::from([10, 0, 0, i])).collect(),
            search: vec![],
        };
        assert_eq!(merge("", &many).lines().count(), 3);
    }
}
