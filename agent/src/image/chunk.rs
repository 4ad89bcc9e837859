//! Buffers for image chunks, reused instead of allocated per chunk. A fresh
//! 1 MiB allocation for every chunk costs 256 page faults when the
//! allocator has handed the last one back to the kernel, and when it has
//! not, peak memory follows the allocator's caching instead of the
//! pipeline's queues. A chunk is a [`Bytes`] whose storage goes back to the
//! pool when its last reference (decoder, hash thread, writer op) drops.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Buffers kept for reuse; more than the pipeline's queues ever hold at once.
const KEPT: usize = 24;

#[derive(Clone)]
pub struct ChunkPool {
    size: usize,
    free: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl ChunkPool {
    /// A pool of `size`-byte buffers.
    pub fn new(size: usize) -> Self {
        Self {
            size,
            free: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// An empty buffer with room for `size` bytes.
    pub fn take(&self) -> Vec<u8> {
        let reused = self.free.lock().ok().and_then(|mut f| f.pop());
        reused.unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// A zero-filled buffer of `size` bytes (for `Read::read` targets).
    pub fn take_filled(&self) -> Vec<u8> {
        let mut buf = self.take();
        buf.resize(self.size, 0);
        buf
    }

    /// Share `buf` as a chunk; its storage returns to the pool afterwards.
    pub fn freeze(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: self.clone(),
        })
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        // Only buffers of the pool's own size are worth keeping.
        if buf.capacity() != self.size {
            return;
        }
        buf.clear();
        if let Ok(mut free) = self.free.lock() {
            if free.len() < KEPT {
                free.push(buf);
            }
        }
    }
}

struct Pooled {
    buf: Vec<u8>,
    pool: ChunkPool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_comes_back_when_the_last_slice_drops() {
        let pool = ChunkPool::new(4096);
        let mut buf = pool.take();
        buf.extend_from_slice(&[7u8; 4096]);
        let ptr = buf.as_ptr();
        let chunk = pool.freeze(buf);
        let slice = chunk.slice(100..200);
        drop(chunk);
        assert!(
            pool.free.lock().unwrap().is_empty(),
            "a slice still holds it"
        );
        assert_eq!(&slice[..], &[7u8; 100][..]);
        drop(slice);
        let again = pool.take();
        assert_eq!(again.as_ptr(), ptr, "the same storage, reused");
        assert!(again.is_empty());
    }
}
