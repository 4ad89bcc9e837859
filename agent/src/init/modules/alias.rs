//! `modules.alias` (depmod's format, written by the ramdisk build): which
//! module drives a device, matched against the device's `modalias` with
//! shell-glob rules, as modprobe does.

use glob::Pattern;

use super::index::module_name;

/// One `alias <pattern> <module>` line.
#[derive(Debug, Clone)]
struct Alias {
    /// The pattern's text up to its first wildcard: a cheap filter, since a
    /// machine has about a hundred modaliases and a server ramdisk thousands
    /// of aliases (PCI ids mostly), and TCG guests are slow.
    literal_prefix: String,
    pattern: Option<Pattern>,
    raw: String,
    module: String,
}

/// The aliases of the shipped modules, in file order.
#[derive(Debug, Default, Clone)]
pub struct AliasTable {
    aliases: Vec<Alias>,
}

impl AliasTable {
    /// Lines other than `alias PATTERN MODULE` are ignored (comments); a
    /// pattern that is not a valid glob matches only its own text.
    pub fn parse(text: &str) -> Self {
        let aliases = text
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                (words.next()? == "alias").then_some(())?;
                let (raw, module) = (words.next()?, words.next()?);
                let cut = raw.find(['*', '?', '[']).unwrap_or(raw.len());
                Some(Alias {
                    literal_prefix: raw[..cut].to_string(),
                    pattern: Pattern::new(raw).ok(),
                    raw: raw.to_string(),
                    module: module_name(module),
                })
            })
            .collect();
        Self { aliases }
    }

    pub fn len(&self) -> usize {
        self.aliases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.aliases.is_empty()
    }

    /// The modules whose aliases match `modalias`, each once, in file order.
    pub fn lookup(&self, modalias: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for a in &self.aliases {
            if !modalias.starts_with(&a.literal_prefix) {
                continue;
            }
            let hit = match &a.pattern {
                Some(p) => p.matches(modalias),
                None => a.raw == modalias,
            };
            if hit && !out.contains(&a.module) {
                out.push(a.module.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real lines from Debian 6.1's modules (e1000e, virtio_net, sd_mod,
    // ipmi_si, usb_storage), and a 8139cp/8139too pair that both match.
    const ALIASES: &str = "\
# Aliases extracted from modules themselves.
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
alias virtio:d00000001v* virtio_net
alias scsi:t-0x00* sd_mod
alias scsi:t-0x0e* sd_mod
alias acpi*:IPI0001:* ipmi_si
alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb_storage
alias pci:v000010ECd00008139sv*sd*bc*sc*i* 8139cp
alias pci:v000010ECd00008139sv*sd*bc*sc*i* 8139too
alias pci:v0000[abc]*d*sv*sd*bc*sc*i* bracketed
";

    #[test]
    fn device_modaliases_find_their_drivers() {
        let t = AliasTable::parse(ALIASES);
        assert_eq!(t.len(), 9);
        assert_eq!(
            t.lookup("pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00"),
            ["e1000e"]
        );
        assert_eq!(t.lookup("virtio:d00000001v00001AF4"), ["virtio_net"]);
        assert_eq!(t.lookup("scsi:t-0x00"), ["sd_mod"]);
        assert_eq!(t.lookup("acpi:IPI0001:"), ["ipmi_si"]);
        assert_eq!(
            t.lookup("usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00"),
            ["usb_storage"]
        );
        assert_eq!(
            t.lookup("pci:v000010ECd00008139sv00001AF4sd00001100bc02sc00i00"),
            ["8139cp", "8139too"]
        );
        assert_eq!(
            t.lookup("pci:v0000b123d00000001sv00000000sd00000000bc00sc00i00"),
            ["bracketed"]
        );
    }

    #[test]
    fn unknown_devices_and_near_misses_match_nothing() {
        let t = AliasTable::parse(ALIASES);
        // sr_mod's type 5 is not shipped here; a different e1000e device id.
        assert!(t.lookup("scsi:t-0x05").is_empty());
        assert!(t
            .lookup("pci:v00008086d000010D4sv00008086sd00000000bc02sc00i00")
            .is_empty());
        assert!(t.lookup("").is_empty());
        // Case matters, as for modprobe.
        assert!(t.lookup("VIRTIO:d00000001v00001AF4").is_empty());
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let t = AliasTable::parse("alias\nalias only-pattern\nblah x y\nalias [ broken\n");
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup("["), ["broken"]);
    }
}
