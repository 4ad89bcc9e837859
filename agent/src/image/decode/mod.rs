//! The decoders of what a download holds once decompressed: one per
//! format, each turning blocks in file order into write ops. A new format
//! is a module here and an arm in [`for_format`].

mod qcow2;
mod raw;

use bytes::Bytes;

use super::format::Format;
use super::ops::OpSender;
use super::qcow2::map::GuestRange;
use super::qcow2::stream::Missed;
use super::qcow2::{Header, StreamDecoder};
use super::ImageError;

/// A qcow2's leftovers after one pass: its header, the guest ranges still
/// to zero, and the clusters that passed before their table did.
pub(super) type QcowTail = (Header, Vec<GuestRange>, Missed);

/// What one pass decoded.
pub(super) struct Decoded {
    /// The format of the blocks (the inner one of a compressed download).
    pub format: Format,
    /// Bytes of disk the image describes (virtual size for qcow2).
    pub size: u64,
    /// qcow2 only: what the caller must still zero or stream again.
    pub tail: Option<QcowTail>,
}

pub(super) trait Decoder {
    /// The next block of the image, in file order.
    fn feed(&mut self, ops: &mut OpSender, block: Bytes) -> Result<(), ImageError>;
    /// The stream ended: check it was complete and say what it held.
    fn finish(self: Box<Self>) -> Result<Decoded, ImageError>;
}

/// The decoder for `format`. `qcow` is a qcow2 decoder already primed with
/// tables read ahead by Range; without one, qcow2 learns them from the stream.
pub(super) fn for_format(
    format: Format,
    qcow: Option<StreamDecoder>,
) -> Result<Box<dyn Decoder>, ImageError> {
    match format {
        Format::Raw => Ok(Box::new(raw::Raw::default())),
        Format::Qcow2 => Ok(Box::new(qcow2::Qcow2::new(
            qcow.unwrap_or_else(|| StreamDecoder::sequential(None)),
        ))),
        // Containers are unpacked before a decoder sees their content.
        Format::Gzip | Format::Zstd | Format::Xz => Err(ImageError::Internal(format!(
            "no decoder for {format}: it is a compression"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{sync_channel, Receiver};
    use std::sync::Arc;

    use super::*;
    use crate::image::sink::WriteOp;

    fn ops(capacity: Option<u64>) -> (OpSender, Receiver<WriteOp>) {
        let (tx, rx) = sync_channel(16);
        let ops = OpSender::new(tx, capacity, "/dev/null".into(), Arc::default());
        (ops, rx)
    }

    #[test]
    fn raw_places_blocks_end_to_end_and_finds_zeros() {
        let (mut ops, rx) = ops(None);
        let mut dec = for_format(Format::Raw, None).expect("raw has a decoder");
        dec.feed(&mut ops, Bytes::from(vec![0u8; 64 << 10]))
            .expect("zeros");
        dec.feed(&mut ops, Bytes::from_static(b"data"))
            .expect("data");
        ops.finish().expect("flushed");
        drop(ops);
        let got: Vec<_> = rx
            .iter()
            .map(|op| match op {
                WriteOp::Zero { offset, len } => ("zero", offset, len),
                WriteOp::Data { offset, data } => ("data", offset, data.len() as u64),
            })
            .collect();
        assert_eq!(got, [("zero", 0, 64 << 10), ("data", 64 << 10, 4)]);
        let done = dec.finish().expect("raw always finishes");
        assert_eq!((done.format, done.size), (Format::Raw, (64 << 10) + 4));
        assert!(done.tail.is_none());
    }

    #[test]
    fn qcow2_without_a_header_is_truncated() {
        let (mut ops, _rx) = ops(None);
        let mut dec = for_format(Format::Qcow2, None).expect("qcow2 has a decoder");
        dec.feed(&mut ops, Bytes::from_static(b"QFI\xfb"))
            .expect("a partial header waits for more");
        let err = dec.finish().err().expect("no header");
        assert_eq!(
            err.to_string(),
            "truncated qcow2 image: the header is incomplete"
        );
    }

    #[test]
    fn qcow2_larger_than_the_target_is_refused_once_its_header_passes() {
        // qcow2 v2, 512-byte clusters, 1 MiB virtual: 32 L1 entries at 512.
        let mut head = vec![0u8; 1024];
        head[..4].copy_from_slice(b"QFI\xfb");
        head[4..8].copy_from_slice(&2u32.to_be_bytes());
        head[20..24].copy_from_slice(&9u32.to_be_bytes());
        head[24..32].copy_from_slice(&(1u64 << 20).to_be_bytes());
        head[36..40].copy_from_slice(&32u32.to_be_bytes());
        head[40..48].copy_from_slice(&512u64.to_be_bytes());
        let (mut ops, rx) = ops(Some(64 << 10));
        let mut dec = for_format(Format::Qcow2, None).expect("qcow2 has a decoder");
        let err = dec
            .feed(&mut ops, Bytes::from(head))
            .expect_err("too large");
        assert!(
            matches!(err, ImageError::TooLarge { needed, available, .. }
                if needed == 1 << 20 && available == 64 << 10),
            "{err}"
        );
        drop(ops);
        assert!(rx.iter().next().is_none(), "nothing was written");
    }

    #[test]
    fn compressions_have_no_decoder() {
        for f in [Format::Gzip, Format::Zstd, Format::Xz] {
            assert!(matches!(
                for_format(f, None).err(),
                Some(ImageError::Internal(_))
            ));
        }
    }
}
