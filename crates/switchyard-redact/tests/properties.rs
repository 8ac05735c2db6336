//! Property tests of the redactor: a card number survives in no form it accepts (string,
//! number, key, spaced), redacting twice changes nothing more, and no input makes it panic.
//!
//! Bounded for CI. Before a release:
//! `PROPTEST_CASES=100000 cargo test --release -p switchyard-redact --test properties`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::{Value, json};
use switchyard_redact::{
    Redactor, body_excerpt, contains_card_number, luhn_valid, mask_card_numbers,
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

proptest! {
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

    #[test]
    fn any_json_is_redacted_without_panic(s in ".{0,300}") {
        if let Ok(v) = serde_json::from_str::<Value>(&s) {
            let _ = Redactor::default().json(&v);
        }
    }
}
