//! The conventions every Switchyard HTTP API follows: errors are RFC 9457
//! `application/problem+json` ([`Problem`]) and requests carry `Authorization: Bearer`
//! tokens checked in constant time ([`bearer_authorized`]). Routes live in their components.

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;
use switchyard_core::Secret;

mod problem;

pub use problem::Problem;

/// Reads a request body of at most `limit` bytes: over the limit is 413, a body that stalls
/// or breaks off is 408 (the two are one error to `to_bytes`, not to the client).
pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, Problem> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cause {
            if c.is::<http_body_util::LengthLimitError>() {
                return Problem::too_large(limit);
            }
            cause = c.source();
        }
        Problem::body_unread()
    })
}

/// Whether `headers` carry one of `tokens` as a bearer token (always true when `disabled`).
/// Every token is compared, in constant time, with no early exit on a match.
pub fn bearer_authorized(tokens: &[Secret<String>], disabled: bool, headers: &HeaderMap) -> bool {
    if disabled {
        return true;
    }
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    tokens.iter().fold(false, |ok, t| {
        ok | (!given.is_empty() && bool::from(t.expose().as_bytes().ct_eq(given.as_bytes())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_over_the_limit_is_413_and_a_broken_one_408() {
        let big = axum::body::Body::from(vec![b'x'; 11]);
        assert_eq!(read_body(big, 10).await.unwrap_err().status(), 413);
        let fits = axum::body::Body::from(vec![b'x'; 10]);
        assert_eq!(read_body(fits, 10).await.unwrap().len(), 10);
        // What a stalled body (the server's body timeout) or a vanished client looks like.
        let broken = axum::body::Body::from_stream(futures::stream::iter(vec![
            Ok(bytes::Bytes::from_static(b"{")),
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "stalled")),
        ]));
        assert_eq!(read_body(broken, 10).await.unwrap_err().status(), 408);
    }

    #[test]
    fn bearer_tokens() {
        let tokens = vec![Secret::new("a".to_owned()), Secret::new("bb".to_owned())];
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, v.parse().unwrap());
            m
        };
        assert!(bearer_authorized(&tokens, false, &h("Bearer bb")));
        assert!(!bearer_authorized(&tokens, false, &h("Bearer b")));
        assert!(!bearer_authorized(&tokens, false, &h("Bearer ")));
        assert!(!bearer_authorized(&tokens, false, &h("Basic bb")));
        assert!(!bearer_authorized(&tokens, false, &HeaderMap::new()));
        assert!(bearer_authorized(&[], true, &HeaderMap::new()));
    }
}
