//! The write side: a block device (O_EXCL, O_DIRECT for aligned writes,
//! BLKZEROOUT for zero ranges, partition re-read at the end) or a regular
//! file (truncated, sparse). Writes arrive as ops; contiguous data is
//! gathered into one aligned buffer so the device sees large writes.

use std::alloc::{self, Layout};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use tracing::{debug, warn};

use super::progress::{Progress, StageTimes};
use super::ImageError;
use crate::disk::ioctl;
use crate::disk::Window;

/// One write buffer: large enough for disks to stream, small enough to bound memory.
const BUFFER_BYTES: usize = 2 << 20;
/// Writes in flight at once (and buffers: one more, being filled).
const IO_THREADS: usize = 4;
/// O_DIRECT alignment used for offsets, lengths and the buffer.
const DIRECT_ALIGN: u64 = 4096;

#[derive(Debug)]
pub enum WriteOp {
    Data { offset: u64, data: Bytes },
    Zero { offset: u64, len: u64 },
}

pub struct Target {
    path: PathBuf,
    file: File,
    direct: Option<File>,
    block: bool,
    /// Capacity of a block device or a window; whole files grow.
    capacity: Option<u64>,
    sector: u64,
    /// Where image offset 0 lands on the target.
    base: u64,
    /// A file created for this write: holes already read as zeros.
    fresh_file: bool,
}

fn io_err(path: &Path, what: &str) -> impl FnOnce(io::Error) -> ImageError {
    let path = path.to_path_buf();
    let what = what.to_string();
    move |source| ImageError::Target { path, what, source }
}

