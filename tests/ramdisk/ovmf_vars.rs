//! The boot entries in an OVMF variable store file (the machine's NVRAM as
//! QEMU keeps it on the host), read the way the firmware does: the
//! firmware volume, its variable store, and every variable whose State
//! byte says it is live. A deleted variable stays in the file, marked, until
//! the firmware reclaims the space, so a byte search would still find it.

/// `EFI_GLOBAL_VARIABLE` (8BE4DF61-93CA-11D2-AA0D-00E098032B8C), as stored.
const GLOBAL: [u8; 16] = [
    0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c,
];
/// `gEfiAuthenticatedVariableGuid` (AAF32C78-947B-439A-A180-2E144EC37792):
/// the store's variables have the authenticated header.
const AUTHENTICATED: [u8; 16] = [
    0x78, 0x2c, 0xf3, 0xaa, 0x7b, 0x94, 0x9a, 0x43, 0xa1, 0x80, 0x2e, 0x14, 0x4e, 0xc3, 0x77, 0x92,
];
/// `gEfiVariableGuid` (DDCF3616-3275-4164-98B6-FE85707FFE7D).
const PLAIN: [u8; 16] = [
    0x16, 0x36, 0xcf, 0xdd, 0x75, 0x32, 0x64, 0x41, 0x98, 0xb6, 0xfe, 0x85, 0x70, 0x7f, 0xfe, 0x7d,
];
const START_ID: u16 = 0x55aa;
/// edk2's `VAR_ADDED`, and `VAR_ADDED & VAR_IN_DELETED_TRANSITION` (live
/// until its replacement is written).
const VAR_ADDED: u8 = 0x3f;
const VAR_ADDED_IN_TRANSITION: u8 = 0x3e;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Variable {
    pub(crate) name: String,
    pub(crate) guid: [u8; 16],
    pub(crate) data: Vec<u8>,
}

/// A live `Boot####` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BootEntry {
    pub(crate) number: u16,
    pub(crate) description: String,
    /// The device path list, raw.
    pub(crate) path: Vec<u8>,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

fn le32(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

fn utf16z(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&c| c != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// Every live variable of the store in `fd` (an `OVMF_VARS*.fd`).
pub(crate) fn variables(fd: &[u8]) -> Vec<Variable> {
    assert_eq!(&fd[40..44], b"_FVH", "not a firmware volume");
    let store = &fd[usize::from(le16(fd, 48))..];
    let authenticated = match store[..16].try_into().unwrap() {
        AUTHENTICATED => true,
        PLAIN => false,
        other => panic!("unknown variable store {other:02x?}"),
    };
    let size = le32(store, 16).min(store.len());
    let header = if authenticated { 60 } else { 32 };
    let (sizes_at, guid_at) = if authenticated { (36, 44) } else { (8, 16) };
    let mut found: Vec<(u8, Variable)> = Vec::new();
    let mut off = 28;
    while off + header <= size && le16(store, off) == START_ID {
        let state = store[off + 2];
        let (name_len, data_len) = (le32(store, off + sizes_at), le32(store, off + sizes_at + 4));
        let name_at = off + header;
        let data_at = name_at + name_len;
        assert!(
            data_at + data_len <= size,
            "variable at {off} runs past the store"
        );
        found.push((
            state,
            Variable {
                name: utf16z(&store[name_at..data_at]),
                guid: store[off + guid_at..off + guid_at + 16].try_into().unwrap(),
                data: store[data_at..data_at + data_len].to_vec(),
            },
        ));
        off = (data_at + data_len + 3) & !3;
    }
    let added = |v: &Variable| {
        found
            .iter()
            .any(|(s, o)| *s == VAR_ADDED && o.name == v.name && o.guid == v.guid)
    };
    found
        .iter()
        .filter(|(s, v)| *s == VAR_ADDED || (*s == VAR_ADDED_IN_TRANSITION && !added(v)))
        .map(|(_, v)| v.clone())
        .collect()
}

/// The live `Boot####` entries (EFI_LOAD_OPTION: attributes, path length,
/// description, device path list).
pub(crate) fn boot_entries(fd: &[u8]) -> Vec<BootEntry> {
    variables(fd)
        .into_iter()
        .filter(|v| v.guid == GLOBAL)
        .filter_map(|v| {
            let hex = v.name.strip_prefix("Boot")?;
            if hex.len() != 4 {
                return None;
            }
            let number = u16::from_str_radix(hex, 16).ok()?;
            let path_len = usize::from(le16(&v.data, 4));
            let desc_len = v.data[6..].chunks_exact(2).position(|c| c == [0, 0])? * 2;
            let path_at = 6 + desc_len + 2;
            Some(BootEntry {
                number,
                description: utf16z(&v.data[6..path_at]),
                path: v.data.get(path_at..path_at + path_len)?.to_vec(),
            })
        })
        .collect()
}

/// `BootOrder`, if live.
pub(crate) fn boot_order(fd: &[u8]) -> Option<Vec<u16>> {
    variables(fd)
        .into_iter()
        .find(|v| v.guid == GLOBAL && v.name == "BootOrder")
        .map(|v| {
            v.data
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    /// An authenticated variable as edk2 lays it out.
    fn var(state: u8, name: &str, data: &[u8]) -> Vec<u8> {
        let name = utf16(name);
        let mut v = Vec::new();
        v.extend_from_slice(&START_ID.to_le_bytes());
        v.push(state);
        v.push(0);
        v.extend_from_slice(&7u32.to_le_bytes());
        v.extend_from_slice(&[0; 8 + 16 + 4]);
        v.extend_from_slice(&(name.len() as u32).to_le_bytes());
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(&GLOBAL);
        v.extend_from_slice(&name);
        v.extend_from_slice(data);
        while v.len() % 4 != 0 {
            v.push(0xff);
        }
        v
    }

    fn load_option(desc: &str, path: &[u8]) -> Vec<u8> {
        let mut d = 1u32.to_le_bytes().to_vec();
        d.extend_from_slice(&(path.len() as u16).to_le_bytes());
        d.extend_from_slice(&utf16(desc));
        d.extend_from_slice(path);
        d
    }

    #[test]
    fn live_entries_only_and_the_template_is_empty() {
        let template = std::fs::read(crate::e2e::OVMF_VARS).expect("OVMF (scripts/setup)");
        assert_eq!(boot_entries(&template), []);
        let mut fd = template.clone();
        let store = usize::from(le16(&fd, 48)) + 28;
        let mut vars = Vec::new();
        vars.extend(var(0x3c, "Boot0001", &load_option("old", &[1, 2])));
        vars.extend(var(
            VAR_ADDED,
            "Boot0001",
            &load_option("new", &[0x7f, 0xff]),
        ));
        vars.extend(var(0x3c, "Boot0002", &load_option("gone", &[])));
        vars.extend(var(
            VAR_ADDED_IN_TRANSITION,
            "Boot0003",
            &load_option("moving", &[]),
        ));
        vars.extend(var(VAR_ADDED, "BootOrder", &[1, 0, 3, 0]));
        fd[store..store + vars.len()].copy_from_slice(&vars);
        let entries = boot_entries(&fd);
        let got: Vec<(u16, &str, &[u8])> = entries
            .iter()
            .map(|e| (e.number, e.description.as_str(), e.path.as_slice()))
            .collect();
        assert_eq!(got, [(1, "new", &[0x7f, 0xff][..]), (3, "moving", &[][..])]);
        assert_eq!(boot_order(&fd), Some(vec![1, 3]));
    }
}
