//! Arbitrary bytes as a qcow2 file, streamed through the decoder in uneven
//! chunks: it must return an error or finish, never panic, hang or write
//! outside the virtual disk.

#![no_main]

use bytes::Bytes;
use ferrite_agent::image::qcow2::{GuestSink, Qcow2Error, StreamDecoder};
use libfuzzer_sys::fuzz_target;

struct Bounds {
    virtual_size: Option<u64>,
}

impl GuestSink for Bounds {
    type Error = Qcow2Error;
    fn write(&mut self, guest: u64, data: Bytes) -> Result<(), Qcow2Error> {
        if let Some(size) = self.virtual_size {
            assert!(guest + data.len() as u64 <= size, "write past the virtual disk");
        }
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut dec = StreamDecoder::sequential(Some(data.len() as u64));
    let mut sink = Bounds { virtual_size: None };
    let mut pos = 0;
    let mut step = 1 + data.first().copied().unwrap_or(0) as usize * 7;
    while pos < data.len() {
        let end = (pos + step).min(data.len());
        if dec.feed(Bytes::copy_from_slice(&data[pos..end]), &mut sink).is_err() {
            return;
        }
        sink.virtual_size = dec.header().map(|h| h.virtual_size);
        pos = end;
        step = step * 3 % 4093 + 1;
    }
    let _ = dec.finish();
});
