//! Published test vectors of each scheme, and mutation properties.

use super::*;
use http::HeaderValue;
use proptest::prelude::*;
use switchyard_core::CallbackOutcome;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

// The Standard Webhooks specification's example.
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_TS: i64 = 1614265330;
const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn sw_headers(id: &str, ts: &str, sig: &str) -> HeaderMap {
    headers(&[
        ("webhook-id", id),
        ("webhook-timestamp", ts),
        ("webhook-signature", sig),
    ])
}

#[test]
fn standard_webhooks_published_vector() {
    let sw = StandardWebhooks::new(SW_SECRET).unwrap();
    assert_eq!(sw.sign(SW_ID, SW_TS, SW_BODY), SW_SIG);
    let h = sw_headers(SW_ID, &SW_TS.to_string(), SW_SIG);
    assert_eq!(sw.verify(&h, SW_BODY, SW_TS).unwrap(), SW_ID);
}

#[test]
fn standard_webhooks_rotation_timestamps_and_empty_signatures() {
    let sw = StandardWebhooks::new(SW_SECRET).unwrap();
    let ts = SW_TS.to_string();
    // Several signatures (key rotation): one valid is enough, wherever it stands.
    let rotated = format!("v1,bm90IHRoaXMgb25l {SW_SIG} v2,whatever");
    assert!(
        sw.verify(&sw_headers(SW_ID, &ts, &rotated), SW_BODY, SW_TS)
            .is_ok()
    );
    // 10 minutes old, or 10 minutes in the future.
    assert_eq!(
        sw.verify(&sw_headers(SW_ID, &ts, SW_SIG), SW_BODY, SW_TS + 600),
        Err(VerifyError::Timestamp)
    );
    assert_eq!(
        sw.verify(&sw_headers(SW_ID, &ts, SW_SIG), SW_BODY, SW_TS - 600),
        Err(VerifyError::Timestamp)
    );
    assert!(
        sw.verify(&sw_headers(SW_ID, &ts, SW_SIG), SW_BODY, SW_TS + 299)
            .is_ok()
    );
    // An empty signature never matches (a real bug in a reference library until 2024).
    for empty in ["v1,", "v1, ", "", " "] {
        assert_eq!(
            sw.verify(&sw_headers(SW_ID, &ts, empty), SW_BODY, SW_TS),
            Err(VerifyError::Mismatch),
            "{empty:?}"
        );
    }
    assert_eq!(
        sw.verify(&headers(&[]), SW_BODY, SW_TS),
        Err(VerifyError::Missing("webhook-id"))
    );
}

#[test]
fn generated_secrets_are_fresh_32_byte_keys_that_sign_and_verify() {
    let a = StandardWebhooks::generate_secret();
    let b = StandardWebhooks::generate_secret();
    assert_ne!(a, b);
    let key = B64.decode(a.strip_prefix("whsec_").unwrap()).unwrap();
    assert_eq!(key.len(), 32);
    let sw = StandardWebhooks::new(&a).unwrap();
    let sig = sw.sign("msg_1", SW_TS, b"{}");
    assert!(
        sw.verify(&sw_headers("msg_1", &SW_TS.to_string(), &sig), b"{}", SW_TS)
            .is_ok()
    );
}

#[test]
fn empty_secrets_are_refused() {
    assert_eq!(
        StandardWebhooks::new("whsec_").unwrap_err(),
        SecretError::Empty
    );
    assert_eq!(StandardWebhooks::new("").unwrap_err(), SecretError::Empty);
    assert_eq!(
        StandardWebhooks::new("whsec_!!!").unwrap_err(),
        SecretError::NotBase64
    );
    assert!(StripeSignature::new("").is_err());
    assert!(HmacHexSignature::github("").is_err());
    assert!(HmacHexSignature::easypost("").is_err());
    assert!(TwilioSignature::new("").is_err());
}

