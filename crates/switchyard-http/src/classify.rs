//! Classification: the one place where an HTTP answer or a transport failure becomes an
//! [`ErrorClass`]. The worker maps the class to a broker action; nobody else re-decides it.

use std::error::Error as StdError;
use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderValue, StatusCode};
use switchyard_core::{ErrorClass, ProviderError};

use crate::resolver::DestinationRefused;
use switchyard_redact::body_excerpt;

/// The longest wait a provider's `Retry-After` can impose: a longer one is clamped, so a
/// misbehaving provider cannot park a command for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// How much of a provider's error body goes into the message.
const BODY_EXCERPT_CHARS: usize = 200;

/// Codes of failures that happen before or around the HTTP answer.
pub mod code {
    /// The attempt ran out of time (connect or total).
    pub const TIMEOUT: &str = "timeout";
    /// No connection could be made, including TLS failures.
    pub const CONNECT: &str = "connect";
    /// The connection broke while sending or reading.
    pub const IO: &str = "io";
    /// The destination is not https or resolves to a refused address (S2).
    pub const DESTINATION_REFUSED: &str = "destination_refused";
    /// The body exceeded `max_response_bytes` (S3).
    pub const RESPONSE_TOO_LARGE: &str = "response_too_large";
    /// The request could not be built (bad header or URL): retrying cannot help.
    pub const REQUEST: &str = "request";
}

