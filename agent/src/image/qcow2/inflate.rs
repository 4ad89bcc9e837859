//! Compressed clusters: each one is an independent deflate or zstd stream,
//! so they can be inflated on every core. [`Inflater`] runs them on a small
//! pool and gives results back in the order they were queued, so the writer
//! still sees the image's contiguous runs.

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;

use super::header::Compression;
use super::Qcow2Error;

/// One compressed cluster as stored, and where its data goes.
#[derive(Debug)]
pub struct CompressedCluster {
    pub guest: u64,
    pub compression: Compression,
    pub input: Vec<u8>,
    /// The cluster's size: what it must inflate to exactly.
    pub out_len: usize,
}

/// Decompressor state kept from one cluster to the next: a fresh zstd
/// context per cluster is a ~150 KiB allocation from libc's allocator.
#[derive(Default)]
pub struct Decompressors {
    zlib: Option<flate2::Decompress>,
    zstd: Option<zstd::stream::raw::Decoder<'static>>,
}

impl CompressedCluster {
    /// Inflate to exactly `out_len` bytes.
    pub fn inflate(&self) -> Result<Vec<u8>, Qcow2Error> {
        self.inflate_with(&mut Decompressors::default())
    }

    /// Inflate reusing `state` (one per thread).
    pub fn inflate_with(&self, state: &mut Decompressors) -> Result<Vec<u8>, Qcow2Error> {
        let out_len = self.out_len;
        let input = &self.input[..];
        let mut out = vec![0u8; out_len];
        let produced = match self.compression {
            Compression::Zlib => {
                // qcow2 stores raw deflate streams (no zlib header).
                let z = state
                    .zlib
                    .get_or_insert_with(|| flate2::Decompress::new(false));
                z.reset(false);
                let before = z.total_out();
                z.decompress(input, &mut out, flate2::FlushDecompress::Finish)
                    .map_err(|e| {
                        Qcow2Error::Corrupt(format!("compressed cluster does not inflate: {e}"))
                    })?;
                (z.total_out() - before) as usize
            }
            Compression::Zstd => {
                use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
                let dec = match &mut state.zstd {
                    Some(d) => {
                        d.reinit()
                            .map_err(|e| Qcow2Error::Corrupt(format!("zstd: {e}")))?;
                        d
                    }
                    None => state.zstd.insert(
                        Decoder::new().map_err(|e| Qcow2Error::Corrupt(format!("zstd: {e}")))?,
                    ),
                };
                let mut inb = InBuffer::around(input);
                let mut outb = OutBuffer::around(&mut out[..]);
                // Stop when the cluster is full: trailing bytes are sector padding.
                while outb.pos() < out_len && inb.pos() < input.len() {
                    let hint = dec.run(&mut inb, &mut outb).map_err(|e| {
                        Qcow2Error::Corrupt(format!(
                            "compressed cluster does not decompress (zstd): {e}"
                        ))
                    })?;
                    if hint == 0 {
                        break;
                    }
                }
                outb.pos()
            }
        };
        if produced != out_len {
            return Err(Qcow2Error::Corrupt(format!(
                "compressed cluster decompressed to {produced} bytes, expected {out_len}"
            )));
        }
        Ok(out)
    }
}

type Job = (CompressedCluster, SyncSender<Result<Bytes, Qcow2Error>>);

/// An entry of the ordered window.
enum Slot {
    /// Plain data that arrived between compressed clusters: kept in line.
    Ready(u64, Bytes),
    Inflating(u64, Receiver<Result<Bytes, Qcow2Error>>),
}

/// A pool of inflater threads behind an ordered window of bounded length:
/// memory stays at about `window × 2 × cluster size`.
pub struct Inflater {
    jobs: Option<SyncSender<Job>>,
    window: VecDeque<Slot>,
    limit: usize,
    threads: Vec<JoinHandle<()>>,
}

