//! `modules.softdep`: modules to load before (`pre:`) or after (`post:`)
//! another one, which its code needs without linking to it (ext4 wants a
//! crc32c implementation, r8169 its PHY driver).

use std::collections::BTreeMap;

use super::index::module_name;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SoftDep {
    pub pre: Vec<String>,
    pub post: Vec<String>,
}

/// `softdep <module> pre: a b post: c` lines, by module name. The names
/// may be aliases (`crypto-crc32c`); the loader resolves them.
pub fn parse(text: &str) -> BTreeMap<String, SoftDep> {
    let mut out: BTreeMap<String, SoftDep> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("softdep") {
            continue;
        }
        let Some(module) = words.next() else { continue };
        let entry = out.entry(module_name(module)).or_default();
        let mut post = false;
        for w in words {
            match w {
                "pre:" => post = false,
                "post:" => post = true,
                name if post => entry.post.push(name.to_string()),
                name => entry.pre.push(name.to_string()),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_and_post_lists() {
        let deps = parse(
            "# Soft dependencies\n\
             softdep ext4 pre: crypto-crc32c\n\
             softdep ipmi_msghandler post: ipmi_devintf\n\
             softdep a pre: b c post: d pre: e\n\
             softdep\n",
        );
        assert_eq!(deps["ext4"].pre, ["crypto-crc32c"]);
        assert_eq!(deps["ipmi_msghandler"].post, ["ipmi_devintf"]);
        assert_eq!(deps["a"].pre, ["b", "c", "e"]);
        assert_eq!(deps["a"].post, ["d"]);
        assert_eq!(deps.len(), 3);
    }
}
