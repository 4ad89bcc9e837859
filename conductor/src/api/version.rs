//! Microversion negotiation: read `X-OpenStack-Ironic-API-Version`
//! (absent → minimum, `latest` → maximum), refuse what we do not serve with
//! 406, and stamp every response with the min/max/used headers.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferrite_protocol::version::{MAX_VERSION_HEADER, MIN_VERSION_HEADER, VERSION_HEADER};
use ferrite_protocol::ApiVersion;

use super::error::ApiError;

pub const MIN_VERSION: ApiVersion = ApiVersion::new(1, 1);
/// What Ironic 39 serves; ironicclient 6.3 knows up to the same.
pub const MAX_VERSION: ApiVersion = ApiVersion::new(1, 115);

/// The version a request is served at, for handlers that gate on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Requested(pub ApiVersion);

fn parse(raw: Option<&HeaderValue>) -> Result<ApiVersion, ApiError> {
    let Some(raw) = raw else {
        return Ok(MIN_VERSION);
    };
    let text = raw.to_str().unwrap_or_default().trim();
    // ironicclient may send "baremetal 1.x" (the OpenStack-API-Version form).
    let text = text.strip_prefix("baremetal ").unwrap_or(text);
    if text.eq_ignore_ascii_case("latest") {
        return Ok(MAX_VERSION);
    }
    let version: ApiVersion = text.parse().map_err(|_| {
        ApiError::bad_request(format!("Invalid value for {VERSION_HEADER} header: {text}"))
    })?;
    if version.major != 1 || version < MIN_VERSION || version > MAX_VERSION {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "Version {version} was requested but the minor version is not supported by this service. \
                 The supported version range is: [{MIN_VERSION}, {MAX_VERSION}]."
            ),
        ));
    }
    Ok(version)
}

pub async fn negotiate(mut req: Request, next: Next) -> Response {
    let outcome = parse(req.headers().get(VERSION_HEADER));
    let (mut resp, used) = match outcome {
        Ok(version) => {
            req.extensions_mut().insert(Requested(version));
            (next.run(req).await, Some(version))
        }
        Err(e) => (e.into_response(), None),
    };
    let headers = resp.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: &str, value: String| {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            h.insert(n, v);
        }
    };
    set(headers, MIN_VERSION_HEADER, MIN_VERSION.to_string());
    set(headers, MAX_VERSION_HEADER, MAX_VERSION.to_string());
    if let Some(v) = used {
        set(headers, VERSION_HEADER, v.to_string());
    }
    set(headers, "Vary", VERSION_HEADER.to_string());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_rules() {
        assert_eq!(parse(None).unwrap(), MIN_VERSION);
        assert_eq!(
            parse(Some(&HeaderValue::from_static("latest"))).unwrap(),
            MAX_VERSION
        );
        assert_eq!(
            parse(Some(&HeaderValue::from_static("1.62"))).unwrap(),
            ApiVersion::new(1, 62)
        );
        let too_new = parse(Some(&HeaderValue::from_static("1.999"))).unwrap_err();
        assert_eq!(too_new.status, StatusCode::NOT_ACCEPTABLE);
        let junk = parse(Some(&HeaderValue::from_static("one"))).unwrap_err();
        assert_eq!(junk.status, StatusCode::BAD_REQUEST);
    }
}
