//! Response framing: comb owns how a response is framed on the wire, so a
//! plugin's answer becomes an HTTP response only through here.

use axum::{body::Body, response::Response};
use http::{HeaderName, HeaderValue, StatusCode, header};

use crate::runtime::{Answer, InvalidResponse};

/// Headers that describe the connection or the message's framing, not the
/// response: comb frames what it sends (hyper writes `content-length` or
/// chunks from the body it is given), so a plugin's values are dropped. A
/// plugin's `content-length: 3` over a longer body would otherwise let the
/// rest be read as the answer to the client's *next* request on the
/// connection. The RFC 9110 hop-by-hop list, plus `content-length` and
/// `proxy-connection`.
pub(crate) const FRAMING_HEADERS: [HeaderName; 10] = [
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// The most headers a plugin's response may carry. Clients cap what they
/// read (hyper's client at 100 headers, comb adding a few of its own), and
/// beyond 32 768 hyper's header map panics.
pub(crate) const MAX_RESPONSE_HEADERS: usize = 64;

/// The most bytes a plugin's response headers may take, names and values.
pub(crate) const MAX_RESPONSE_HEADER_BYTES: usize = 64 * 1024;

/// A plugin's response as HTTP, or why it is not a valid one. comb owns
/// the framing: see [`FRAMING_HEADERS`].
pub(super) fn into_http(answer: Answer) -> Result<Response, InvalidResponse> {
    let (status, mut headers, body) = match answer {
        Answer::Record(record) => {
            let headers = header_map(record.headers)?;
            (record.status, headers, record.body.into())
        }
        Answer::Http(response) => {
            let (parts, body) = response.into_parts();
            let bytes = (parts.headers.iter())
                .map(|(name, value)| name.as_str().len() + value.len())
                .sum();
            check_header_size(parts.headers.len(), bytes)?;
            (parts.status.as_u16(), parts.headers, body)
        }
    };
    let status = StatusCode::from_u16(status)
        .ok()
        .filter(|status| (200..=599).contains(&status.as_u16()))
        .ok_or(InvalidResponse::Status(status))?;
    // Headers that `connection` names are hop-by-hop too (RFC 9110 7.6.1).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in FRAMING_HEADERS.iter().chain(&named) {
        headers.remove(name);
    }
    let mut http = Response::new(Body::from(body));
    *http.status_mut() = status;
    *http.headers_mut() = headers;
    Ok(http)
}

/// A response record's headers as a header map, checked before any is
/// added.
fn header_map(fields: Vec<(String, String)>) -> Result<http::HeaderMap, InvalidResponse> {
    let bytes = (fields.iter())
        .map(|(name, value)| name.len() + value.len())
        .sum();
    check_header_size(fields.len(), bytes)?;
    let mut headers = http::HeaderMap::with_capacity(fields.len());
    for (name, value) in fields {
        // Shown in the answer, the span and Rollbar: its start only.
        let name = HeaderName::try_from(name.as_str()).map_err(|_| {
            InvalidResponse::HeaderName(name[..name.floor_char_boundary(64)].to_owned())
        })?;
        let value = HeaderValue::try_from(value.as_str())
            .map_err(|_| InvalidResponse::HeaderValue(name.to_string()))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Whether `count` headers of `bytes` bytes (names and values) are within
/// [`MAX_RESPONSE_HEADERS`] and [`MAX_RESPONSE_HEADER_BYTES`].
fn check_header_size(count: usize, bytes: usize) -> Result<(), InvalidResponse> {
    if count > MAX_RESPONSE_HEADERS {
        return Err(InvalidResponse::TooManyHeaders {
            count,
            max: MAX_RESPONSE_HEADERS,
        });
    }
    if bytes > MAX_RESPONSE_HEADER_BYTES {
        return Err(InvalidResponse::HeadersTooLarge {
            bytes,
            max: MAX_RESPONSE_HEADER_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_header_name_is_named_by_its_start_only() {
        let name = format!("bad name {}", "x".repeat(10_000));
        let error = header_map(vec![(name, "v".to_owned())]).unwrap_err();
        let InvalidResponse::HeaderName(shown) = &error else {
            panic!("{error}");
        };
        assert_eq!(shown.len(), 64);
        assert!(shown.starts_with("bad name xx"), "{shown}");
    }
}
