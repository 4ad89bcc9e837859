//! qcow2, through the single-pass stream engine.

use bytes::Bytes;

use super::{Decoded, Decoder};
use crate::image::format::Format;
use crate::image::ops::OpSender;
use crate::image::qcow2::{Qcow2Error, StreamDecoder};
use crate::image::ImageError;

pub(super) struct Qcow2 {
    dec: StreamDecoder,
    /// The virtual size has been checked against the target.
    size_checked: bool,
}

impl Qcow2 {
    pub(super) fn new(dec: StreamDecoder) -> Self {
        Self {
            dec,
            size_checked: false,
        }
    }
}

impl Decoder for Qcow2 {
    fn feed(&mut self, ops: &mut OpSender, block: Bytes) -> Result<(), ImageError> {
        self.dec.feed(block, ops)?;
        // A sequential qcow2 shows its virtual size only now: refuse one
        // the target cannot hold before anything is written.
        if !self.size_checked {
            if let Some(h) = self.dec.header() {
                ops.check_end(0, h.virtual_size)?;
                self.size_checked = true;
            }
        }
        Ok(())
    }

    /// Also hands back what is left for the caller: the ranges to zero
    /// and the clusters to stream again.
    fn finish(self: Box<Self>) -> Result<Decoded, ImageError> {
        let header = self
            .dec
            .header()
            .cloned()
            .ok_or(Qcow2Error::Truncated("header"))?;
        let (zeros, missed) = self.dec.finish()?;
        Ok(Decoded {
            format: Format::Qcow2,
            size: header.virtual_size,
            tail: Some((header, zeros, missed)),
        })
    }
}
