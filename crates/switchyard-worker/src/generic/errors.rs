//! Declarative error classification: a provider's table from (HTTP status, an error code at a
//! JSON pointer) to a class, checked in order before the default status-code rules.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use switchyard_core::{ErrorClass, ProviderError};
use switchyard_http::{MAX_RETRY_AFTER, classify, parse_retry_after};

use super::shape::scalar_text;

/// One row of a provider's `errors` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRule {
    /// The status it applies to: `422`, or a class such as `"4xx"`; any status when unset.
    #[serde(default)]
    pub status: Option<StatusMatch>,
    /// Where the provider's error code is in the body (a JSON pointer).
    #[serde(default)]
    pub code_pointer: Option<String>,
    /// The codes at `code_pointer` this row matches; any value (present) when empty.
    #[serde(default)]
    pub codes: Vec<String>,
    /// What such an answer means.
    pub class: RuleClass,
    /// For `rate_limited`: the header carrying the wait (`Retry-After` unless set).
    #[serde(default)]
    pub wait_header: Option<String>,
    /// How that header counts: `http` (`Retry-After`: seconds or a date, the default),
    /// `seconds` (a delay), `epoch` (Unix seconds when the limit resets).
    #[serde(default)]
    pub wait_format: WaitFormat,
}

/// A status, or a class of statuses (`"4xx"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StatusMatch {
    /// One status.
    Code(u16),
    /// `"4xx"`, `"5xx"`, or a status as text.
    Text(String),
}

impl StatusMatch {
    fn matches(&self, status: u16) -> bool {
        match self {
            Self::Code(c) => *c == status,
            Self::Text(t) => match t.strip_suffix("xx") {
                Some(d) => d.parse::<u16>().is_ok_and(|d| status / 100 == d),
                None => t.parse::<u16>().is_ok_and(|c| c == status),
            },
        }
    }

    fn valid(&self) -> bool {
        match self {
            Self::Code(c) => (100..600).contains(c),
            Self::Text(t) => match t.strip_suffix("xx") {
                Some(d) => d.parse::<u16>().is_ok_and(|d| (1..6).contains(&d)),
                None => t.parse::<u16>().is_ok_and(|c| (100..600).contains(&c)),
            },
        }
    }
}

/// The classes a row may assign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleClass {
    /// Retried with the same idempotency key.
    Transient,
    /// Failed for good, dead-lettered.
    Permanent,
    /// The provider may have acted: never retried blindly (a status check or an operator
    /// decides).
    Unknown,
    /// Retried after the wait the provider names.
    RateLimited,
}

/// How a wait header counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitFormat {
    /// `Retry-After`: delta-seconds or an HTTP date.
    #[default]
    Http,
    /// A delay in seconds.
    Seconds,
    /// Unix seconds at which the limit resets.
    Epoch,
}

impl ErrorRule {
    /// Checks the row; `key` names it in errors.
    pub fn check(&self, key: &str) -> Result<(), String> {
        if self.status.as_ref().is_some_and(|s| !s.valid()) {
            return Err(format!("{key}.status: a status (422) or a class (\"4xx\")"));
        }
        if let Some(p) = &self.code_pointer
            && !p.starts_with('/')
        {
            return Err(format!(
                "{key}.code_pointer: a JSON pointer starts with '/', e.g. \"/error/code\""
            ));
        }
        if !self.codes.is_empty() && self.code_pointer.is_none() {
            return Err(format!("{key}.codes: needs code_pointer"));
        }
        if self.status.is_none() && self.code_pointer.is_none() {
            return Err(format!(
                "{key}: a row needs a status, a code_pointer or both (it would match every answer)"
            ));
        }
        if (self.wait_header.is_some() || self.wait_format != WaitFormat::Http)
            && self.class != RuleClass::RateLimited
        {
            return Err(format!(
                "{key}.wait_header: only a rate_limited row waits for a header"
            ));
        }
        Ok(())
    }