// GitHub's documentation example.
#[test]
fn github_published_vector() {
    let gh = HmacHexSignature::github("It's a Secret to Everybody").unwrap();
    let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert_eq!(gh.sign(b"Hello, World!"), expected);
    assert!(
        gh.verify(
            &headers(&[("x-hub-signature-256", expected)]),
            b"Hello, World!"
        )
        .is_ok()
    );
    assert!(
        gh.verify(
            &headers(&[("x-hub-signature-256", expected)]),
            b"Hello, World?"
        )
        .is_err()
    );
    assert!(
        gh.verify(
            &headers(&[("x-hub-signature-256", "sha256=")]),
            b"Hello, World!"
        )
        .is_err()
    );
}

// EasyPost publishes no fixed vector; these were computed with an independent
// implementation (Python's hmac and unicodedata) of the scheme EasyPost's client libraries
// check: `hmac-sha256-hex=` + hex HMAC-SHA256 of the body, keyed with the NFKD-normalized secret.
#[test]
fn easypost_documented_scheme() {
    let ep = HmacHexSignature::easypost("sécret").unwrap();
    let body = br#"{"object":"Event","description":"tracker.updated"}"#;
    let expected =
        "hmac-sha256-hex=a0f91ecff08bb5f5d6efa488593ddf38ca5157d58a591feff9fb2845789319b6";
    assert_eq!(ep.header(), "x-hmac-signature");
    assert_eq!(ep.sign(body), expected);
    let h = headers(&[("x-hmac-signature", expected)]);
    assert!(ep.verify(&h, body).is_ok());
    // The composed and decomposed spellings of a secret are the same key.
    let decomposed = HmacHexSignature::easypost("se\u{301}cret").unwrap();
    assert!(decomposed.verify(&h, body).is_ok());
    // NFKD folds compatibility characters too: the ligature ﬁ is "fi".
    assert_eq!(
        HmacHexSignature::easypost("\u{fb01}le").unwrap().sign(body),
        HmacHexSignature::easypost("file").unwrap().sign(body)
    );
    // GitHub's prefix, or GitHub's header, is not EasyPost's signature.
    let hex_only = expected.trim_start_matches("hmac-sha256-hex=");
    let github_shaped = format!("sha256={hex_only}");
    assert_eq!(
        ep.verify(&headers(&[("x-hmac-signature", &github_shaped)]), body),
        Err(VerifyError::Malformed("signature"))
    );
    assert_eq!(
        ep.verify(&headers(&[("x-hub-signature-256", expected)]), body),
        Err(VerifyError::Missing("x-hmac-signature"))
    );
    assert_eq!(
        ep.verify(&headers(&[("x-hmac-signature", "hmac-sha256-hex=")]), body),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        HmacHexSignature::easypost("other")
            .unwrap()
            .verify(&h, body),
        Err(VerifyError::Mismatch)
    );
}

// Stripe documents the scheme but publishes no fixed vector; this one was computed with an
// independent implementation (Python's hmac) of the documented scheme.
#[test]
fn stripe_documented_scheme() {
    let st = StripeSignature::new("whsec_stripe_test_secret").unwrap();
    let body = br#"{"id":"evt_test_webhook","object":"event"}"#;
    let sig = "t=1492774577,v1=b14a67f7e73cdb78af76b8a04168a6eaeb3d468ebd429412970557a43ab108de";
    assert_eq!(st.sign(1492774577, body), sig);
    assert!(
        st.verify(&headers(&[("stripe-signature", sig)]), body, 1492774577)
            .is_ok()
    );
    // Several v1 signatures (secret rolling) and a v0 are tolerated.
    let rolled = format!("t=1492774577,v1=00ff,{},v0=abc", &sig[13..]);
    assert!(
        st.verify(&headers(&[("stripe-signature", &rolled)]), body, 1492774577)
            .is_ok()
    );
    assert_eq!(
        st.verify(
            &headers(&[("stripe-signature", sig)]),
            body,
            1492774577 + 600
        ),
        Err(VerifyError::Timestamp)
    );
    assert_eq!(
        st.verify(
            &headers(&[("stripe-signature", "t=1492774577,v1=")]),
            body,
            1492774577
        ),
        Err(VerifyError::Mismatch)
    );
}

