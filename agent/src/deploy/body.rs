//! Small downloads read into memory (checksum files, config drives), with a
//! cap: a server that sends more is refused as soon as it passes the cap.

use futures_util::StreamExt;

/// The body of `resp`, at most `limit` bytes.
pub async fn read_capped(resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, String> {
    if let Some(len) = resp.content_length().filter(|l| *l > limit) {
        return Err(format!(
            "the body of {len} bytes exceeds the limit of {limit} bytes"
        ));
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(format!("the body exceeds the limit of {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
