//! L1/L2 tables → what the streaming writer must do: host byte spans that
//! become guest data (plain or compressed), and guest ranges that read as
//! zero. Every offset is checked against the file and the virtual size, so
//! corrupt tables give an error, never a write to a wild offset.

use super::header::Header;
use super::Qcow2Error;

/// Bits 9..=55 of L1/L2 entries: a cluster-aligned host offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED: u64 = 1 << 62;
const ZERO_FLAG: u64 = 1;
/// Subclusters per cluster with extended L2 entries.
const SUBCLUSTERS: u64 = 32;

/// Host bytes `[host, host + len)` that produce guest data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// Copy as is to `guest`.
    Data { host: u64, len: u64, guest: u64 },
    /// Decompress to `out_len` bytes at `guest`.
    Compressed {
        host: u64,
        len: u64,
        guest: u64,
        out_len: u64,
    },
}

impl Extent {
    pub fn host(&self) -> u64 {
        match *self {
            Self::Data { host, .. } | Self::Compressed { host, .. } => host,
        }
    }

    pub fn host_len(&self) -> u64 {
        match *self {
            Self::Data { len, .. } | Self::Compressed { len, .. } => len,
        }
    }

    pub fn guest(&self) -> u64 {
        match *self {
            Self::Data { guest, .. } | Self::Compressed { guest, .. } => guest,
        }
    }

    pub fn guest_len(&self) -> u64 {
        match *self {
            Self::Data { len, .. } => len,
            Self::Compressed { out_len, .. } => out_len,
        }
    }
}

/// A guest byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestRange {
    pub start: u64,
    pub len: u64,
}

/// Push a range, merging with the previous one when contiguous.
pub fn push_range(ranges: &mut Vec<GuestRange>, start: u64, len: u64) {
    if len == 0 {
        return;
    }
    if let Some(last) = ranges.last_mut() {
        if last.start + last.len == start {
            last.len += len;
            return;
        }
    }
    ranges.push(GuestRange { start, len });
}

fn push_extent(extents: &mut Vec<Extent>, e: Extent) {
    if let (
        Some(Extent::Data { host, len, guest }),
        Extent::Data {
            host: h2,
            len: l2,
            guest: g2,
        },
    ) = (extents.last_mut(), e)
    {
        if *host + *len == h2 && *guest + *len == g2 {
            *len += l2;
            return;
        }
    }
    extents.push(e);
}

/// L1 table → host offset of each L2 table (`None`: unallocated).
pub fn parse_l1(
    table: &[u8],
    header: &Header,
    file_len: Option<u64>,
) -> Result<Vec<Option<u64>>, Qcow2Error> {
    if (table.len() as u64) < header.l1_bytes() {
        return Err(Qcow2Error::Truncated("L1 table"));
    }
    let cluster = header.cluster_size();
    let needed = header.virtual_size.div_ceil(header.l2_coverage());
    table
        .chunks_exact(8)
        .take(header.l1_size as usize)
        .enumerate()
        .map(|(i, raw)| {
            let entry = u64::from_be_bytes(raw.try_into().unwrap_or([0; 8]));
            let offset = entry & OFFSET_MASK;
            if offset == 0 {
                return Ok(None);
            }
            if i as u64 >= needed {
                return Err(Qcow2Error::Corrupt(format!(
                    "L1 entry {i} is beyond the virtual size"
                )));
            }
            if !offset.is_multiple_of(cluster) {
                return Err(Qcow2Error::Corrupt(format!(
                    "L2 table offset {offset:#x} is not cluster aligned"
                )));
            }
            check_inside(offset, cluster, file_len, "L2 table")?;
            Ok(Some(offset))
        })
        .collect()
}

fn check_inside(host: u64, len: u64, file_len: Option<u64>, what: &str) -> Result<(), Qcow2Error> {
    let end = host
        .checked_add(len)
        .ok_or_else(|| Qcow2Error::Corrupt(format!("{what} offset overflows")))?;
    match file_len {
        Some(file_len) if end > file_len => Err(Qcow2Error::Corrupt(format!(
            "{what} at {host:#x}+{len:#x} points outside the file ({file_len} bytes)"
        ))),
        _ => Ok(()),
    }
}