// Twilio's documentation example.
#[test]
fn twilio_published_vector() {
    let tw = TwilioSignature::new("12345").unwrap();
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    let params: Vec<(String, String)> = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675310"),
        ("Digits", "1234"),
        ("From", "+14158675310"),
        ("To", "+18005551212"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(tw.sign(url, &params), "GvWf1cFY/Q7PnoempGyD5oXAezc=");
    let h = headers(&[("x-twilio-signature", "GvWf1cFY/Q7PnoempGyD5oXAezc=")]);
    assert!(tw.verify(&h, url, &params).is_ok());
    assert!(
        tw.verify(&h, "https://mycompany.com/myapp.php?foo=1&bar=3", &params)
            .is_err()
    );
}

fn flip(bytes: &[u8], index: usize, xor: u8) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let i = index % b.len();
    b[i] ^= xor.max(1);
    b
}

proptest! {
    #[test]
    fn any_single_byte_change_is_rejected(index in any::<usize>(), xor in any::<u8>(), field in 0..4u8) {
        let sw = StandardWebhooks::new(SW_SECRET).unwrap();
        let ts = SW_TS.to_string();
        let (id, ts_text, sig, body) = match field {
            0 => (SW_ID.as_bytes().to_vec(), ts.clone().into_bytes(), SW_SIG.as_bytes().to_vec(), flip(SW_BODY, index, xor)),
            1 => (flip(SW_ID.as_bytes(), index, xor), ts.clone().into_bytes(), SW_SIG.as_bytes().to_vec(), SW_BODY.to_vec()),
            2 => (SW_ID.as_bytes().to_vec(), flip(ts.as_bytes(), index, xor), SW_SIG.as_bytes().to_vec(), SW_BODY.to_vec()),
            _ => (SW_ID.as_bytes().to_vec(), ts.clone().into_bytes(), flip(&SW_SIG.as_bytes()[3..], index, xor), SW_BODY.to_vec()),
        };
        let sig = if field == 3 { [b"v1,".as_slice(), &sig].concat() } else { sig };
        let mut h = HeaderMap::new();
        for (name, value) in [("webhook-id", &id), ("webhook-timestamp", &ts_text), ("webhook-signature", &sig)] {
            match HeaderValue::from_bytes(value) {
                Ok(v) => { h.insert(name, v); }
                Err(_) => return Ok(()), // not even a header: rejected before us
            }
        }
        prop_assert!(sw.verify(&h, &body, SW_TS).is_err());
    }

    #[test]
    fn any_single_byte_change_breaks_stripe_github_and_easypost(index in any::<usize>(), xor in any::<u8>()) {
        let body = br#"{"id":"evt_test_webhook","object":"event"}"#;
        let st = StripeSignature::new("whsec_stripe_test_secret").unwrap();
        let sig = st.sign(1492774577, body);
        prop_assert!(st.verify(&headers(&[("stripe-signature", &sig)]), &flip(body, index, xor), 1492774577).is_err());
        let gh = HmacHexSignature::github("s3cret").unwrap();
        let sig = gh.sign(body);
        prop_assert!(gh.verify(&headers(&[("x-hub-signature-256", &sig)]), &flip(body, index, xor)).is_err());
        let ep = HmacHexSignature::easypost("s3cret").unwrap();
        let sig = ep.sign(body);
        prop_assert!(ep.verify(&headers(&[("x-hmac-signature", &sig)]), &flip(body, index, xor)).is_err());
    }
}

/// Reads Stripe-like events: `{"id": "evt_..", "data": {"object": {"id": "pi_..", "status": ..}}}`.
#[derive(Debug)]
struct EventReader;

impl WebhookReader for EventReader {
    fn read(&self, delivery: &Verified<'_>) -> Result<Option<Notice>, String> {
        let v: serde_json::Value =
            serde_json::from_slice(delivery.body()).map_err(|e| e.to_string())?;
        let object = &v["data"]["object"];
        let outcome = match object["status"].as_str() {
            Some("succeeded") => CallbackOutcome::Succeeded {
                result: object.clone(),
            },
            Some("processing") => CallbackOutcome::Pending,
            _ => return Ok(None),
        };
        Ok(Some(Notice {
            id: v["id"].as_str().ok_or("no id")?.to_owned(),
            reference: object["id"].as_str().ok_or("no object id")?.to_owned(),
            outcome,
        }))
    }
}