    /// The code this row matches in an answer, or `None` when it does not apply.
    fn matched(&self, status: u16, body: Option<&Value>) -> Option<Option<String>> {
        if self.status.as_ref().is_some_and(|s| !s.matches(status)) {
            return None;
        }
        let Some(pointer) = &self.code_pointer else {
            return Some(None);
        };
        let code = body?.pointer(pointer).and_then(scalar_text)?;
        (self.codes.is_empty() || self.codes.contains(&code)).then_some(Some(code))
    }

    fn wait(&self, headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
        let name = self.wait_header.as_deref().unwrap_or("retry-after");
        let value = headers.get(name)?;
        let wait = match self.wait_format {
            WaitFormat::Http => parse_retry_after(value, now)?,
            WaitFormat::Seconds => Duration::from_secs(value.to_str().ok()?.trim().parse().ok()?),
            WaitFormat::Epoch => {
                let at: u64 = value.to_str().ok()?.trim().parse().ok()?;
                let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
                Duration::from_secs(at.saturating_sub(now))
            }
        };
        Some(wait.min(MAX_RETRY_AFTER))
    }
}

/// Classifies an answer by `rules` (the first row that matches decides), then by the default
/// status-code rules ([`classify`]).
pub fn classify_with(
    rules: &[ErrorRule],
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), ProviderError> {
    let json: Option<Value> = if rules.iter().any(|r| r.code_pointer.is_some()) {
        serde_json::from_slice(body).ok()
    } else {
        None
    };
    for rule in rules {
        let Some(code) = rule.matched(status.as_u16(), json.as_ref()) else {
            continue;
        };
        // The default rules give the message (a masked excerpt) and code; the row the class.
        let mut err = match classify(status, headers, body) {
            Err(e) => e,
            Ok(()) => {
                let mut e = ProviderError::new(
                    ErrorClass::Permanent,
                    format!("http_{}", status.as_u16()),
                    format!("provider answered {} with an error code", status.as_u16()),
                );
                e.http_status = Some(status.as_u16());
                e
            }
        };
        if let Some(code) = code {
            err.code = code;
        }
        err.retry_after = None;
        err.class = match rule.class {
            RuleClass::Transient => ErrorClass::Transient,
            RuleClass::Permanent => ErrorClass::Permanent,
            RuleClass::Unknown => ErrorClass::Unknown,
            RuleClass::RateLimited => {
                err.retry_after = rule.wait(headers, now);
                ErrorClass::Transient
            }
        };
        return Err(err);
    }
    classify(status, headers, body)
}

