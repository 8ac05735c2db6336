//! Property tests of every decoder of outside input (commands, events, wait records,
//! callbacks): whatever bytes arrive, decoding answers with a value or an error, never a
//! panic; what decodes, encodes and decodes again to the same thing.
//!
//! Bounded for CI (proptest's 256 cases per property). Before a release:
//! `PROPTEST_CASES=100000 cargo test --release -p switchyard-core --test decoders`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::{Value, json};
use switchyard_core::waiting::{Callback, WaitRecord};
use switchyard_core::{Command, Event};

/// Arbitrary JSON, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A command that is nearly right: valid fields, some replaced by arbitrary JSON.
fn near_command() -> impl Strategy<Value = Value> {
    (
        any_json(),
        prop::sample::select(vec![
            "id",
            "kind",
            "provider",
            "operation",
            "payload",
            "idempotency_key",
            "metadata",
            "deadline",
            "created_at",
        ]),
        any::<bool>(),
    )
        .prop_map(|(value, field, replace)| {
            let mut c = json!({
                "id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "kind": "payment",
                "provider": "stripe", "operation": "charge",
                "payload": {"amount": 1999, "currency": "usd"},
                "idempotency_key": "order-42", "metadata": {"order": "42"},
                "created_at": "2026-11-29T10:00:00Z"
            });
            if replace {
                c[field] = value;
            } else if let Value::Object(m) = &mut c {
                m.remove(field);
            }
            c
        })
}

proptest! {
    #[test]
    fn any_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Command::decode(&bytes, "payment.stripe.charge");
        let _ = Event::decode(&bytes);
        let _ = serde_json::from_slice::<WaitRecord>(&bytes);
        let _ = serde_json::from_slice::<Callback>(&bytes);
    }

    #[test]
    fn any_json_decodes_or_fails_cleanly(value in any_json()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        let _ = Command::decode(&bytes, "payment.stripe.charge");
        let _ = Event::decode(&bytes);
        let _ = serde_json::from_slice::<WaitRecord>(&bytes);
    }

    #[test]
    fn a_command_that_decodes_round_trips(value in near_command()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        if let Ok(c) = Command::decode(&bytes, "payment.stripe.charge") {
            let again = Command::decode(&c.to_bytes(), "payment.stripe.charge").unwrap();
            prop_assert_eq!(again.fingerprint(), c.fingerprint());
            prop_assert_eq!(again.identity(), c.identity());
            prop_assert_eq!(again.to_bytes(), c.to_bytes());
        }
    }

    #[test]
    fn a_routing_key_of_any_text_is_refused_or_matched(rk in ".{0,80}") {
        let c = json!({
            "id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "kind": "payment",
            "provider": "stripe", "operation": "charge", "payload": {},
            "created_at": "2026-11-29T10:00:00Z"
        });
        let decoded = Command::decode(&serde_json::to_vec(&c).unwrap(), &rk);
        prop_assert_eq!(decoded.is_ok(), rk == "payment.stripe.charge");
    }
}