impl Target {
    /// Open for writing. A block device is opened exclusively (fails if it
    /// is mounted or otherwise held); a regular file is created/truncated.
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        Self::open_window(path, None)
    }

    /// Open for writing into `window` only (all of the target without one).
    /// Writes past the window's end fail with `TooLarge`; a windowed file is
    /// neither truncated nor resized.
    pub fn open_window(path: &Path, window: Option<Window>) -> Result<Self, ImageError> {
        let meta = std::fs::metadata(path);
        let block = meta
            .as_ref()
            .map(|m| m.file_type().is_block_device())
            .unwrap_or(false);
        if !block {
            if let Ok(m) = &meta {
                if !m.is_file() {
                    return Err(ImageError::Target {
                        path: path.into(),
                        what: "checking the target".into(),
                        source: io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "neither a block device nor a regular file",
                        ),
                    });
                }
            }
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(window.is_none())
                .open(path)
                .map_err(io_err(path, "opening the target file"))?;
            return Ok(Self {
                path: path.into(),
                file,
                direct: None,
                block: false,
                capacity: window.map(|w| w.len),
                sector: 512,
                base: window.map_or(0, |w| w.offset),
                fresh_file: window.is_none(),
            });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_EXCL)
            .open(path)
            .map_err(io_err(
                path,
                "opening the block device exclusively (is it mounted or in use?)",
            ))?;
        let size = ioctl::device_size(&file).map_err(io_err(path, "reading the device size"))?;
        let sector = ioctl::sector_size(&file);
        // O_DIRECT where the device takes it; the exclusive fd above keeps others out.
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .map_err(|e| debug!(error = %e, "O_DIRECT not available; buffered writes only"))
            .ok();
        let (base, capacity) = match window {
            Some(w) if w.offset.checked_add(w.len).is_none_or(|end| end > size) => {
                return Err(ImageError::Target {
                    path: path.into(),
                    what: format!("writing {} bytes at offset {}", w.len, w.offset),
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("the window ends past the device's {size} bytes"),
                    ),
                })
            }
            Some(w) => (w.offset, w.len),
            None => (0, size),
        };
        Ok(Self {
            path: path.into(),
            file,
            direct,
            block: true,
            capacity: Some(capacity),
            sector,
            base,
            fresh_file: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_block_device(&self) -> bool {
        self.block
    }

    pub fn capacity(&self) -> Option<u64> {
        self.capacity
    }

    /// Refuse, before writing anything, an image that cannot fit.
    pub fn check_fits(&self, end: u64) -> Result<(), ImageError> {
        match self.capacity {
            Some(cap) if end > cap => Err(ImageError::TooLarge {
                needed: end,
                available: cap,
                target: self.path.clone(),
            }),
            _ => Ok(()),
        }
    }

    fn pwrite_all(&self, data: &[u8], offset: u64, direct: bool) -> Result<(), ImageError> {
        let f = if direct {
            self.direct.as_ref().unwrap_or(&self.file)
        } else {
            &self.file
        };
        f.write_all_at(data, self.base + offset).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                ImageError::TooLarge {
                    needed: offset + data.len() as u64,
                    available: self.capacity.unwrap_or(0),
                    target: self.path.clone(),
                }
            } else {
                io_err(
                    &self.path,
                    &format!("writing {} bytes at offset {offset}", data.len()),
                )(e)
            }
        })
    }

    /// Write one buffer: the aligned part with O_DIRECT when the device
    /// takes it, an unaligned tail through the page cache.
    fn write_buffer(&self, data: &[u8], offset: u64) -> Result<(), ImageError> {
        let direct_ok = self.direct.is_some() && (self.base + offset).is_multiple_of(DIRECT_ALIGN);
        let aligned = if direct_ok {
            data.len() as u64 / DIRECT_ALIGN * DIRECT_ALIGN
        } else {
            0
        } as usize;
        if aligned > 0 {
            self.pwrite_all(&data[..aligned], offset, true)?;
        }
        if aligned < data.len() {
            self.pwrite_all(&data[aligned..], offset + aligned as u64, false)?;
        }
        Ok(())
    }

    /// Make `[offset, offset+len)` read as zeros.
    fn zero(&self, offset: u64, len: u64) -> Result<(), ImageError> {
        if self.fresh_file {
            // Truncated at open: unwritten ranges are already holes.
            return Ok(());
        }
        if !self.block {
            return self.write_zeros(offset, len);
        }
        let s = self.sector;
        let start = offset.div_ceil(s) * s;
        let end = (offset + len) / s * s;
        if start >= end {
            return self.write_zeros(offset, len);
        }
        self.write_zeros(offset, start - offset)?;
        if let Err(e) = ioctl::zero_out(&self.file, self.base + start, end - start) {
            warn!(error = %e, "BLKZEROOUT failed; writing zeros");
            self.write_zeros(start, end - start)?;
        }
        self.write_zeros(end, offset + len - end)
    }

    fn write_zeros(&self, mut offset: u64, mut len: u64) -> Result<(), ImageError> {
        let zeros = vec![0u8; (len.min(1 << 20)) as usize];
        while len > 0 {
            let n = len.min(zeros.len() as u64);
            self.pwrite_all(&zeros[..n as usize], offset, false)?;
            offset += n;
            len -= n;
        }
        Ok(())
    }

    /// After a failure: make sure the half-written target cannot boot by
    /// zeroing where partition tables live (first and last MiB).
    pub fn invalidate(&self) {
        let result = match self.capacity {
            Some(cap) => self
                .write_zeros(0, cap.min(1 << 20))
                .and_then(|_| self.write_zeros(cap.saturating_sub(1 << 20), cap.min(1 << 20)))
                .and_then(|_| self.file.sync_data().map_err(io_err(&self.path, "syncing"))),
            None => self
                .file
                .set_len(0)
                .map_err(io_err(&self.path, "truncating")),
        };
        if let Err(e) = result {
            warn!(error = %e, "could not invalidate the target after a failed write");
        }
    }
}

/// An aligned heap buffer for O_DIRECT.
struct AlignedBuf {
    ptr: *mut u8,
    cap: usize,
    len: usize,
}

// SAFETY: the buffer is plain owned memory, used by one thread at a time.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    fn new(cap: usize) -> Self {
        let layout = Layout::from_size_align(cap, DIRECT_ALIGN as usize).expect("valid layout");
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { alloc::alloc(layout) };
        if ptr.is_null() {
            alloc::handle_alloc_error(layout);
        }
        Self { ptr, cap, len: 0 }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for cap bytes and len ≤ cap are initialised.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.cap - self.len);
        // SAFETY: the destination has room for n bytes and does not overlap data.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(self.len), n) };
        self.len += n;
        n
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout =
            Layout::from_size_align(self.cap, DIRECT_ALIGN as usize).expect("valid layout");
        // SAFETY: allocated in `new` with the same layout.
        unsafe { alloc::dealloc(self.ptr, layout) };
    }
}

/// Work for the I/O threads.
enum Job {
    /// Write a filled buffer at its offset, then hand the buffer back.
    Write {
        offset: u64,
        buf: AlignedBuf,
    },
    Zero {
        offset: u64,
        len: u64,
    },
}

