//! The compressions an image may come in, each a streaming reader over
//! the downloaded bytes. A new one is an arm here and its magic in
//! `format::sniff`.

use std::io::Read;

use super::format::Format;
use super::ImageError;

/// A reader of `format`'s decompressed bytes ([`Format::is_compression`]
/// says which formats are compressions).
pub fn open<'a>(
    format: Format,
    compressed: impl Read + 'a,
) -> Result<Box<dyn Read + 'a>, ImageError> {
    Ok(match format {
        // Multi-member: `cat a.gz b.gz` is one gzip stream to gunzip.
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(compressed)),
        Format::Zstd => Box::new(
            zstd::stream::read::Decoder::new(compressed)
                .map_err(|e| ImageError::Decompress(e.to_string()))?,
        ),
        Format::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(compressed)),
        Format::Raw | Format::Qcow2 => {
            return Err(ImageError::Internal(format!(
                "{format} is not a compression"
            )))
        }
    })
}
