//! qcow2, decoded for streaming: the header, the L1/L2 tables and the
//! single-pass engine that writes each data cluster to its guest offset as
//! the file streams past.

pub mod header;
pub mod inflate;
pub mod map;
pub mod stream;

pub use header::Header;
pub use inflate::{CompressedCluster, Inflater};
pub use stream::{GuestSink, StreamDecoder};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Qcow2Error {
    #[error("not a qcow2 image")]
    NotQcow2,
    #[error("unsupported qcow2 image: {0}")]
    Unsupported(String),
    #[error("corrupt qcow2 image: {0}")]
    Corrupt(String),
    #[error("truncated qcow2 image: the {0} is incomplete")]
    Truncated(&'static str),
    #[error("truncated qcow2 image: the stream ended at byte {at} but {what} was still expected at byte {expected}")]
    EndedEarly {
        at: u64,
        what: String,
        expected: u64,
    },
}