/// Fails the test if a delivery reaches it: for schemes that must refuse first.
#[derive(Debug)]
struct MustNotRead;

impl WebhookReader for MustNotRead {
    fn read(&self, _: &Verified<'_>) -> Result<Option<Notice>, String> {
        panic!("an unverified delivery was read");
    }
}

#[test]
fn a_receiver_verifies_with_any_current_secret_then_reads() {
    let old = StripeSignature::new("whsec_old").unwrap();
    let new = StripeSignature::new("whsec_new").unwrap();
    let receiver = Receiver {
        scheme: Scheme::Stripe(vec![old, new.clone()]),
        reader: std::sync::Arc::new(EventReader),
    };
    let body = br#"{"id":"evt_1","data":{"object":{"id":"pi_1","status":"succeeded"}}}"#;
    let now = 1_700_000_000;
    let h = headers(&[("stripe-signature", &new.sign(now, body))]);
    let notice = receiver.receive(&h, body, now).unwrap().unwrap();
    assert_eq!(
        (notice.id.as_str(), notice.reference.as_str()),
        ("evt_1", "pi_1")
    );
    assert!(matches!(notice.outcome, CallbackOutcome::Succeeded { .. }));
    // Verified but about nothing waited for: acknowledged, nothing to do.
    let other = br#"{"id":"evt_2","data":{"object":{"id":"cus_1","status":"active"}}}"#;
    let h = headers(&[("stripe-signature", &new.sign(now, other))]);
    assert_eq!(receiver.receive(&h, other, now), Ok(None));
    // Verified but not this provider's body.
    let h = headers(&[("stripe-signature", &new.sign(now, b"not json"))]);
    assert!(matches!(
        receiver.receive(&h, b"not json", now),
        Err(Refused::Malformed(_))
    ));
    // Stale: refused whichever key signed.
    let h = headers(&[("stripe-signature", &new.sign(now - 600, body))]);
    assert_eq!(
        receiver.receive(&h, body, now),
        Err(Refused::Signature(VerifyError::Timestamp))
    );
}

#[test]
fn no_scheme_lets_an_unverified_delivery_reach_its_reader() {
    let never = std::sync::Arc::new(MustNotRead);
    let now = 1_700_000_000;
    let body = b"{}";
    let cases: Vec<(Scheme, HeaderMap)> = vec![
        (
            Scheme::Standard(vec![StandardWebhooks::new(SW_SECRET).unwrap()]),
            sw_headers("msg_1", &now.to_string(), "v1,AAAA"),
        ),
        (
            Scheme::Stripe(vec![StripeSignature::new("whsec_a").unwrap()]),
            headers(&[(
                "stripe-signature",
                &StripeSignature::new("whsec_b").unwrap().sign(now, body),
            )]),
        ),
        (
            Scheme::HmacHex(vec![HmacHexSignature::github("a").unwrap()]),
            headers(&[(
                "x-hub-signature-256",
                &HmacHexSignature::github("b").unwrap().sign(body),
            )]),
        ),
        (
            Scheme::Twilio {
                signers: vec![TwilioSignature::new("a").unwrap()],
                url: "https://hooks.example/v1/webhooks/twilio".into(),
            },
            headers(&[("x-twilio-signature", "bm9wZQ==")]),
        ),
        (
            Scheme::HmacHex(vec![HmacHexSignature::github("a").unwrap()]),
            HeaderMap::new(),
        ),
    ];
    for (scheme, h) in cases {
        let receiver = Receiver {
            scheme,
            reader: never.clone(),
        };
        assert!(
            matches!(receiver.receive(&h, body, now), Err(Refused::Signature(_))),
            "{receiver:?}"
        );
    }
}

