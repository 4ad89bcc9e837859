//! The single-pass qcow2 engine. Bytes arrive in file order; the engine
//! knows (from tables fetched ahead by Range requests, or from tables it
//! has already streamed past) which host spans are guest data, and writes
//! them as they pass. Plain data is forwarded without buffering; compressed
//! clusters and tables are small and are buffered until complete.
//!
//! A data cluster that passes before the table describing it was seen is
//! "missed"; the caller streams the file again for those only (this never
//! happens for `qemu-img convert` output, whose tables precede their data).

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;

use super::header::{Compression, Header};
use super::inflate::CompressedCluster;
use super::map::{parse_l1, parse_l2, push_range, Extent, GuestRange};
use super::Qcow2Error;

/// Most bytes held at once for tables and compressed clusters, whatever the
/// image says (the largest L1 table the header allows is 32 MiB).
pub const MAX_BUFFERED: u64 = 64 << 20;
/// Most spans waiting for their bytes at once (~100 bytes each): 64 GiB of
/// 64 KiB compressed clusters whose tables were read ahead.
pub const MAX_PENDING: usize = 1 << 20;

/// Where decoded guest data goes.
pub trait GuestSink {
    type Error: From<Qcow2Error>;
    fn write(&mut self, guest: u64, data: Bytes) -> Result<(), Self::Error>;

    /// A compressed cluster, complete. Inflated here by default; a sink may
    /// inflate it elsewhere (on other cores), as long as errors reach it.
    fn write_compressed(&mut self, cluster: CompressedCluster) -> Result<(), Self::Error> {
        let data = cluster.inflate()?;
        self.write(cluster.guest, Bytes::from(data))
    }
}

#[derive(Debug, Clone)]
enum Want {
    Extent(Extent),
    L1,
    L2 { l1_index: u64 },
}

impl Want {
    fn what(&self) -> String {
        match self {
            Want::Extent(Extent::Data { guest, .. }) => format!("data for guest offset {guest:#x}"),
            Want::Extent(Extent::Compressed { guest, .. }) => {
                format!("compressed data for guest offset {guest:#x}")
            }
            Want::L1 => "the L1 table".into(),
            Want::L2 { l1_index } => format!("L2 table {l1_index}"),
        }
    }
}

/// A span that has started arriving.
struct Active {
    start: u64,
    len: u64,
    want: Want,
    /// Bytes so far (tables and compressed clusters only).
    buf: Vec<u8>,
}

/// What must be streamed again because it passed before we knew about it.
#[derive(Debug, Default, Clone)]
pub struct Missed {
    extents: Vec<Extent>,
    l2_tables: Vec<(u64, u64)>,
}

impl Missed {
    pub fn is_empty(&self) -> bool {
        self.extents.is_empty() && self.l2_tables.is_empty()
    }
}

pub struct StreamDecoder {
    header: Option<Header>,
    head: Vec<u8>,
    file_len: Option<u64>,
    pos: u64,
    pending: BTreeMap<u64, Vec<(u64, Want)>>,
    active: Vec<Active>,
    zeros: Vec<GuestRange>,
    missed: Missed,
    guest_bytes: u64,
    /// Spans in `pending`, and bytes reserved by active buffered spans.
    pending_count: usize,
    buffered: u64,
    /// Host offsets of every L2 table seen: each may serve one L1 entry.
    l2_seen: HashSet<u64>,
}

impl StreamDecoder {
    /// Learn everything from the stream itself (no Range access).
    pub fn sequential(file_len: Option<u64>) -> Self {
        Self {
            header: None,
            head: Vec::new(),
            file_len,
            pos: 0,
            pending: BTreeMap::new(),
            active: Vec::new(),
            zeros: Vec::new(),
            missed: Missed::default(),
            guest_bytes: 0,
            pending_count: 0,
            buffered: 0,
            l2_seen: HashSet::new(),
        }
    }

    /// Tables read ahead (by Range requests): start from the L1 table, then
    /// hand in each L2 table with [`provide_l2`](Self::provide_l2).
    pub fn with_l1(header: Header, file_len: Option<u64>, l1: &[u8]) -> Result<Self, Qcow2Error> {
        let mut dec = Self::sequential(file_len);
        let l2_offsets = parse_l1(l1, &header, file_len)?;
        dec.header = Some(header);
        dec.plan_l2s(&l2_offsets)?;
        Ok(dec)
    }