impl Inflater {
    /// `threads` inflaters; up to `2 × threads` clusters queued or waiting.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let (tx, rx) = sync_channel::<Job>(threads * 2);
        let rx = Arc::new(Mutex::new(rx));
        let handles = (0..threads)
            .map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("qcow2-inflate-{i}"))
                    .spawn(move || {
                        let mut state = Decompressors::default();
                        loop {
                            let job = match rx.lock() {
                                Ok(rx) => rx.recv(),
                                Err(_) => return,
                            };
                            let Ok((cluster, reply)) = job else { return };
                            let result = cluster.inflate_with(&mut state).map(Bytes::from);
                            // The window may have been dropped (a failed write).
                            let _ = reply.send(result);
                        }
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            jobs: Some(tx),
            window: VecDeque::new(),
            limit: threads * 2,
            threads: handles,
        })
    }

    /// Nothing queued or waiting.
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// Queue a compressed cluster.
    pub fn inflate(&mut self, cluster: CompressedCluster) -> Result<(), Qcow2Error> {
        let guest = cluster.guest;
        let (reply, result) = sync_channel(1);
        let sent = self.jobs.as_ref().map(|j| j.send((cluster, reply)).is_ok());
        if sent != Some(true) {
            return Err(Qcow2Error::Corrupt(
                "internal: the inflater threads stopped".into(),
            ));
        }
        self.window.push_back(Slot::Inflating(guest, result));
        Ok(())
    }

    /// Queue plain data behind the clusters already queued.
    pub fn pass(&mut self, guest: u64, data: Bytes) {
        self.window.push_back(Slot::Ready(guest, data));
    }

    /// The next result in order: at once if it is ready, waiting for it if
    /// the window is full or `wait` is set; `None` otherwise.
    pub fn next(&mut self, wait: bool) -> Option<Result<(u64, Bytes), Qcow2Error>> {
        use std::sync::mpsc::TryRecvError;
        let must_wait = wait || self.window.len() > self.limit;
        let stopped = || Qcow2Error::Corrupt("internal: an inflater thread stopped".into());
        let inflated = match self.window.front()? {
            Slot::Ready(..) => None,
            Slot::Inflating(guest, rx) => {
                let r = if must_wait {
                    rx.recv().map_err(|_| stopped())
                } else {
                    match rx.try_recv() {
                        Ok(r) => Ok(r),
                        Err(TryRecvError::Empty) => return None,
                        Err(TryRecvError::Disconnected) => Err(stopped()),
                    }
                };
                Some(r.and_then(|r| r.map(|data| (*guest, data))))
            }
        };
        match self.window.pop_front()? {
            Slot::Ready(guest, data) => Some(Ok((guest, data))),
            Slot::Inflating(..) => inflated,
        }
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        drop(self.jobs.take());
        self.window.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn deflated(byte: u8, len: usize) -> Vec<u8> {
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&vec![byte; len]).unwrap();
        z.finish().unwrap()
    }

    fn cluster(guest: u64, byte: u8) -> CompressedCluster {
        CompressedCluster {
            guest,
            compression: Compression::Zlib,
            input: deflated(byte, 4096),
            out_len: 4096,
        }
    }

    #[test]
    fn results_come_back_in_queue_order_with_plain_data_kept_in_line() {
        let mut inf = Inflater::new(3).unwrap();
        let mut out = Vec::new();
        for i in 0..100u64 {
            if i % 7 == 3 {
                inf.pass(i * 4096, Bytes::from(vec![i as u8; 4096]));
            } else {
                inf.inflate(cluster(i * 4096, i as u8)).unwrap();
            }
            while let Some(r) = inf.next(false) {
                out.push(r.unwrap());
            }
            assert!(inf.window.len() <= inf.limit + 1, "the window is bounded");
        }
        while let Some(r) = inf.next(true) {
            out.push(r.unwrap());
        }
        assert_eq!(out.len(), 100);
        for (i, (guest, data)) in out.iter().enumerate() {
            assert_eq!(*guest, i as u64 * 4096);
            assert!(data.iter().all(|b| *b == i as u8), "cluster {i}");
        }
    }

    #[test]
    fn a_bad_cluster_is_reported_in_its_place() {
        let mut inf = Inflater::new(2).unwrap();
        inf.inflate(cluster(0, 1)).unwrap();
        inf.inflate(CompressedCluster {
            guest: 4096,
            compression: Compression::Zlib,
            input: vec![0xff; 100],
            out_len: 4096,
        })
        .unwrap();
        inf.inflate(cluster(8192, 3)).unwrap();
        assert_eq!(inf.next(true).unwrap().unwrap().0, 0);
        let err = inf.next(true).unwrap().unwrap_err();
        assert!(err.to_string().contains("does not inflate"), "{err}");
        let short = CompressedCluster {
            out_len: 8192,
            ..cluster(0, 1)
        };
        assert!(short
            .inflate()
            .unwrap_err()
            .to_string()
            .contains("decompressed to 4096 bytes, expected 8192"));
    }
}