/// A data run: must start inside the file; a tail past the end of the file
/// reads as zeros (qemu leaves the last cluster short when only its first
/// subclusters hold data).
fn push_data(
    map: &mut L2Map,
    host: u64,
    len: u64,
    guest: u64,
    file_len: Option<u64>,
) -> Result<(), Qcow2Error> {
    let present = match file_len {
        Some(fl) if host >= fl => {
            return Err(Qcow2Error::Corrupt(format!(
                "data cluster at {host:#x}+{len:#x} points outside the file ({fl} bytes)"
            )))
        }
        Some(fl) => len.min(fl - host),
        None => len,
    };
    push_extent(
        &mut map.extents,
        Extent::Data {
            host,
            len: present,
            guest,
        },
    );
    push_range(&mut map.zeros, guest + present, len - present);
    Ok(())
}

/// What one L2 table contributes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct L2Map {
    pub extents: Vec<Extent>,
    pub zeros: Vec<GuestRange>,
}

/// Decode the L2 table for L1 index `l1_index`.
pub fn parse_l2(
    table: &[u8],
    header: &Header,
    l1_index: u64,
    file_len: Option<u64>,
) -> Result<L2Map, Qcow2Error> {
    let cluster = header.cluster_size();
    let entry_size = header.l2_entry_size() as usize;
    if (table.len() as u64) < cluster {
        return Err(Qcow2Error::Truncated("L2 table"));
    }
    let vsize = header.virtual_size;
    let base = l1_index * header.l2_coverage();
    let mut map = L2Map::default();
    for (j, raw) in table[..cluster as usize]
        .chunks_exact(entry_size)
        .enumerate()
    {
        let guest = base + j as u64 * cluster;
        let entry = u64::from_be_bytes(raw[..8].try_into().unwrap_or([0; 8]));
        let bitmap = if header.extended_l2 {
            u64::from_be_bytes(raw[8..16].try_into().unwrap_or([0; 8]))
        } else {
            0
        };
        if guest >= vsize {
            if entry != 0 || bitmap != 0 {
                return Err(Qcow2Error::Corrupt(format!(
                    "L2 entry for guest offset {guest:#x} is beyond the virtual size"
                )));
            }
            continue;
        }
        let guest_len = cluster.min(vsize - guest);
        if entry & COMPRESSED != 0 {
            let x = 62 - (header.cluster_bits - 8);
            let host = entry & ((1u64 << x) - 1);
            let sectors = ((entry >> x) & ((1u64 << (header.cluster_bits - 8)) - 1)) + 1;
            let len = sectors * 512 - (host & 511);
            // The last compressed cluster may end before its rounded size.
            let len = match file_len {
                Some(fl) if host < fl => len.min(fl - host),
                _ => len,
            };
            check_inside(host, len, file_len, "compressed cluster")?;
            push_extent(
                &mut map.extents,
                Extent::Compressed {
                    host,
                    len,
                    guest,
                    out_len: guest_len,
                },
            );
            continue;
        }
        let host = entry & OFFSET_MASK;
        let reserved = if header.extended_l2 { 0x1ff } else { 0x1fe };
        if entry & reserved != 0 {
            return Err(Qcow2Error::Corrupt(format!(
                "L2 entry {entry:#x} has reserved bits set"
            )));
        }
        if !header.extended_l2 {
            if host == 0 || entry & ZERO_FLAG != 0 {
                push_range(&mut map.zeros, guest, guest_len);
            } else {
                push_data(&mut map, host, guest_len, guest, file_len)?;
            }
            continue;
        }
        // Extended L2: 32 subclusters, each allocated (data), zero or unallocated.
        let sub = cluster / SUBCLUSTERS;
        let (alloc, zero) = (bitmap & 0xffff_ffff, bitmap >> 32);
        if alloc & zero != 0 {
            return Err(Qcow2Error::Corrupt(format!(
                "subcluster bitmap {bitmap:#x} marks subclusters both allocated and zero"
            )));
        }
        if alloc != 0 && host == 0 {
            return Err(Qcow2Error::Corrupt(
                "allocated subclusters in a cluster with no host offset".into(),
            ));
        }
        for s in 0..SUBCLUSTERS {
            let g = guest + s * sub;
            if g >= vsize {
                break;
            }
            let len = sub.min(vsize - g);
            if alloc & (1 << s) != 0 {
                push_data(&mut map, host + s * sub, len, g, file_len)?;
            } else {
                push_range(&mut map.zeros, g, len);
            }
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::super::header::Compression;
    use super::*;

    fn header(cluster_bits: u32, extended: bool, vsize: u64) -> Header {
        Header {
            version: 3,
            cluster_bits,
            virtual_size: vsize,
            l1_size: 4,
            l1_table_offset: 1 << cluster_bits,
            extended_l2: extended,
            compression: Compression::Zlib,
        }
    }

    fn table(entries: &[(u64, u64)], h: &Header) -> Vec<u8> {
        let mut t = vec![0u8; h.cluster_size() as usize];
        for (i, (e, bm)) in entries.iter().enumerate() {
            let o = i * h.l2_entry_size() as usize;
            t[o..o + 8].copy_from_slice(&e.to_be_bytes());
            if h.extended_l2 {
                t[o + 8..o + 16].copy_from_slice(&bm.to_be_bytes());
            }
        }
        t
    }

    #[test]
    fn standard_entries_merge_and_zero() {
        let h = header(16, false, 4 * 65536);
        let c = 65536u64;
        let t = table(
            &[(5 * c, 0), (6 * c, 0), (0, 0), ((9 * c) | ZERO_FLAG, 0)],
            &h,
        );
        let m = parse_l2(&t, &h, 0, Some(100 * c)).unwrap();
        assert_eq!(
            m.extents,
            vec![Extent::Data {
                host: 5 * c,
                len: 2 * c,
                guest: 0
            }]
        );
        assert_eq!(
            m.zeros,
            vec![GuestRange {
                start: 2 * c,
                len: 2 * c
            }]
        );
    }

    #[test]
    fn entries_outside_the_file_are_corrupt() {
        let h = header(16, false, 65536);
        let t = table(&[(500 * 65536, 0)], &h);
        let err = parse_l2(&t, &h, 0, Some(10 * 65536)).unwrap_err();
        assert!(err.to_string().contains("outside the file"), "{err}");
    }

    #[test]
    fn data_beyond_virtual_size_is_corrupt() {
        let h = header(16, false, 65536);
        let t = table(&[(5 * 65536, 0), (6 * 65536, 0)], &h);
        assert!(parse_l2(&t, &h, 0, None).is_err());
    }

    #[test]
    fn subclusters() {
        let h = header(16, true, 65536);
        // Subcluster 0 allocated, 1 zero, the rest unallocated.
        let t = table(&[(7 * 65536, 0b1 | (0b10 << 32))], &h);
        let m = parse_l2(&t, &h, 0, None).unwrap();
        assert_eq!(
            m.extents,
            vec![Extent::Data {
                host: 7 * 65536,
                len: 2048,
                guest: 0
            }]
        );
        assert_eq!(
            m.zeros,
            vec![GuestRange {
                start: 2048,
                len: 65536 - 2048
            }]
        );
    }

    #[test]
    fn compressed_descriptor() {
        let h = header(16, false, 65536);
        let x = 62 - (16 - 8);
        let entry = COMPRESSED | (2u64 << x) | (10 * 65536 + 100);
        let t = table(&[(entry, 0)], &h);
        let m = parse_l2(&t, &h, 0, Some(20 * 65536)).unwrap();
        assert_eq!(
            m.extents,
            vec![Extent::Compressed {
                host: 10 * 65536 + 100,
                len: 3 * 512 - 100,
                guest: 0,
                out_len: 65536
            }]
        );
    }
}