    /// Host offsets of the L2 tables still to be provided, in file order.
    pub fn wanted_l2s(&self) -> Vec<u64> {
        self.pending
            .iter()
            .filter(|(_, w)| w.iter().any(|(_, w)| matches!(w, Want::L2 { .. })))
            .map(|(host, _)| *host)
            .collect()
    }

    /// Hand in the L2 table stored at `host` (read ahead by Range).
    pub fn provide_l2(&mut self, host: u64, table: &[u8]) -> Result<(), Qcow2Error> {
        let wants = self
            .pending
            .remove(&host)
            .ok_or_else(|| Qcow2Error::Corrupt(format!("no L2 table expected at {host:#x}")))?;
        self.pending_count -= wants.len();
        for (len, want) in wants {
            match want {
                Want::L2 { l1_index } => self.add_l2(table, l1_index)?,
                other => {
                    self.pending_count += 1;
                    self.pending.entry(host).or_default().push((len, other));
                }
            }
        }
        Ok(())
    }

    /// A later pass that only wants what an earlier pass missed.
    pub fn for_missed(
        header: Header,
        file_len: Option<u64>,
        missed: Missed,
        zeros: Vec<GuestRange>,
    ) -> Result<Self, Qcow2Error> {
        let mut dec = Self::sequential(file_len);
        dec.header = Some(header);
        dec.zeros = zeros;
        for e in missed.extents {
            dec.want(e.host(), e.host_len(), Want::Extent(e))?;
        }
        for (host, l1_index) in missed.l2_tables {
            let len = dec.cluster();
            dec.want(host, len, Want::L2 { l1_index })?;
        }
        Ok(dec)
    }

    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Guest bytes of data written so far.
    pub fn guest_bytes(&self) -> u64 {
        self.guest_bytes
    }

    fn cluster(&self) -> u64 {
        self.header
            .as_ref()
            .map(Header::cluster_size)
            .unwrap_or(512)
    }

    /// Ask for the span `[start, start + len)`. Shared tables and clusters
    /// are refused: qemu never writes them, and they are how a tiny file
    /// makes the decoder hold gigabytes.
    fn want(&mut self, start: u64, len: u64, want: Want) -> Result<(), Qcow2Error> {
        if let Want::L2 { .. } = want {
            if !self.l2_seen.insert(start) {
                return Err(Qcow2Error::Corrupt(format!(
                    "the L2 table at {start:#x} is referenced by more than one L1 entry"
                )));
            }
        }
        let missed = self.missed.extents.len() + self.missed.l2_tables.len();
        if self.pending_count + missed >= MAX_PENDING {
            return Err(Qcow2Error::Corrupt(format!(
                "the tables describe more than {MAX_PENDING} separate spans at once"
            )));
        }
        if start < self.pos {
            match want {
                Want::Extent(e) => self.missed.extents.push(e),
                Want::L2 { l1_index } => self.missed.l2_tables.push((start, l1_index)),
                Want::L1 => {}
            }
            return Ok(());
        }
        let wants = self.pending.entry(start).or_default();
        if let Want::Extent(e) = want {
            if wants.iter().any(|(_, w)| matches!(w, Want::Extent(_))) {
                return Err(Qcow2Error::Corrupt(format!(
                    "host offset {start:#x} holds data for more than one guest offset (guest {:#x})",
                    e.guest()
                )));
            }
        }
        wants.push((len, want));
        self.pending_count += 1;
        Ok(())
    }

    fn plan_l2s(&mut self, l2_offsets: &[Option<u64>]) -> Result<(), Qcow2Error> {
        let header = self.header.clone().ok_or(Qcow2Error::Truncated("header"))?;
        let coverage = header.l2_coverage();
        for (i, off) in l2_offsets.iter().enumerate() {
            let start = i as u64 * coverage;
            if start >= header.virtual_size {
                break;
            }
            match off {
                Some(host) => self.want(
                    *host,
                    header.cluster_size(),
                    Want::L2 { l1_index: i as u64 },
                )?,
                None => push_range(
                    &mut self.zeros,
                    start,
                    coverage.min(header.virtual_size - start),
                ),
            }
        }
        Ok(())
    }

    fn add_l2(&mut self, table: &[u8], l1_index: u64) -> Result<(), Qcow2Error> {
        let header = self
            .header
            .as_ref()
            .ok_or(Qcow2Error::Truncated("header"))?;
        let map = parse_l2(table, header, l1_index, self.file_len)?;
        for z in map.zeros {
            push_range(&mut self.zeros, z.start, z.len);
        }
        for e in map.extents {
            self.want(e.host(), e.host_len(), Want::Extent(e))?;
        }
        Ok(())
    }

