//! A byte range of a disk to write into instead of all of it.

/// A partition addressed through its disk, for when the kernel gives the
/// partition no device node of its own (the image sink writes into it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub offset: u64,
    pub len: u64,
}