#[test]
fn twilio_deliveries_verify_over_the_configured_url_and_the_form() {
    let url = "https://hooks.example/v1/webhooks/twilio";
    let token = TwilioSignature::new("auth_token_1").unwrap();
    let body = b"MessageSid=SM1&MessageStatus=delivered&To=%2B14155550100";
    let params: Vec<(String, String)> = form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let h = headers(&[("x-twilio-signature", &token.sign(url, &params))]);
    let scheme = Scheme::Twilio {
        signers: vec![token],
        url: url.into(),
    };
    assert!(scheme.verify(&h, body, 0).is_ok());
    let elsewhere = Scheme::Twilio {
        signers: vec![TwilioSignature::new("auth_token_1").unwrap()],
        url: "https://other.example/v1/webhooks/twilio".into(),
    };
    assert_eq!(
        elsewhere.verify(&h, body, 0).unwrap_err(),
        VerifyError::Mismatch
    );
    let tampered = b"MessageSid=SM1&MessageStatus=failed&To=%2B14155550100";
    assert_eq!(
        scheme.verify(&h, tampered, 0).unwrap_err(),
        VerifyError::Mismatch
    );
}

#[test]
fn a_timestamp_far_in_the_past_cannot_wrap_into_the_tolerance() {
    // `now - ts` overflows for a timestamp near i64::MIN; it must be refused, not wrapped.
    let now = 1_700_000_000;
    let sw = StandardWebhooks::new(SW_SECRET).unwrap();
    for ts in [i64::MIN + now, i64::MIN, i64::MAX] {
        let sig = sw.sign(SW_ID, ts, SW_BODY);
        let h = sw_headers(SW_ID, &ts.to_string(), &sig);
        assert_eq!(
            sw.verify(&h, SW_BODY, now),
            Err(VerifyError::Timestamp),
            "{ts}"
        );
    }
    let stripe = StripeSignature::new("whsec_a").unwrap();
    let ts = i64::MIN + now;
    let h = headers(&[("stripe-signature", &stripe.sign(ts, SW_BODY))]);
    assert_eq!(stripe.verify(&h, SW_BODY, now), Err(VerifyError::Timestamp));
}

#[test]
fn a_delivery_id_too_long_to_name_a_message_is_refused() {
    let key = StripeSignature::new("whsec_a").unwrap();
    let receiver = Receiver {
        scheme: Scheme::Stripe(vec![key.clone()]),
        reader: std::sync::Arc::new(EventReader),
    };
    let now = 1_700_000_000;
    let deliver = |id: &str| {
        let body =
            format!(r#"{{"id":"{id}","data":{{"object":{{"id":"pi_1","status":"succeeded"}}}}}}"#);
        let h = headers(&[("stripe-signature", &key.sign(now, body.as_bytes()))]);
        receiver.receive(&h, body.as_bytes(), now)
    };
    assert!(deliver(&"e".repeat(MAX_NOTICE_ID_BYTES)).unwrap().is_some());
    assert!(matches!(
        deliver(&"e".repeat(300)),
        Err(Refused::Malformed(why)) if why.contains("300 bytes")
    ));
}

proptest! {
    /// Hostile header values (any text, any timestamp, including the extremes of i64) are
    /// refused by every scheme without a panic.
    #[test]
    fn any_header_values_are_refused_without_panic(
        id in ".{0,300}",
        ts in prop_oneof![any::<i64>().prop_map(|t| t.to_string()), ".{0,30}"],
        sig in ".{0,200}",
        now in any::<i64>(),
    ) {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("webhook-id", id.as_str()),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", sig.as_str()),
            ("stripe-signature", sig.as_str()),
            ("x-hub-signature-256", sig.as_str()),
            ("x-hmac-signature", sig.as_str()),
        ] {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        }
        let body = id.as_bytes();
        prop_assert!(StandardWebhooks::new(SW_SECRET).unwrap().verify(&h, body, now).is_err());
        prop_assert!(StripeSignature::new("whsec_a").unwrap().verify(&h, body, now).is_err());
        prop_assert!(HmacHexSignature::github("s").unwrap().verify(&h, body).is_err());
    }
}
