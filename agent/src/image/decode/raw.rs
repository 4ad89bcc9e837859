//! Raw: the blocks are the disk, byte for byte.

use bytes::Bytes;

use super::{Decoded, Decoder};
use crate::image::format::Format;
use crate::image::ops::OpSender;
use crate::image::ImageError;

#[derive(Default)]
pub(super) struct Raw {
    /// Where the next block goes on the disk.
    offset: u64,
}

impl Decoder for Raw {
    fn feed(&mut self, ops: &mut OpSender, block: Bytes) -> Result<(), ImageError> {
        let n = block.len() as u64;
        ops.raw(self.offset, block)?;
        self.offset += n;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Decoded, ImageError> {
        Ok(Decoded {
            format: Format::Raw,
            size: self.offset,
            tail: None,
        })
    }
}
