//! Decoded data on its way to the writer thread: zero runs merged, output
//! past the target refused, compressed qcow2 clusters inflated on every core.

use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::progress::{Progress, StageTimes};
use super::qcow2::{CompressedCluster, GuestSink, Inflater};
use super::sink::WriteOp;
use super::ImageError;

/// Zero detection granularity for raw data.
const ZERO_BLOCK: u64 = 64 << 10;

/// All zeros? Folds each 4 KiB with OR, which the compiler vectorises (a
/// short-circuiting `all` goes byte by byte), and stops at the first
/// 4 KiB that is not.
fn is_zero(data: &[u8]) -> bool {
    data.chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, b| acc | b) == 0)
}

/// Forwards decoded data to the writer, merging runs of zero blocks.
pub(super) struct OpSender {
    tx: SyncSender<WriteOp>,
    zero: Option<(u64, u64)>,
    /// The target's size: decoded output past it fails at once, before a
    /// run of zeros (a decompression bomb) is ever handed to the writer.
    capacity: Option<u64>,
    target: PathBuf,
    /// Compressed qcow2 clusters, inflated on every core (started on the first).
    inflater: Option<Inflater>,
    progress: Arc<Progress>,
}

impl OpSender {
    pub(super) fn new(
        tx: SyncSender<WriteOp>,
        capacity: Option<u64>,
        target: PathBuf,
        progress: Arc<Progress>,
    ) -> Self {
        Self {
            tx,
            zero: None,
            capacity,
            target,
            inflater: None,
            progress,
        }
    }

    pub(super) fn check_end(&self, offset: u64, len: u64) -> Result<(), ImageError> {
        let end = offset.saturating_add(len);
        match self.capacity {
            Some(cap) if end > cap => Err(ImageError::TooLarge {
                needed: end,
                available: cap,
                target: self.target.clone(),
            }),
            _ => Ok(()),
        }
    }

    fn send(&mut self, op: WriteOp) -> Result<(), ImageError> {
        let t = Instant::now();
        let sent = self
            .tx
            .send(op)
            .map_err(|_| ImageError::Internal("writer stopped".into()));
        StageTimes::add(&self.progress.stages.wait_writer, t);
        sent
    }

    /// Hand on guest data that is ready, in order; with `wait`, all of it.
    fn pump(&mut self, wait: bool) -> Result<(), ImageError> {
        while let Some(next) = self.inflater.as_mut().and_then(|i| i.next(wait)) {
            let (guest, data) = next?;
            self.send_data(guest, data)?;
        }
        Ok(())
    }

    fn send_data(&mut self, offset: u64, data: Bytes) -> Result<(), ImageError> {
        self.flush_zero()?;
        self.send(WriteOp::Data { offset, data })
    }

    /// Everything decoded is on its way to the writer.
    pub(super) fn finish(&mut self) -> Result<(), ImageError> {
        self.pump(true)?;
        self.flush_zero()
    }

    pub(super) fn zero(&mut self, offset: u64, len: u64) -> Result<(), ImageError> {
        self.check_end(offset, len)?;
        self.pump(true)?;
        match &mut self.zero {
            Some((s, l)) if *s + *l == offset => *l += len,
            _ => {
                self.flush_zero()?;
                self.zero = Some((offset, len));
            }
        }
        Ok(())
    }

    fn flush_zero(&mut self) -> Result<(), ImageError> {
        if let Some((offset, len)) = self.zero.take() {
            self.send(WriteOp::Zero { offset, len })?;
        }
        Ok(())
    }

    /// Raw data: aligned all-zero blocks become zero ranges.
    pub(super) fn raw(&mut self, offset: u64, data: Bytes) -> Result<(), ImageError> {
        self.check_end(offset, data.len() as u64)?;
        let mut pos = 0usize;
        while pos < data.len() {
            let abs = offset + pos as u64;
            let block_end = ((abs / ZERO_BLOCK) + 1) * ZERO_BLOCK;
            let n = ((block_end - abs) as usize).min(data.len() - pos);
            let piece = data.slice(pos..pos + n);
            if n as u64 == ZERO_BLOCK && is_zero(&piece) {
                self.zero(abs, n as u64)?;
            } else {
                self.flush_zero()?;
                self.send(WriteOp::Data {
                    offset: abs,
                    data: piece,
                })?;
            }
            pos += n;
        }
        Ok(())
    }
}

impl GuestSink for OpSender {
    type Error = ImageError;
    fn write(&mut self, guest: u64, data: Bytes) -> Result<(), ImageError> {
        self.check_end(guest, data.len() as u64)?;
        match &mut self.inflater {
            // Behind clusters still inflating: keep the image's order.
            Some(i) if !i.is_empty() => {
                i.pass(guest, data);
                self.pump(false)
            }
            _ => self.send_data(guest, data),
        }
    }

    fn write_compressed(&mut self, cluster: CompressedCluster) -> Result<(), ImageError> {
        self.check_end(cluster.guest, cluster.out_len as u64)?;
        if self.inflater.is_none() {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            self.inflater = Some(Inflater::new(cores).map_err(|e| {
                ImageError::Internal(format!("starting the inflater threads: {e}"))
            })?);
        }
        if let Some(i) = &mut self.inflater {
            i.inflate(cluster)?;
        }
        self.pump(false)
    }
}
