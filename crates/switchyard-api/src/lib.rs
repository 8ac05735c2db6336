//! The conventions every Switchyard HTTP API follows: errors are RFC 9457
//! `application/problem+json` ([`Problem`]) and requests carry `Authorization: Bearer`
//! tokens checked in constant time ([`bearer_authorized`]). Routes live in their components.

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;
use switchyard_core::Secret;

mod problem;

pub use problem::Problem;

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