    /// Feed the next bytes of the file.
    pub fn feed<S: GuestSink>(&mut self, chunk: Bytes, sink: &mut S) -> Result<(), S::Error> {
        if self.header.is_none() {
            self.head.extend_from_slice(&chunk);
            let wanted = Header::wanted_prefix(&self.head).ok_or(Qcow2Error::NotQcow2);
            let wanted = match (wanted, self.file_len) {
                (Err(_), _) if self.head.len() < 24 => return Ok(()),
                (Err(e), _) => return Err(e.into()),
                (Ok(w), Some(fl)) => w.min(fl),
                (Ok(w), None) => w,
            };
            if (self.head.len() as u64) < wanted {
                return Ok(());
            }
            let header = Header::parse(&self.head)?;
            let l1_len = header.l1_bytes();
            let l1_off = header.l1_table_offset;
            self.header = Some(header);
            if l1_len > 0 {
                self.want(l1_off, l1_len, Want::L1)?;
            }
            let head = Bytes::from(std::mem::take(&mut self.head));
            return self.process(head, sink);
        }
        self.process(chunk, sink)
    }

    fn process<S: GuestSink>(&mut self, chunk: Bytes, sink: &mut S) -> Result<(), S::Error> {
        let base = self.pos;
        let end = base + chunk.len() as u64;
        loop {
            // Spans that begin in this chunk become active (in file order).
            while let Some(entry) = self.pending.first_entry() {
                if *entry.key() >= end {
                    break;
                }
                let (span_start, wants) = entry.remove_entry();
                self.pending_count -= wants.len();
                for (len, want) in wants {
                    // Buffered spans reserve their whole length up front.
                    if !matches!(want, Want::Extent(Extent::Data { .. })) {
                        self.buffered += len;
                        if self.buffered > MAX_BUFFERED {
                            return Err(Qcow2Error::Corrupt(format!(
                                "tables and compressed clusters would need more than {} MiB buffered at once",
                                MAX_BUFFERED >> 20
                            ))
                            .into());
                        }
                    }
                    // Buffered spans are within the budget: allocate them once.
                    let buf = match want {
                        Want::Extent(Extent::Data { .. }) => Vec::new(),
                        _ => Vec::with_capacity(len as usize),
                    };
                    self.active.push(Active {
                        start: span_start,
                        len,
                        want,
                        buf,
                    });
                }
            }
            // A table that completes inside the chunk may describe data later
            // in the same chunk: stop there, parse it, then go on.
            let cut = self
                .active
                .iter()
                .filter(|a| matches!(a.want, Want::L1 | Want::L2 { .. }))
                .map(|a| a.start + a.len)
                .filter(|e| *e <= end)
                .min()
                .unwrap_or(end);
            let from_pos = self.pos;
            let mut finished = Vec::new();
            for (i, a) in self.active.iter_mut().enumerate() {
                let from = a.start.max(from_pos);
                let to = (a.start + a.len).min(cut);
                if from < to {
                    let piece = chunk.slice((from - base) as usize..(to - base) as usize);
                    match a.want {
                        Want::Extent(Extent::Data { host, guest, .. }) => {
                            self.guest_bytes += piece.len() as u64;
                            sink.write(guest + (from - host), piece)?;
                        }
                        _ => a.buf.extend_from_slice(&piece),
                    }
                }
                if a.start + a.len <= cut {
                    finished.push(i);
                }
            }
            self.pos = cut;
            for i in finished.into_iter().rev() {
                let done = self.active.swap_remove(i);
                self.complete(done, sink)?;
            }
            if cut >= end {
                return Ok(());
            }
        }
    }

    fn complete<S: GuestSink>(&mut self, done: Active, sink: &mut S) -> Result<(), S::Error> {
        if !matches!(done.want, Want::Extent(Extent::Data { .. })) {
            self.buffered -= done.len;
        }
        match done.want {
            Want::Extent(Extent::Data { .. }) => {}
            Want::Extent(Extent::Compressed { guest, out_len, .. }) => {
                let compression = self
                    .header
                    .as_ref()
                    .map(|h| h.compression)
                    .unwrap_or(Compression::Zlib);
                self.guest_bytes += out_len;
                sink.write_compressed(CompressedCluster {
                    guest,
                    compression,
                    input: done.buf,
                    out_len: out_len as usize,
                })?;
            }
            Want::L1 => {
                let header = self.header.clone().ok_or(Qcow2Error::Truncated("header"))?;
                let offsets = parse_l1(&done.buf, &header, self.file_len)?;
                self.plan_l2s(&offsets)?;
            }
            Want::L2 { l1_index } => self.add_l2(&done.buf, l1_index)?,
        }
        Ok(())
    }

