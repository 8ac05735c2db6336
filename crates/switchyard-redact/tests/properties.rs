//! Property tests of the redactor: a card number survives in no form it accepts (string,
//! number, key, spaced), redacting twice changes nothing more, and no input makes it panic.
//!
//! Bounded for CI. Before a release:
//! `PROPTEST_CASES=100000 cargo test --release -p switchyard-redact --test properties`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::{Value, json};
use switchyard_redact::{
    Redactor, body_excerpt, contains_card_number, holds_card_number, is_secret_name,
    is_sensitive_header, luhn_valid, mask_card_numbers, normalise_name,
};

/// A Luhn-valid card number of 13 to 19 digits: random digits, then the one check digit
/// the library's own Luhn test accepts.
fn card() -> impl Strategy<Value = String> {
    (12usize..=18)
        .prop_flat_map(|n| prop::collection::vec(0u8..10, n))
        .prop_map(|mut digits| {
            digits[0] = digits[0].max(1);
            digits.push(0);
            let last = digits.len() - 1;
            while !luhn_valid(&digits) {
                digits[last] += 1;
            }
            digits.iter().map(|d| char::from(b'0' + d)).collect()
        })
}

/// Text around a card: letters and punctuation that end a digit run.
fn around() -> impl Strategy<Value = String> {
    "[a-z :,;=/]{0,20}"
}

/// Any JSON value, with strings, numbers and keys that hold card numbers now and then.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        card().prop_map(|c| json!(c.parse::<u64>().unwrap_or(0))),
        "[0-9 a-f\\-\"\\\\\n\t]{0,40}".prop_map(Value::String),
        (around(), card(), around()).prop_map(|(a, c, b)| Value::String(format!("{a}{c}{b}"))),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[0-9a-z -]{0,20}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Whether any string of `value` (or key) holds a character JSON text writes escaped.
fn has_escaped_characters(value: &Value) -> bool {
    let escaped = |s: &str| s.chars().any(|c| c.is_control() || c == '"' || c == '\\');
    match value {
        Value::String(s) => escaped(s),
        Value::Array(items) => items.iter().any(has_escaped_characters),
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| escaped(k) || has_escaped_characters(v)),
        _ => false,
    }
}

proptest! {
    /// Reading a value part by part finds every card number its JSON text shows, and, where
    /// no character needs escaping, exactly those.
    #[test]
    fn a_value_holds_a_card_number_as_its_text_does(value in json_value()) {
        let in_text = contains_card_number(&value.to_string());
        let held = holds_card_number(&value);
        prop_assert!(!in_text || held, "{}", value);
        if !has_escaped_characters(&value) {
            prop_assert_eq!(held, in_text, "{}", value);
        }
    }

    #[test]
    fn a_card_number_survives_in_no_form(card in card(), before in around(), after in around()) {
        prop_assert!(contains_card_number(&card));
        let text = format!("{before} {card} {after}");
        let masked = mask_card_numbers(&text);
        prop_assert!(!masked.contains(&card), "{}", masked);
        let r = Redactor::default();
        let mut as_json = json!({
            "note": text,
            "list": [card.clone()],
        });
        as_json[card.as_str()] = json!({"ok": true});
        if let Ok(n) = card.parse::<u64>() {
            as_json["number"] = json!(n);
        }
        let out = r.json(&as_json).to_string();
        prop_assert!(!out.contains(&card), "{}", out);
        prop_assert!(!contains_card_number(&out), "{}", out);
    }

    #[test]
    fn redacting_twice_changes_nothing_more(text in ".{0,200}", key in "[a-zA-Z_-]{1,16}") {
        let r = Redactor::default();
        let v = json!({ key: text.clone(), "nested": [{"password": text.clone()}, text] });
        let once = r.json(&v);
        prop_assert_eq!(r.json(&once), once);
    }

    #[test]
    fn any_body_is_redacted_and_cut_without_panic(
        body in prop::collection::vec(any::<u8>(), 0..2048),
        max in 0usize..300,
    ) {
        let excerpt = body_excerpt(&body, max);
        prop_assert!(excerpt.chars().count() <= max + 1);
        let r = Redactor::new(&[], 512);
        let _ = r.body(&body);
        let _ = r.text(&String::from_utf8_lossy(&body));
    }

    /// The look-up of a field name without allocating agrees with the written definition:
    /// normalise (lowercase, `x-` dropped, separators removed), then search the list.
    #[test]
    fn a_field_name_is_judged_as_its_normalised_form(
        name in "(x|X)?[-_. ]?[a-zA-Z_. -]{0,24}|.{0,80}",
        extra in "[a-z_]{1,12}",
    ) {
        let r = Redactor::new(std::slice::from_ref(&extra), 1024);
        let n = normalise_name(&name);
        let parts = ["password", "passwd", "passphrase", "secret", "token", "apikey",
            "accesskey", "privatekey", "authorization", "credential", "signature", "cookie",
            "cvv", "cvc", "securitycode"];
        let written = parts.iter().any(|p| n.contains(p))
            || ["pin", "pincode", "auth", "otp"].contains(&n.as_str());
        prop_assert_eq!(is_secret_name(&name), written, "{:?} -> {:?}", name, n);
        prop_assert_eq!(
            r.is_secret_field(&name),
            written || normalise_name(&extra) == n,
            "{:?} -> {:?}", name, n
        );
        let lower = name.to_ascii_lowercase();
        let header = ["authorization", "proxy-authorization", "cookie", "set-cookie"]
            .contains(&lower.as_str())
            || lower.contains("key")
            || written;
        prop_assert_eq!(is_sensitive_header(&name), header, "{:?}", name);
    }

    /// Redacting a value in place gives what redacting a copy gives, and a body comes out as
    /// its value redacted and written compactly.
    #[test]
    fn owned_borrowed_and_body_redaction_agree(text in ".{0,60}", card in card(), key in "[a-zA-Z_-]{1,12}") {
        let r = Redactor::default();
        let v = json!({
            key: text.clone(),
            "password": "hunter2",
            "n": card.parse::<u64>().unwrap_or(0),
            "list": [text, format!("https://user:pw@host/{card}")],
            card: {"ok": true},
        });
        let borrowed = r.json(&v);
        prop_assert_eq!(&r.redacted(v.clone()), &borrowed);
        prop_assert_eq!(r.body(&serde_json::to_vec(&v).unwrap()), borrowed.to_string());
    }

    #[test]
    fn any_json_is_redacted_without_panic(s in ".{0,300}") {
        if let Ok(v) = serde_json::from_str::<Value>(&s) {
            let _ = Redactor::default().json(&v);
        }
    }
}