/// The default rules as a table, for `providers explain`.
pub const DEFAULT_RULES: &[(&str, &str)] = &[
    ("2xx", "success"),
    (
        "408, 425, 429",
        "transient (waits for Retry-After when given)",
    ),
    ("5xx", "transient (waits for Retry-After when given)"),
    (
        "409",
        "transient: the same idempotency key is still executing",
    ),
    ("other 4xx, 3xx", "permanent"),
    (
        "timeout, connection lost after sending",
        "timeout (retried with the same key)",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn rules(v: serde_json::Value) -> Vec<ErrorRule> {
        let rules: Vec<ErrorRule> = serde_json::from_value(v).unwrap();
        for (i, r) in rules.iter().enumerate() {
            r.check(&format!("errors[{i}]")).unwrap();
        }
        rules
    }

    fn class(rules: &[ErrorRule], status: u16, body: &str, h: &HeaderMap) -> ProviderError {
        classify_with(
            rules,
            StatusCode::from_u16(status).unwrap(),
            h,
            body.as_bytes(),
            UNIX_EPOCH + Duration::from_secs(1_000_000),
        )
        .unwrap_err()
    }

    #[test]
    fn a_coded_422_can_be_retryable() {
        let r = rules(serde_json::json!([
            {"status": 422, "code_pointer": "/details/0/issue",
             "codes": ["PREVIOUS_REQUEST_IN_PROGRESS"], "class": "transient"}
        ]));
        let h = HeaderMap::new();
        let e = class(
            &r,
            422,
            r#"{"details":[{"issue":"PREVIOUS_REQUEST_IN_PROGRESS"}]}"#,
            &h,
        );
        assert_eq!(
            (e.class, e.code.as_str()),
            (ErrorClass::Transient, "PREVIOUS_REQUEST_IN_PROGRESS")
        );
        assert_eq!(e.http_status, Some(422));
        // Another code, or no body, falls through to the default: permanent.
        let e = class(
            &r,
            422,
            r#"{"details":[{"issue":"INSTRUMENT_DECLINED"}]}"#,
            &h,
        );
        assert_eq!(
            (e.class, e.code.as_str()),
            (ErrorClass::Permanent, "http_422")
        );
        let e = class(&r, 422, "not json", &h);
        assert_eq!(e.class, ErrorClass::Permanent);
    }

    #[test]
    fn a_status_class_can_be_unknown_or_permanent() {
        let r = rules(serde_json::json!([
            {"status": "5xx", "code_pointer": "/error", "codes": ["charged_maybe"], "class": "unknown"},
            {"status": 503, "class": "permanent"}
        ]));
        let h = HeaderMap::new();
        assert_eq!(
            class(&r, 500, r#"{"error":"charged_maybe"}"#, &h).class,
            ErrorClass::Unknown
        );
        assert_eq!(class(&r, 503, "", &h).class, ErrorClass::Permanent);
        assert_eq!(class(&r, 502, "", &h).class, ErrorClass::Transient);
    }

    #[test]
    fn an_error_in_a_200_body_is_caught() {
        let r = rules(serde_json::json!([
            {"status": 200, "code_pointer": "/ok", "codes": ["false"], "class": "permanent"}
        ]));
        let h = HeaderMap::new();
        assert_eq!(
            class(&r, 200, r#"{"ok":false}"#, &h).class,
            ErrorClass::Permanent
        );
        assert!(
            classify_with(&r, StatusCode::OK, &h, br#"{"ok":true}"#, SystemTime::now()).is_ok()
        );
    }

    #[test]
    fn rate_limits_wait_for_the_named_header() {
        let r = rules(serde_json::json!([
            {"status": 429, "class": "rate_limited", "wait_header": "X-RateLimit-Reset",
             "wait_format": "epoch"},
            {"status": 420, "class": "rate_limited", "wait_header": "X-Wait", "wait_format": "seconds"},
            {"status": 503, "class": "rate_limited"}
        ]));
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset", HeaderValue::from_static("1000030"));
        h.insert("x-wait", HeaderValue::from_static("7"));
        h.insert("retry-after", HeaderValue::from_static("99999999"));
        let e = class(&r, 429, "", &h);
        assert_eq!(
            (e.class, e.retry_after),
            (ErrorClass::Transient, Some(Duration::from_secs(30)))
        );
        assert_eq!(
            class(&r, 420, "", &h).retry_after,
            Some(Duration::from_secs(7))
        );
        assert_eq!(class(&r, 503, "", &h).retry_after, Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn bad_rows_are_named() {
        for (row, needle) in [
            (serde_json::json!({"class": "transient"}), "needs a status"),
            (
                serde_json::json!({"status": "6xx", "class": "transient"}),
                "status",
            ),
            (
                serde_json::json!({"status": 400, "codes": ["x"], "class": "transient"}),
                "code_pointer",
            ),
            (
                serde_json::json!({"status": 400, "code_pointer": "x", "class": "transient"}),
                "JSON pointer",
            ),
            (
                serde_json::json!({"status": 400, "class": "permanent", "wait_header": "x"}),
                "rate_limited",
            ),
        ] {
            let rule: ErrorRule = serde_json::from_value(row).unwrap();
            let e = rule.check("errors[0]").unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }
}
