//! The media type of POST bodies. The proxy inspects a body as UTF-8 JSON; a backend that
//! honours a declared `charset` or `Content-Encoding` would decode other bytes than the ones
//! inspected (`"get+AC0-env"` is `get-env` in UTF-7). So a POST must declare JSON in UTF-8,
//! unencoded, or nothing at all, and what is relayed says exactly that.

use http::header::{self, HeaderMap, HeaderValue};

/// Why a POST body's declared type is refused (answered 415).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MediaTypeError {
    /// More than one `Content-Type` header.
    #[error("more than one Content-Type header")]
    SeveralTypes,
    /// Not `application/json`.
    #[error("the body must be application/json")]
    NotJson,
    /// A `charset` other than UTF-8, or more than one.
    #[error("the body must be UTF-8 (charset=utf-8 or none)")]
    Charset,
    /// A `Content-Encoding` other than `identity`.
    #[error("compressed or encoded bodies are not accepted (Content-Encoding must be identity)")]
    Encoded,
    /// The header is not parseable as a media type.
    #[error("malformed Content-Type")]
    Malformed,
}

/// Checks the declared type of a POST body: `application/json` (any case) with no charset or
/// `charset=utf-8` (any case, quoted or not), no `Content-Encoding` but `identity`. A missing
/// `Content-Type` is accepted: the body is parsed as JSON either way, and the relayed request
/// declares it.
pub fn check_json_body(headers: &HeaderMap) -> Result<(), MediaTypeError> {
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let text = value.to_str().map_err(|_| MediaTypeError::Encoded)?;
        if !text
            .split(',')
            .all(|coding| coding.trim().eq_ignore_ascii_case("identity"))
        {
            return Err(MediaTypeError::Encoded);
        }
    }
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    let value = match (types.next(), types.next()) {
        (None, _) => return Ok(()),
        (Some(_), Some(_)) => return Err(MediaTypeError::SeveralTypes),
        (Some(v), None) => v.to_str().map_err(|_| MediaTypeError::Malformed)?,
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(MediaTypeError::NotJson);
    }
    let mut charset_seen = false;
    for param in parts {
        let param = param.trim();
        if param.is_empty() {
            continue;
        }
        let (name, raw) = param.split_once('=').ok_or(MediaTypeError::Malformed)?;
        if !name.trim().eq_ignore_ascii_case("charset") {
            // Other parameters mean nothing for JSON; the relayed header drops them.
            continue;
        }
        let raw = raw.trim();
        let charset = match raw.strip_prefix('"') {
            Some(rest) => rest.strip_suffix('"').ok_or(MediaTypeError::Malformed)?,
            None => raw,
        };
        if charset_seen || !charset.eq_ignore_ascii_case("utf-8") {
            return Err(MediaTypeError::Charset);
        }
        charset_seen = true;
    }
    Ok(())
}

/// Makes the relayed request declare exactly what was inspected.
pub fn normalise_json_body(headers: &mut HeaderMap) {
    headers.remove(header::CONTENT_ENCODING);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ct: Option<&str>, ce: Option<&str>) -> Result<(), MediaTypeError> {
        let mut h = HeaderMap::new();
        if let Some(ct) = ct {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        }
        if let Some(ce) = ce {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_str(ce).unwrap());
        }
        check_json_body(&h)
    }

    #[test]
    fn utf8_json_accepted() {
        for ct in [
            None,
            Some("application/json"),
            Some("Application/JSON"),
            Some("application/json; charset=utf-8"),
            Some("application/json;charset=UTF-8"),
            Some("application/json; charset=\"utf-8\""),
            Some("application/json; foo=bar"),
        ] {
            assert_eq!(check(ct, None), Ok(()), "{ct:?}");
        }
        assert_eq!(check(Some("application/json"), Some("identity")), Ok(()));
    }

    #[test]
    fn other_types_charsets_and_encodings_refused() {
        for (ct, want) in [
            ("application/json; charset=utf-7", MediaTypeError::Charset),
            (
                "application/json; charset=\"UTF-16\"",
                MediaTypeError::Charset,
            ),
            (
                "application/json; charset=iso-8859-1",
                MediaTypeError::Charset,
            ),
            (
                "application/json; charset=utf-8; charset=utf-7",
                MediaTypeError::Charset,
            ),
            ("application/json; charset=utf8", MediaTypeError::Charset),
            ("text/plain", MediaTypeError::NotJson),
            ("application/json-seq", MediaTypeError::NotJson),
            (
                "application/json; charset=\"utf-8",
                MediaTypeError::Malformed,
            ),
            ("application/json; junk", MediaTypeError::Malformed),
        ] {
            assert_eq!(check(Some(ct), None), Err(want), "{ct}");
        }
        for ce in ["gzip", "identity, gzip", "br", ""] {
            assert_eq!(
                check(Some("application/json"), Some(ce)),
                Err(MediaTypeError::Encoded),
                "{ce}"
            );
        }
        let mut h = HeaderMap::new();
        h.append(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.append(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(check_json_body(&h), Err(MediaTypeError::SeveralTypes));
    }
}
