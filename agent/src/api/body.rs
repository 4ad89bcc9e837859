//! The command body, read with a cap. Ironic sends the config drive inline
//! (gzip+base64, at most 64 MiB before encoding, usually a few KiB), so the
//! cap is generous; past it the rest of the body is read and dropped, up to
//! a bound, so that the client reads our 413 instead of a reset connection.

use std::time::Duration;

use axum::body::{Body, Bytes};
use futures_util::StreamExt;

/// Largest command body accepted.
pub const MAX_BODY: usize = 64 << 20;
/// Past the cap, at most this much more is read (and dropped) before the
/// 413, for at most [`DRAIN_TIME`].
const DRAIN_MAX: u64 = 256 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(30);

pub enum BodyError {
    TooLarge,
    Read(String),
}

pub async fn read_capped(body: Body) -> Result<Bytes, BodyError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Read(e.to_string()))?;
        if buf.len() + chunk.len() > MAX_BODY {
            let drain = async {
                let mut drained = chunk.len() as u64;
                while let Some(Ok(c)) = stream.next().await {
                    drained += c.len() as u64;
                    if drained > DRAIN_MAX {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}
