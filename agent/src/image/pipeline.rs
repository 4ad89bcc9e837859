//! Wires source, decoder and writer together for one image write.

use std::io::Read;
use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::chunk::ChunkPool;
use super::decode::{self, Decoded};
use super::decompress;
use super::format::{self, Format, FormatPolicy};
use super::ops::OpSender;
use super::progress::{Progress, StageTimes};
use super::qcow2::{Header, StreamDecoder};
use super::sink::{Target, WriteOp, Writer};
use super::source::{Probe, Source, SourceConfig, CHUNK_BYTES};
use super::verify::{Expected, HashThread};
use super::ImageError;
use crate::disk::Window;

/// Chunks in flight between download and decode, and ops between decode and write.
const CHUNK_QUEUE: usize = 4;
const OP_QUEUE: usize = 8;
/// Largest single Range request for qcow2 tables.
const TABLE_READ_MAX: u64 = 16 << 20;
/// A qcow2 whose tables trail their data needs another pass; more than
/// this many means something is badly wrong.
const MAX_PASSES: u32 = 3;

#[derive(Debug, Clone)]
pub struct WriteRequest {
    /// URL or path.
    pub source: String,
    pub target: PathBuf,
    pub expected: Option<Expected>,
    /// `image_info.disk_format`, checked against the content.
    pub declared_format: Option<String>,
    pub source_cfg: SourceConfig,
    /// Write into this range of the target only (a partition by offset).
    pub window: Option<Window>,
    /// Ironic's `permitted_image_formats` / `disable_deep_image_inspection`.
    pub formats: FormatPolicy,
}

#[derive(Debug, Clone)]
pub struct WriteReport {
    /// The container as downloaded (e.g. zstd) and what it held (e.g. qcow2).
    pub format: Format,
    pub inner: Format,
    pub downloaded: u64,
    /// Bytes of disk the image describes (virtual size for qcow2).
    pub image_size: u64,
    pub digest: Option<String>,
    pub passes: u32,
}

/// Pulls downloaded chunks in order, handing each to the hash thread as it passes.
struct Chunks {
    rx: mpsc::Receiver<Bytes>,
    hasher: Option<HashThread>,
    current: Bytes,
    progress: Arc<Progress>,
}

impl Chunks {
    fn next_chunk(&mut self) -> Option<Bytes> {
        let stages = &self.progress.stages;
        let t = Instant::now();
        let chunk = self.rx.blocking_recv()?;
        StageTimes::add(&stages.wait_download, t);
        if let Some(h) = &mut self.hasher {
            let t = Instant::now();
            h.update(chunk.clone());
            StageTimes::add(&stages.wait_hash, t);
        }
        Some(chunk)
    }
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.next_chunk() {
                Some(c) => self.current = c,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// Read up to `CHUNK_BYTES` from a decompressor, into a pooled chunk.
fn read_block(r: &mut dyn Read, pool: &ChunkPool) -> Result<Option<Bytes>, ImageError> {
    let mut buf = pool.take_filled();
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImageError::Decompress(e.to_string())),
        }
    }
    buf.truncate(filled);
    Ok((filled > 0).then(|| pool.freeze(buf)))
}

/// The declared format against the content, then Ironic's format policy:
/// all from the image's first bytes, before anything is written.
fn check_format(req: &WriteRequest, detected: Format, head: &[u8]) -> Result<(), ImageError> {
    let declared = req.declared_format.as_deref();
    match check_declared(declared, detected) {
        Err(e) if req.formats.inspection_disabled => {
            warn!(error = %e, "disable_deep_image_inspection is set: writing the image as its content says")
        }
        other => other?,
    }
    req.formats.check(declared, detected, head)
}

fn check_declared(declared: Option<&str>, detected: Format) -> Result<(), ImageError> {
    let Some(declared) = declared.map(str::to_ascii_lowercase) else {
        return Ok(());
    };
    let mismatch = match detected {
        Format::Qcow2 => declared != "qcow2",
        _ => declared == "qcow2",
    };
    if mismatch {
        return Err(ImageError::DeclaredMismatch {
            declared,
            detected: detected.to_string(),
        });
    }
    Ok(())
}