/// Applies ops to a target, coalescing contiguous data into large buffers
/// and keeping up to `IO_THREADS` writes in flight at once, as `qemu-img
/// convert -W` does: one synchronous write at a time leaves the device idle
/// between requests. Ops never overlap (the decoders guarantee disjoint
/// ranges), so completion order does not matter.
pub struct Writer {
    target: Arc<Target>,
    /// The buffer being filled; `None` while all are in flight.
    buf: Option<AlignedBuf>,
    buf_offset: u64,
    /// Highest byte offset written or zeroed (a file's final length).
    end: u64,
    jobs: Option<SyncSender<Job>>,
    /// Buffers coming back from the I/O threads.
    free: Receiver<AlignedBuf>,
    threads: Vec<JoinHandle<()>>,
    /// The first I/O failure, until the writer reports it.
    failed: Arc<Mutex<Option<ImageError>>>,
    /// Set with the first failure: the I/O threads skip what is left.
    halted: Arc<AtomicBool>,
}

impl Writer {
    pub fn new(target: Target, progress: Arc<Progress>) -> Result<Self, ImageError> {
        Self::start(target, progress, |i, ctx| {
            std::thread::Builder::new()
                .name(format!("image-io-{i}"))
                .spawn(move || ctx.run())
        })
    }

