//! Property tests of how a provider's answer is read: any status, any `Retry-After`, any body
//! gives a classification (never a panic), a bounded wait, and an error message with no card
//! number in it.
//!
//! Bounded for CI. Before a release:
//! `PROPTEST_CASES=100000 cargo test --release -p switchyard-http --test classify_properties`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;
use switchyard_http::{MAX_RETRY_AFTER, classify, contains_card_number, parse_retry_after};

proptest! {
    #[test]
    fn any_answer_is_classified(
        status in 100u16..600,
        retry_after in ".{0,40}",
        body in prop::collection::vec(any::<u8>(), 0..1024),
    ) {
        let status = StatusCode::from_u16(status).unwrap();
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&retry_after) {
            headers.insert("retry-after", v.clone());
            if let Some(wait) = parse_retry_after(&v, SystemTime::now()) {
                prop_assert!(wait <= MAX_RETRY_AFTER);
            }
        }
        let outcome = classify(status, &headers, &body);
        prop_assert_eq!(outcome.is_ok(), status.is_success());
    }

    #[test]
    fn a_card_in_an_error_body_is_never_in_the_message(
        status in 400u16..600,
        digits in prop::sample::select(vec![
            "4242424242424242", "5555555555554444", "4000056655665556", "378282246310005",
        ]),
        as_number in any::<bool>(),
    ) {
        let body = if as_number {
            format!(r#"{{"error":{{"card":{digits}}}}}"#)
        } else {
            format!(r#"{{"error":"card {digits} declined"}}"#)
        };
        let status = StatusCode::from_u16(status).unwrap();
        let e = classify(status, &HeaderMap::new(), body.as_bytes()).unwrap_err();
        let message = e.to_string();
        prop_assert!(!contains_card_number(&message), "{}", message);
    }
}
