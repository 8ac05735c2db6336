//! Redaction (S5): what of an exchange may be written down. Header values that carry
//! credentials are replaced, and digit runs long enough to be card numbers are masked.

use std::collections::BTreeMap;

use http::HeaderMap;

/// What replaces a sensitive value.
pub const REDACTED: &str = "[REDACTED]";

/// Header names redacted whole.
const SENSITIVE_NAMES: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// Header names redacted when they contain one of these.
const SENSITIVE_PARTS: &[&str] = &["key", "token", "secret", "signature", "password"];

/// Whether a header's value must never be recorded.
pub fn is_sensitive_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SENSITIVE_NAMES.contains(&name.as_str())
        || SENSITIVE_PARTS.iter().any(|part| name.contains(part))
}

/// Headers as they may be recorded: lowercase names, credentials replaced by `[REDACTED]`,
/// card numbers masked in the rest, repeated headers joined with `, `.
pub fn redact_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let name = name.as_str();
        if is_sensitive_header(name) {
            // One marker however many values there were: even the count says nothing.
            out.insert(name.to_owned(), REDACTED.to_owned());
            continue;
        }
        let value = mask_card_numbers(&String::from_utf8_lossy(value.as_bytes()));
        out.entry(name.to_owned())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

/// Fewest digits in a run that is masked: the shortest card numbers have 13.
const CARD_MIN_DIGITS: usize = 13;
/// Digits left visible at the end of a masked run, as on a receipt.
const VISIBLE_DIGITS: usize = 4;

/// Masks every run of 13 or more digits (single spaces or dashes between digits allowed,
/// as in `4242 4242 4242 4242`) down to its last four digits. Longer runs than a card
/// number (19) are masked too: a card number glued to other digits must not leak either.
pub fn mask_card_numbers(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let end = run_end(&chars, i);
        let run = &chars[i..end];
        let digits = run.iter().filter(|c| c.is_ascii_digit()).count();
        if digits >= CARD_MIN_DIGITS {
            let mut seen = 0;
            for &c in run {
                if c.is_ascii_digit() {
                    seen += 1;
                    out.push(if digits - seen < VISIBLE_DIGITS {
                        c
                    } else {
                        '*'
                    });
                } else {
                    out.push(c);
                }
            }
        } else {
            out.extend(run);
        }
        i = end;
    }
    out
}

/// The end of a digit run starting at `start`: digits, with single separators between them.
fn run_end(chars: &[char], start: usize) -> usize {
    let mut end = start;
    while end < chars.len() {
        if chars[end].is_ascii_digit() {
            end += 1;
        } else if matches!(chars[end], ' ' | '-')
            && chars.get(end + 1).is_some_and(char::is_ascii_digit)
        {
            end += 2;
        } else {
            break;
        }
    }
    end
}

/// At most `max_chars` of a body, fit for an error message or a log: lossy UTF-8, card
/// numbers masked, control characters flattened to spaces, `…` when cut.
pub fn body_excerpt(body: &[u8], max_chars: usize) -> String {
    // Masking looks a little past the cut so a number straddling it is masked whole.
    let window = body
        .len()
        .min(max_chars.saturating_mul(4).saturating_add(64));
    let text = String::from_utf8_lossy(&body[..window]);
    let masked = mask_card_numbers(&text);
    let flat: String = masked
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = flat.trim();
    let mut excerpt: String = trimmed.chars().take(max_chars).collect();
    if trimmed.chars().nth(max_chars).is_some() || window < body.len() {
        excerpt.push('…');
    }
    excerpt
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn credentials_are_redacted() {
        let mut h = HeaderMap::new();
        h.insert(
            "Authorization",
            HeaderValue::from_static("Bearer sk_live_canary"),
        );
        h.insert("Proxy-Authorization", HeaderValue::from_static("Basic abc"));
        h.insert("Cookie", HeaderValue::from_static("session=canary"));
        h.append("Set-Cookie", HeaderValue::from_static("a=1"));
        h.append("Set-Cookie", HeaderValue::from_static("b=2"));
        h.insert("X-Api-Key", HeaderValue::from_static("canary-key"));
        h.insert("X-Auth-Token", HeaderValue::from_static("canary-token"));
        h.insert("X-Client-Secret", HeaderValue::from_static("canary-secret"));
        h.insert("Webhook-Signature", HeaderValue::from_static("v1,canary"));
        h.insert("X-Password", HeaderValue::from_static("hunter2"));
        h.insert("Content-Type", HeaderValue::from_static("application/json"));
        h.append("Accept", HeaderValue::from_static("application/json"));
        h.append("Accept", HeaderValue::from_static("text/plain"));

        let r = redact_headers(&h);
        for name in [
            "authorization",
            "proxy-authorization",
            "cookie",
            "set-cookie",
            "x-api-key",
            "x-auth-token",
            "x-client-secret",
            "webhook-signature",
            "x-password",
        ] {
            assert_eq!(r[name], REDACTED, "{name}");
        }
        assert_eq!(r["content-type"], "application/json");
        assert_eq!(r["accept"], "application/json, text/plain");
        let all = format!("{r:?}");
        assert!(!all.contains("canary") && !all.contains("hunter2"), "{all}");
    }

    #[test]
    fn sensitive_names_ignore_case() {
        assert!(is_sensitive_header("X-API-KEY"));
        assert!(is_sensitive_header("Authorization"));
        assert!(!is_sensitive_header("content-length"));
    }

    #[test]
    fn card_numbers_are_masked_to_last_four() {
        assert_eq!(
            mask_card_numbers("card 4242424242424242 declined"),
            "card ************4242 declined"
        );
        assert_eq!(
            mask_card_numbers("4000 0566 5566 5556"),
            "**** **** **** 5556"
        );
        assert_eq!(
            mask_card_numbers("5555-5555-5555-4444"),
            "****-****-****-4444"
        );
        assert_eq!(mask_card_numbers("378282246310005"), "***********0005");
        assert_eq!(
            mask_card_numbers("6011111111111117123"),
            "***************7123"
        );
    }

    #[test]
    fn short_numbers_are_kept() {
        let text = "order 123456789012 at 2024-01-15 12:30, amount 1999, phone 555-0100";
        assert_eq!(mask_card_numbers(text), text);
    }

    #[test]
    fn excerpt_is_short_flat_and_masked() {
        let body = b"{\"error\":\"card 4242424242424242\nrejected\"}";
        assert_eq!(
            body_excerpt(body, 200),
            "{\"error\":\"card ************4242 rejected\"}"
        );
        let long = "x".repeat(500);
        let cut = body_excerpt(long.as_bytes(), 200);
        assert_eq!(cut.chars().count(), 201);
        assert!(cut.ends_with('…'));

        // A number straddling the cut is masked before cutting.
        let straddle = format!("{}4242424242424242", "y".repeat(195));
        let cut = body_excerpt(straddle.as_bytes(), 200);
        assert!(cut.ends_with("*****…"), "{cut}");
        assert_eq!(body_excerpt(b"", 200), "");
    }
}