    /// The stream ended: everything wanted must have arrived. Returns the
    /// guest ranges that read as zero and what a further pass must fetch.
    pub fn finish(mut self) -> Result<(Vec<GuestRange>, Missed), Qcow2Error> {
        if self.header.is_none() {
            return Err(
                if self.head.len() >= 4 && self.head[..4] != super::header::MAGIC {
                    Qcow2Error::NotQcow2
                } else {
                    Qcow2Error::Truncated("header")
                },
            );
        }
        let first_missing = self
            .active
            .iter()
            .map(|a| (a.start, a.want.what()))
            .chain(
                self.pending
                    .iter()
                    .flat_map(|(s, w)| w.iter().map(move |(_, w)| (*s, w.what()))),
            )
            .min_by_key(|(s, _)| *s);
        if let Some((expected, what)) = first_missing {
            return Err(Qcow2Error::EndedEarly {
                at: self.pos,
                what,
                expected,
            });
        }
        self.zeros.sort_by_key(|z| z.start);
        let mut merged = Vec::with_capacity(self.zeros.len());
        for z in &self.zeros {
            push_range(&mut merged, z.start, z.len);
        }
        Ok((merged, self.missed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Discard;
    impl GuestSink for Discard {
        type Error = Qcow2Error;
        fn write(&mut self, _: u64, _: Bytes) -> Result<(), Qcow2Error> {
            Ok(())
        }
    }

    /// qcow2 v2, 512-byte clusters: L1 at cluster 1, `l2` tables (each a
    /// list of L2 entries) right after it, then `data` clusters.
    fn image(vsize: u64, l1: impl Fn(u64, &[u64]) -> u64, l2: &[Vec<u64>]) -> Vec<u8> {
        let l1_entries = vsize.div_ceil(64 * 512);
        let l2_base = (512 + l1_entries * 8).div_ceil(512) * 512;
        let l2_offs: Vec<u64> = (0..l2.len() as u64).map(|i| l2_base + i * 512).collect();
        let mut f = vec![0u8; (l2_base + l2.len() as u64 * 512 + 64 * 512) as usize];
        f[..4].copy_from_slice(b"QFI\xfb");
        f[4..8].copy_from_slice(&2u32.to_be_bytes());
        f[20..24].copy_from_slice(&9u32.to_be_bytes());
        f[24..32].copy_from_slice(&vsize.to_be_bytes());
        f[36..40].copy_from_slice(&(l1_entries as u32).to_be_bytes());
        f[40..48].copy_from_slice(&512u64.to_be_bytes());
        for i in 0..l1_entries {
            let at = (512 + i * 8) as usize;
            f[at..at + 8].copy_from_slice(&l1(i, &l2_offs).to_be_bytes());
        }
        for (t, entries) in l2.iter().enumerate() {
            for (j, e) in entries.iter().enumerate() {
                let at = (l2_offs[t] + j as u64 * 8) as usize;
                f[at..at + 8].copy_from_slice(&e.to_be_bytes());
            }
        }
        f
    }

    fn decode(file: &[u8]) -> Result<(), Qcow2Error> {
        let mut dec = StreamDecoder::sequential(None);
        for c in file.chunks(4096) {
            dec.feed(Bytes::copy_from_slice(c), &mut Discard)?;
        }
        dec.finish().map(|_| ())
    }

    #[test]
    fn one_l2_table_for_every_l1_entry_is_refused() {
        let data = 20 * 512;
        let file = image(1 << 30, |_, l2| l2[0], &[vec![data]]);
        let err = decode(&file).unwrap_err();
        assert!(
            err.to_string()
                .contains("referenced by more than one L1 entry"),
            "{err}"
        );
    }

    #[test]
    fn one_data_cluster_for_two_guest_clusters_is_refused() {
        let data = 64 * 512;
        let file = image(128 * 512, |i, l2| l2[i as usize], &[vec![data], vec![data]]);
        let err = decode(&file).unwrap_err();
        assert!(
            err.to_string().contains("more than one guest offset"),
            "{err}"
        );
    }

    #[test]
    fn distinct_tables_decode() {
        let data = 64 * 512;
        let file = image(
            128 * 512,
            |i, l2| l2[i as usize],
            &[vec![data], vec![data + 512]],
        );
        decode(&file).unwrap();
    }
}