    /// Start with up to `IO_THREADS` I/O threads from `spawn`. Fewer than
    /// that only cost speed; none at all would leave every submit blocked
    /// on a queue nobody drains, so that is an error.
    fn start(
        target: Target,
        progress: Arc<Progress>,
        spawn: impl Fn(usize, IoContext) -> std::io::Result<JoinHandle<()>>,
    ) -> Result<Self, ImageError> {
        let target = Arc::new(target);
        let (jobs_tx, jobs_rx) = sync_channel::<Job>(IO_THREADS);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (free_tx, free) = sync_channel::<AlignedBuf>(IO_THREADS + 1);
        let failed = Arc::new(Mutex::new(None));
        let halted = Arc::new(AtomicBool::new(false));
        for _ in 0..IO_THREADS {
            free_tx
                .send(AlignedBuf::new(BUFFER_BYTES))
                .expect("the channel holds every buffer");
        }
        let mut threads = Vec::with_capacity(IO_THREADS);
        let mut spawn_error = None;
        for i in 0..IO_THREADS {
            let ctx = IoContext {
                target: target.clone(),
                jobs: jobs_rx.clone(),
                free: free_tx.clone(),
                failed: failed.clone(),
                halted: halted.clone(),
                progress: progress.clone(),
            };
            match spawn(i, ctx) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    warn!(error = %e, "could not start an I/O thread; writing with fewer");
                    spawn_error = Some(e);
                }
            }
        }
        if threads.is_empty() {
            let why = spawn_error.map_or_else(|| "none requested".to_string(), |e| e.to_string());
            return Err(ImageError::Internal(format!(
                "could not start any I/O thread: {why}"
            )));
        }
        Ok(Self {
            target,
            buf: Some(AlignedBuf::new(BUFFER_BYTES)),
            buf_offset: 0,
            end: 0,
            jobs: Some(jobs_tx),
            free,
            threads,
            failed,
            halted,
        })
    }

    pub fn apply(&mut self, op: WriteOp) -> Result<(), ImageError> {
        self.check_failed()?;
        match op {
            WriteOp::Data { offset, data } => {
                self.target.check_fits(offset + data.len() as u64)?;
                if self.buffered() > 0 && offset != self.buf_offset + self.buffered() as u64 {
                    self.flush()?;
                }
                if self.buffered() == 0 {
                    self.buf_offset = offset;
                }
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let buf = self.buffer()?;
                    let n = buf.push(rest);
                    let full = buf.len == buf.cap;
                    rest = &rest[n..];
                    if full {
                        let next = self.buf_offset + BUFFER_BYTES as u64;
                        self.flush()?;
                        self.buf_offset = next;
                    }
                }
            }
            WriteOp::Zero { offset, len } => {
                self.target.check_fits(offset + len)?;
                self.flush()?;
                self.end = self.end.max(offset + len);
                self.submit(Job::Zero { offset, len })?;
            }
        }
        Ok(())
    }

    fn check_failed(&self) -> Result<(), ImageError> {
        if !self.halted.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.failed.lock().map(|mut f| f.take()) {
            Ok(Some(e)) => Err(e),
            Ok(None) => Err(ImageError::Internal("an earlier write failed".into())),
            Err(_) => Err(ImageError::Internal("an I/O thread panicked".into())),
        }
    }

    fn buffered(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.len)
    }

    /// The buffer to fill, waiting for one to come back if all are in flight.
    fn buffer(&mut self) -> Result<&mut AlignedBuf, ImageError> {
        if self.buf.is_none() {
            let buf = self
                .free
                .recv()
                .map_err(|_| ImageError::Internal("the I/O threads stopped".into()))?;
            self.buf = Some(buf);
        }
        Ok(self.buf.as_mut().expect("just filled"))
    }

    fn submit(&mut self, job: Job) -> Result<(), ImageError> {
        let sent = self.jobs.as_ref().map(|j| j.send(job).is_ok());
        if sent != Some(true) {
            self.check_failed()?;
            return Err(ImageError::Internal("the I/O threads stopped".into()));
        }
        Ok(())
    }

    /// Hand the filled buffer to an I/O thread.
    fn flush(&mut self) -> Result<(), ImageError> {
        if self.buffered() == 0 {
            return Ok(());
        }
        let buf = self.buf.take().expect("buffered() > 0");
        let offset = self.buf_offset;
        self.end = self.end.max(offset + buf.len as u64);
        self.submit(Job::Write { offset, buf })
    }

    /// Wait for every write in flight; the I/O threads end.
    fn drain(&mut self) -> Result<(), ImageError> {
        drop(self.jobs.take());
        let panicked = self
            .threads
            .drain(..)
            .map(JoinHandle::join)
            .any(|r| r.is_err());
        self.check_failed()?;
        if panicked {
            return Err(ImageError::Internal("an I/O thread panicked".into()));
        }
        Ok(())
    }

    /// After a failure: wait for the writes in flight (none may land later),
    /// then hand back the target to be invalidated.
    pub fn abandon(mut self) -> Arc<Target> {
        if let Err(e) = self.drain() {
            debug!(error = %e, "while abandoning the write");
        }
        self.target.clone()
    }

    /// Flush, wait for the writes in flight, give a file its final length,
    /// sync, and let the kernel re-read the partition table of a block device.
    pub fn finish(mut self, final_len: Option<u64>) -> Result<Arc<Target>, ImageError> {
        let flushed = self.flush();
        let drained = self.drain();
        flushed?;
        drained?;
        let t = &self.target;
        if t.fresh_file {
            let len = final_len.unwrap_or(self.end).max(self.end);
            t.file
                .set_len(len)
                .map_err(io_err(&t.path, "setting the file length"))?;
        }
        if let Some(d) = &t.direct {
            d.sync_data().map_err(io_err(&t.path, "syncing"))?;
        }
        t.file.sync_all().map_err(io_err(&t.path, "syncing"))?;
        // A window is one partition: the table around it did not change.
        if t.block && t.base == 0 && t.capacity == ioctl::device_size(&t.file).ok() {
            if let Err(e) = ioctl::reread_partitions(&t.file) {
                debug!(error = %e, "partition table not re-read (device without partition scanning?)");
            }
        }
        Ok(self.target.clone())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What one I/O thread shares with the writer.
struct IoContext {
    target: Arc<Target>,
    jobs: Arc<Mutex<Receiver<Job>>>,
    free: SyncSender<AlignedBuf>,
    failed: Arc<Mutex<Option<ImageError>>>,
    halted: Arc<AtomicBool>,
    progress: Arc<Progress>,
}

impl IoContext {
    /// Take jobs until the writer closes the queue. After a failure the
    /// remaining jobs are skipped (buffers still go back).
    fn run(self) {
        loop {
            let job = match self.jobs.lock() {
                Ok(rx) => rx.recv(),
                Err(_) => return,
            };
            let Ok(job) = job else { return };
            let skip = self.halted.load(Ordering::Acquire);
            let started = Instant::now();
            let (result, len, buf) = match job {
                Job::Write { offset, mut buf } => {
                    let r = if skip {
                        Ok(())
                    } else {
                        self.target.write_buffer(buf.as_slice(), offset)
                    };
                    let len = buf.len as u64;
                    buf.len = 0;
                    (r, len, Some(buf))
                }
                Job::Zero { offset, len } => {
                    let r = if skip {
                        Ok(())
                    } else {
                        self.target.zero(offset, len)
                    };
                    (r, len, None)
                }
            };
            let stage = match buf {
                Some(_) => &self.progress.stages.write,
                None => &self.progress.stages.zero,
            };
            StageTimes::add(stage, started);
            match result {
                Ok(()) if !skip => self.progress.add_written(len),
                Ok(()) => {}
                Err(e) => {
                    if let Ok(mut f) = self.failed.lock() {
                        f.get_or_insert(e);
                    }
                    self.halted.store(true, Ordering::Release);
                }
            }
            if let Some(buf) = buf {
                // The writer may be gone (abandoned): the buffer is then freed.
                let _ = self.free.send(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_bounds_and_offsets_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::write(&path, vec![7u8; 64 << 10]).unwrap();
        let window = Window {
            offset: 16 << 10,
            len: 8 << 10,
        };
        let target = Target::open_window(&path, Some(window)).unwrap();
        let mut w = Writer::new(target, Arc::new(Progress::default())).unwrap();
        w.apply(WriteOp::Data {
            offset: 0,
            data: Bytes::from(vec![1u8; 4096]),
        })
        .unwrap();
        w.apply(WriteOp::Zero {
            offset: 4096,
            len: 4096,
        })
        .unwrap();
        let e = w
            .apply(WriteOp::Data {
                offset: 8 << 10,
                data: Bytes::from_static(b"x"),
            })
            .unwrap_err();
        assert!(matches!(e, ImageError::TooLarge { available, .. } if available == 8 << 10));
        w.finish(Some(1 << 30)).unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), 64 << 10, "a windowed file keeps its size");
        assert!(back[..16 << 10].iter().all(|b| *b == 7));
        assert!(back[16 << 10..20 << 10].iter().all(|b| *b == 1));
        assert!(back[20 << 10..24 << 10].iter().all(|b| *b == 0));
        assert!(back[24 << 10..].iter().all(|b| *b == 7));
    }

    #[test]
    fn writes_in_flight_at_once_land_where_they_belong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let target = Target::open(&path).unwrap();
        let mut w = Writer::new(target, Arc::new(Progress::default())).unwrap();
        // Pieces out of order, some contiguous, with a zero range between:
        // many buffers are in flight at once.
        let piece = |i: u64| Bytes::from(vec![(i % 250 + 1) as u8; 1 << 20]);
        let order: Vec<u64> = (0..40).rev().filter(|i| i % 9 != 4).collect();
        for i in &order {
            w.apply(WriteOp::Data {
                offset: i << 20,
                data: piece(*i),
            })
            .unwrap();
        }
        for i in (0..40u64).filter(|i| i % 9 == 4) {
            w.apply(WriteOp::Zero {
                offset: i << 20,
                len: 1 << 20,
            })
            .unwrap();
        }
        w.finish(None).unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), 40 << 20);
        for i in 0..40u64 {
            let want = if i % 9 == 4 { 0 } else { (i % 250 + 1) as u8 };
            let got = &back[(i << 20) as usize..((i + 1) << 20) as usize];
            assert!(got.iter().all(|b| *b == want), "MiB {i}");
        }
    }

    #[test]
    fn no_io_thread_is_an_error_and_one_is_enough() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let refuse = |_: usize, _: IoContext| -> std::io::Result<JoinHandle<()>> {
            Err(std::io::Error::from_raw_os_error(libc::EAGAIN))
        };
        let target = Target::open(&path).unwrap();
        let e = Writer::start(target, Arc::new(Progress::default()), refuse)
            .err()
            .expect("no thread, no writer");
        assert!(
            e.to_string().contains("could not start any I/O thread"),
            "{e}"
        );

        // Only the first thread starts: every write still lands.
        let only_first = |i: usize, ctx: IoContext| {
            if i == 0 {
                std::thread::Builder::new().spawn(move || ctx.run())
            } else {
                Err(std::io::Error::from_raw_os_error(libc::EAGAIN))
            }
        };
        let target = Target::open(&path).unwrap();
        let mut w = Writer::start(target, Arc::new(Progress::default()), only_first).unwrap();
        for i in 0..24u64 {
            w.apply(WriteOp::Data {
                offset: i << 20,
                data: Bytes::from(vec![i as u8 + 1; 1 << 20]),
            })
            .unwrap();
        }
        w.finish(None).unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), 24 << 20);
        for i in 0..24usize {
            assert!(
                back[i << 20..(i + 1) << 20]
                    .iter()
                    .all(|b| *b == i as u8 + 1),
                "MiB {i}"
            );
        }
    }
}