/// Classifies a provider's answer: 2xx is `Ok`; 408, 425, 429 and 5xx are transient (with
/// any `Retry-After`); everything else, including redirects, which are never followed, is
/// permanent. The code is `http_<status>`; the message holds a masked excerpt of the body and
/// never any request header.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<(), ProviderError> {
    if status.is_success() {
        return Ok(());
    }
    let transient = matches!(status.as_u16(), 408 | 425 | 429) || status.is_server_error();
    let class = if transient {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    };
    let mut message = format!("provider answered {}", status_text(status));
    let excerpt = body_excerpt(body, BODY_EXCERPT_CHARS);
    if !excerpt.is_empty() {
        message.push_str(": ");
        message.push_str(&excerpt);
    }
    let mut err = ProviderError::new(class, format!("http_{}", status.as_u16()), message);
    err.http_status = Some(status.as_u16());
    if transient {
        err.retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
    }
    Err(err)
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// Parses `Retry-After` as delta-seconds or an HTTP-date relative to `now`, clamped to
/// [`MAX_RETRY_AFTER`]. A date in the past means "now" (zero); anything unparsable,
/// including a negative number, is `None` so the normal backoff applies.
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if text.is_empty() {
        return None;
    }
    let wait = if text.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: an overflowing number is just a very long wait.
        Duration::from_secs(text.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(text).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Classifies a failure that produced no HTTP answer.
pub(crate) fn transport_error(err: reqwest::Error) -> ProviderError {
    // URLs can carry credentials in their query; the attempt record has the URL anyway.
    let err = err.without_url();
    if let Some(refused) = find_cause::<DestinationRefused>(&err) {
        return destination_refused(refused.to_string());
    }
    let chain = error_chain(&err);
    // A connect error first: a connect timeout is both, and no byte of the request left.
    if err.is_connect() {
        ProviderError::new(ErrorClass::Transient, code::CONNECT, chain).before_sending()
    } else if err.is_timeout() {
        ProviderError::new(ErrorClass::Timeout, code::TIMEOUT, chain)
    } else if err.is_builder() {
        ProviderError::new(ErrorClass::Permanent, code::REQUEST, chain)
    } else {
        ProviderError::new(ErrorClass::Transient, code::IO, chain)
    }
}

/// The attempt's total time ran out.
pub(crate) fn timeout_error(limit: Duration) -> ProviderError {
    ProviderError::new(
        ErrorClass::Timeout,
        code::TIMEOUT,
        format!("no complete answer within {} ms", limit.as_millis()),
    )
}

/// A destination refused by policy: permanent, since retrying reaches the same address.
pub(crate) fn destination_refused(message: String) -> ProviderError {
    ProviderError::new(ErrorClass::Permanent, code::DESTINATION_REFUSED, message)
}

/// The provider sent more than we are willing to read. After a 2xx the provider acted and
/// only its answer is lost: `unknown`; after an error status, the status decides.
pub(crate) fn too_large(cap: usize, status: StatusCode) -> ProviderError {
    let class = if status.is_success() {
        ErrorClass::Unknown
    } else if matches!(status.as_u16(), 408 | 425 | 429) || status.is_server_error() {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    };
    let mut e = ProviderError::new(
        class,
        code::RESPONSE_TOO_LARGE,
        format!(
            "the {} answer's body exceeds the {cap} byte limit",
            status.as_u16()
        ),
    );
    e.http_status = Some(status.as_u16());
    e
}

fn find_cause<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// `outer: inner: root`, skipping a layer that only repeats its cause.
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn classification_table() {
        use ErrorClass::{Permanent, Transient};
        let table: &[(u16, Option<ErrorClass>)] = &[
            (200, None),
            (201, None),
            (202, None),
            (204, None),
            (301, Some(Permanent)),
            (302, Some(Permanent)),
            (304, Some(Permanent)),
            (307, Some(Permanent)),
            (400, Some(Permanent)),
            (401, Some(Permanent)),
            (403, Some(Permanent)),
            (404, Some(Permanent)),
            (409, Some(Permanent)),
            (422, Some(Permanent)),
            (408, Some(Transient)),
            (425, Some(Transient)),
            (429, Some(Transient)),
            (500, Some(Transient)),
            (502, Some(Transient)),
            (503, Some(Transient)),
            (504, Some(Transient)),
            (599, Some(Transient)),
        ];
        for &(status, want) in table {
            let status = StatusCode::from_u16(status).unwrap();
            let got = classify(status, &HeaderMap::new(), b"");
            match want {
                None => assert!(got.is_ok(), "{status}"),
                Some(class) => {
                    let err = got.unwrap_err();
                    assert_eq!(err.class, class, "{status}");
                    assert_eq!(err.code, format!("http_{}", status.as_u16()));
                    assert_eq!(err.http_status, Some(status.as_u16()));
                }
            }
        }
    }

    #[test]
    fn transient_answers_carry_retry_after() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, hv("7"));
        let err = classify(StatusCode::TOO_MANY_REQUESTS, &h, b"").unwrap_err();
        assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(err.message, "provider answered 429 Too Many Requests");

        let err = classify(StatusCode::BAD_REQUEST, &h, b"").unwrap_err();
        assert_eq!(err.retry_after, None);
    }

    #[test]
    fn message_holds_masked_body_excerpt() {
        let body = br#"{"error":"card 4242424242424242 declined"}"#;
        let err = classify(StatusCode::PAYMENT_REQUIRED, &HeaderMap::new(), body).unwrap_err();
        assert_eq!(
            err.message,
            r#"provider answered 402 Payment Required: {"error":"card ************4242 declined"}"#
        );
        let long = vec![b'z'; 10_000];
        let err = classify(StatusCode::BAD_GATEWAY, &HeaderMap::new(), &long).unwrap_err();
        assert!(err.message.chars().count() < 260, "{}", err.message);
    }

    #[test]
    fn retry_after_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after(&hv("0"), now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(&hv("120"), now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(&hv(" 30 "), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after(&hv("86400"), now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after(&hv("99999999999999999999999"), now),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn retry_after_http_date() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        assert_eq!(
            parse_retry_after(&hv("Wed, 21 Oct 2015 07:29:30 GMT"), now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after(&hv("Thu, 22 Oct 2015 07:28:00 GMT"), now),
            Some(MAX_RETRY_AFTER)
        );
        // Obsolete RFC 850 form is accepted too.
        assert_eq!(
            parse_retry_after(&hv("Wednesday, 21-Oct-15 07:28:10 GMT"), now),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn retry_after_in_the_past_is_zero() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after(&hv("Wed, 21 Oct 2015 07:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_garbage_and_negative_are_ignored() {
        let now = SystemTime::now();
        for bad in [
            "",
            "soon",
            "-5",
            "1.5",
            "12abc",
            "Wed, 32 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(parse_retry_after(&hv(bad), now), None, "{bad:?}");
        }
        let opaque = HeaderValue::from_bytes(b"\xff\xfe").unwrap();
        assert_eq!(parse_retry_after(&opaque, now), None);
    }
}
