//! Published test vectors of each scheme, and mutation properties.

use super::*;
use http::HeaderValue;
use proptest::prelude::*;

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
    assert!(GitHubSignature::new("").is_err());
    assert!(TwilioSignature::new("").is_err());
}

// GitHub's documentation example.
#[test]
fn github_published_vector() {
    let gh = GitHubSignature::new("It's a Secret to Everybody").unwrap();
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
    fn any_single_byte_change_breaks_stripe_and_github(index in any::<usize>(), xor in any::<u8>()) {
        let body = br#"{"id":"evt_test_webhook","object":"event"}"#;
        let st = StripeSignature::new("whsec_stripe_test_secret").unwrap();
        let sig = st.sign(1492774577, body);
        prop_assert!(st.verify(&headers(&[("stripe-signature", &sig)]), &flip(body, index, xor), 1492774577).is_err());
        let gh = GitHubSignature::new("s3cret").unwrap();
        let sig = gh.sign(body);
        prop_assert!(gh.verify(&headers(&[("x-hub-signature-256", &sig)]), &flip(body, index, xor)).is_err());
    }
}