/// Write one image. Blocking: call from a blocking thread with a handle
/// to the runtime that runs the download.
pub fn write_image(
    rt: &Handle,
    req: &WriteRequest,
    progress: Arc<Progress>,
) -> Result<WriteReport, ImageError> {
    let source = Source::parse(&req.source, &req.source_cfg)?;
    let probe = rt.block_on(source.probe())?;
    progress
        .total
        .store(probe.len.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    let outer = format::sniff(&probe.head)?;
    if !outer.is_compression() {
        check_format(req, outer, &probe.head)?;
    }
    info!(source = %source.describe(), format = %outer, size = ?probe.len, ranges = probe.ranges, "image probed");

    let target = Target::open_window(&req.target, req.window)?;
    // Tables first when we can fetch them directly (qcow2 straight from the source).
    let mut qcow = None;
    match outer {
        Format::Qcow2 => {
            let header = read_header(rt, &source, &probe)?;
            target.check_fits(header.virtual_size)?;
            progress
                .target_total
                .store(header.virtual_size, std::sync::atomic::Ordering::Relaxed);
            qcow = Some(if probe.ranges {
                read_tables(rt, &source, header, probe.len)?
            } else {
                StreamDecoder::sequential(probe.len)
            });
        }
        Format::Raw => {
            if let Some(len) = probe.len {
                target.check_fits(len)?;
                progress
                    .target_total
                    .store(len, std::sync::atomic::Ordering::Relaxed);
            }
        }
        _ => {}
    }

    let capacity = target.capacity();
    let target_path = target.path().to_path_buf();
    let (op_tx, op_rx) = sync_channel::<WriteOp>(OP_QUEUE);
    let mut w = Writer::new(target, progress.clone())?;
    let writer = std::thread::Builder::new()
        .name("image-writer".into())
        .spawn(move || {
            for op in op_rx {
                if let Err(e) = w.apply(op) {
                    return (w, Some(e));
                }
            }
            (w, None)
        })
        .map_err(|e| ImageError::Internal(format!("starting the writer: {e}")))?;
    let mut ops = OpSender::new(op_tx, capacity, target_path, progress.clone());

    let decoded = decode_all(rt, &source, req, &progress, outer, qcow, &mut ops);
    let flushed = decoded.and_then(|report| ops.finish().map(|_| report));
    drop(ops);
    let (writer, write_error) = writer
        .join()
        .map_err(|_| ImageError::Internal("writer thread panicked".into()))?;
    // A writer failure is the root cause of a decode-side "writer stopped".
    let outcome = match (flushed, write_error) {
        (_, Some(e)) => Err(e),
        (Err(e), None) => Err(e),
        (Ok(report), None) => Ok(report),
    };
    match outcome {
        Ok(report) => {
            let final_len = Some(report.image_size);
            writer.finish(final_len)?;
            info!(format = %report.format, inner = %report.inner, bytes = report.downloaded, size = report.image_size,
                  passes = report.passes, "image written; {}", progress.summary());
            info!("image write stages: {}", progress.stages.summary());
            Ok(report)
        }
        Err(e) if e.refused_before_write() => {
            warn!(error = %e, "image refused; nothing was written");
            drop(writer.abandon());
            Err(e)
        }
        Err(e) => {
            warn!(error = %e, "image write failed; invalidating the target");
            writer.abandon().invalidate();
            Err(e)
        }
    }
}

fn read_header(rt: &Handle, source: &Source, probe: &Probe) -> Result<Header, ImageError> {
    let wanted = Header::wanted_prefix(&probe.head).ok_or(super::qcow2::Qcow2Error::NotQcow2)?;
    let wanted = probe.len.map_or(wanted, |l| wanted.min(l));
    if probe.head.len() as u64 >= wanted || !probe.ranges {
        return Ok(Header::parse(&probe.head)?);
    }
    let head = rt.block_on(source.read_range(0, wanted))?;
    Ok(Header::parse(&head)?)
}

/// Fetch the L1 and all L2 tables by Range, coalescing neighbours.
fn read_tables(
    rt: &Handle,
    source: &Source,
    header: Header,
    len: Option<u64>,
) -> Result<StreamDecoder, ImageError> {
    let cluster = header.cluster_size();
    let l1 = if header.l1_bytes() > 0 {
        if let Some(l) = len {
            if header.l1_table_offset + header.l1_bytes() > l {
                return Err(super::qcow2::Qcow2Error::Corrupt(
                    "the L1 table lies outside the file".into(),
                )
                .into());
            }
        }
        rt.block_on(source.read_range(header.l1_table_offset, header.l1_bytes()))?
    } else {
        Bytes::new()
    };
    let mut dec = StreamDecoder::with_l1(header, len, &l1)?;
    let wanted = dec.wanted_l2s();
    let mut i = 0;
    while i < wanted.len() {
        let start = wanted[i];
        let mut j = i + 1;
        while j < wanted.len()
            && wanted[j] == wanted[j - 1] + cluster
            && (wanted[j] + cluster - start) <= TABLE_READ_MAX
        {
            j += 1;
        }
        let span = wanted[j - 1] + cluster - start;
        let bytes = rt.block_on(source.read_range(start, span))?;
        for host in &wanted[i..j] {
            let off = (host - start) as usize;
            dec.provide_l2(*host, &bytes[off..off + cluster as usize])?;
        }
        i = j;
    }
    Ok(dec)
}

/// Start streaming the source into a fresh channel.
fn start_stream(
    rt: &Handle,
    source: &Source,
    progress: &Arc<Progress>,
    pool: &ChunkPool,
) -> (
    mpsc::Receiver<Bytes>,
    tokio::task::JoinHandle<Result<u64, ImageError>>,
) {
    let (tx, rx) = mpsc::channel(CHUNK_QUEUE);
    let source = source.clone();
    let progress = progress.clone();
    let pool = pool.clone();
    let task = rt.spawn(async move { source.stream(tx, &progress, &pool).await });
    (rx, task)
}

/// Join the download; its failure explains a short stream better than the decoder can.
fn join_stream(
    rt: &Handle,
    task: tokio::task::JoinHandle<Result<u64, ImageError>>,
) -> Result<u64, ImageError> {
    rt.block_on(task)
        .map_err(|e| ImageError::Internal(format!("download task: {e}")))?
}

fn decode_all(
    rt: &Handle,
    source: &Source,
    req: &WriteRequest,
    progress: &Arc<Progress>,
    outer: Format,
    qcow: Option<StreamDecoder>,
    ops: &mut OpSender,
) -> Result<WriteReport, ImageError> {
    let hasher = match &req.expected {
        Some(e) => Some(
            HashThread::start(e.algo)
                .map_err(|e| ImageError::Internal(format!("starting the hash thread: {e}")))?,
        ),
        None => None,
    };
    let pool = ChunkPool::new(CHUNK_BYTES);
    let (rx, task) = start_stream(rt, source, progress, &pool);
    let mut chunks = Chunks {
        rx,
        hasher,
        current: Bytes::new(),
        progress: progress.clone(),
    };
    let decoded = decode_stream(&mut chunks, req, outer, qcow, ops, &pool);
    let digest = chunks
        .hasher
        .take()
        .and_then(HashThread::finish)
        .map(|(hex, busy)| {
            progress
                .stages
                .hash
                .fetch_add(busy.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
            hex
        });
    drop(chunks);
    // A download failure explains a short stream better than the decoder
    // can; "the consumer stopped" only echoes a decoder failure.
    let (downloaded, decoded) = match (join_stream(rt, task), decoded) {
        (Err(ImageError::Internal(_)) | Ok(_), Err(e)) => return Err(e),
        (Err(e), _) => return Err(e),
        (Ok(n), Ok(d)) => (n, d),
    };
    let Decoded {
        format: inner,
        size: image_size,
        tail,
    } = decoded;
    if let Some(expected) = &req.expected {
        let Some(actual) = &digest else {
            return Err(ImageError::Internal(
                "the hash thread stopped without a digest".into(),
            ));
        };
        if &expected.hex != actual {
            return Err(ImageError::Checksum {
                algo: expected.algo,
                expected: expected.hex.clone(),
                actual: actual.clone(),
            });
        }
        info!(algo = %expected.algo, digest = %actual, "checksum verified");
    }
    let mut passes = 1;
    if let Some((header, zeros, mut missed)) = tail {
        let mut zeros = zeros;
        while !missed.is_empty() {
            passes += 1;
            if passes > MAX_PASSES {
                return Err(super::qcow2::Qcow2Error::Corrupt(
                    "tables keep pointing backwards; giving up".into(),
                )
                .into());
            }
            warn!(
                pass = passes,
                "qcow2 tables came after their data; streaming again for the missed clusters"
            );
            let (rx, task) = start_stream(rt, source, progress, &pool);
            let mut chunks = Chunks {
                rx,
                hasher: None,
                current: Bytes::new(),
                progress: progress.clone(),
            };
            let mut dec =
                StreamDecoder::for_missed(header.clone(), Some(downloaded), missed, zeros)?;
            let fed = (|| {
                while let Some(c) = chunks.next_chunk() {
                    dec.feed(c, ops)?;
                }
                Ok::<_, ImageError>(())
            })();
            drop(chunks);
            join_stream(rt, task)?;
            fed?;
            (zeros, missed) = dec.finish()?;
        }
        for z in zeros {
            ops.zero(z.start, z.len)?;
        }
    }
    Ok(WriteReport {
        format: outer,
        inner,
        downloaded,
        image_size,
        digest,
        passes,
    })
}

/// Where a decoder's blocks come from: the downloaded chunks as they are,
/// or a decompressor over them, read into pooled blocks.
enum Blocks<'a> {
    Plain(&'a mut Chunks),
    Decompressed {
        reader: Box<dyn Read + 'a>,
        pool: &'a ChunkPool,
    },
}

impl Blocks<'_> {
    fn next(&mut self) -> Result<Option<Bytes>, ImageError> {
        match self {
            Self::Plain(chunks) => Ok(chunks.next_chunk()),
            Self::Decompressed { reader, pool } => read_block(&mut **reader, pool),
        }
    }
}

/// Decode everything one stream brings. For qcow2, also returns what
/// must still be zeroed or fetched again.
fn decode_stream(
    chunks: &mut Chunks,
    req: &WriteRequest,
    outer: Format,
    qcow: Option<StreamDecoder>,
    ops: &mut OpSender,
    pool: &ChunkPool,
) -> Result<Decoded, ImageError> {
    let (mut blocks, inner, first) = if outer.is_compression() {
        let mut reader = decompress::open(outer, chunks)?;
        // The inner format shows only once decompressed: check it on the
        // first block, before anything is written.
        let Some(first) = read_block(&mut *reader, pool)? else {
            return Err(ImageError::Decompress(
                "the compressed image is empty".into(),
            ));
        };
        let inner = format::sniff(&first)?;
        if inner.is_compression() {
            return Err(ImageError::Decompress(format!(
                "{outer} inside {inner}: nested compression is not supported"
            )));
        }
        check_format(req, inner, &first)?;
        (Blocks::Decompressed { reader, pool }, inner, Some(first))
    } else {
        (Blocks::Plain(chunks), outer, None)
    };
    let mut dec = decode::for_format(inner, qcow)?;
    let mut block = match first {
        Some(b) => Some(b),
        None => blocks.next()?,
    };
    while let Some(b) = block {
        dec.feed(ops, b)?;
        block = blocks.next()?;
    }
    dec.finish()
}
