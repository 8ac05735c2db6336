//! RFC 9457 problem details: the one error type every Switchyard HTTP handler returns.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer. Internal details are logged where they arise, never sent.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[schemars(title = "Switchyard problem details (RFC 9457)")]
pub struct Problem {
    /// What kind of problem: `urn:switchyard:problem:{slug}`, one URN per kind of refusal.
    #[serde(rename = "type")]
    #[schemars(extend("format" = "uri", "pattern" = "^urn:switchyard:problem:"))]
    kind: String,
    /// A short summary of the problem's type; the same for every problem of that type.
    title: &'static str,
    /// The HTTP status code of the answer, repeated.
    #[serde(serialize_with = "status_code")]
    #[schemars(with = "u16", range(min = 400, max = 599))]
    status: StatusCode,
    /// What is wrong with this request, safe to show (never an internal detail).
    detail: String,
    /// The offending field as a dotted path (`payload.amount`), when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(skip)]
    retry_after: Option<u32>,
    #[serde(skip)]
    slug: &'static str,
}

fn status_code<S: serde::Serializer>(s: &StatusCode, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_u16(s.as_u16())
}

impl Problem {
    fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind: format!("urn:switchyard:problem:{slug}"),
            title,
            status,
            detail: detail.into(),
            field: None,
            retry_after: None,
            slug,
        }
    }

    /// What kind of refusal this is, as a metric label value: one word of a fixed set
    /// (`unauthenticated`, `bad_signature`, `too_large`, `unsupported_media_type`,
    /// `malformed`, `invalid`, `idempotency_conflict`, `unavailable`, `bad_request`,
    /// `conflict`, `not_found`, `body_unread`), never the detail.
    pub fn label(&self) -> &'static str {
        match self.slug {
            "bad-signature" => "bad_signature",
            "too-large" => "too_large",
            "body-unread" => "body_unread",
            "unsupported-media-type" => "unsupported_media_type",
            "bad-request" => "bad_request",
            "not-found" => "not_found",
            other => other,
        }
    }

    /// The same problem, told in other words (the type, title and status stay).
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// The same problem under another title (the type and status stay).
    pub fn with_title(mut self, title: &'static str) -> Self {
        self.title = title;
        self
    }

    /// Names the offending field.
    pub fn with_field(mut self, field: Option<String>) -> Self {
        self.field = field;
        self
    }

    /// 400: the body is not a well-formed command.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            "Malformed command",
            detail,
        )
    }

    /// 401: no valid bearer token.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Unauthenticated",
            "a valid `Authorization: Bearer <token>` header is required",
        )
    }

    /// 401: a callback whose signature or timestamp does not verify. Says no more than that.
    pub fn bad_signature() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "bad-signature",
            "Signature verification failed",
            "the webhook signature is missing, invalid or outside the timestamp tolerance",
        )
    }

    /// 413: the body exceeds the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Body too large",
            format!("the body exceeds the limit of {limit} bytes"),
        )
    }

    /// 408: the body stalled (no bytes for `[http] body_timeout_ms`) or the client went away
    /// before sending it whole. Not 413: nothing says the body was too large.
    pub fn body_unread() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "body-unread",
            "Body not received",
            "the body did not arrive whole in time; nothing was accepted, send it again",
        )
    }

    /// 415: not JSON.
    pub fn not_json() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the command as `Content-Type: application/json`",
        )
    }

    /// 422: well-formed but not acceptable.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "Invalid command",
            detail,
        )
    }

    /// 422: the idempotency key (or the id) already names a command that asks for something
    /// else (contract 7); nothing was accepted.
    pub fn idempotency_conflict(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_conflict",
            "Idempotency conflict",
            detail,
        )
    }

    /// 503: the broker could not confirm; try again later.
    pub fn unavailable(retry_after: u32) -> Self {
        let mut p = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Temporarily unavailable",
            "the command could not be durably queued; nothing was accepted, retry later",
        );
        p.retry_after = Some(retry_after);
        p
    }

    /// 503 from the ledger: its database did not answer.
    pub fn store_unavailable() -> Self {
        Self::unavailable(1).with_detail("the ledger's database did not answer; retry later")
    }

    /// 503 from the ledger: an operator's resolution is recorded but its event is not
    /// confirmed (or there is no broker connection to publish it).
    pub fn resolution_unpublished() -> Self {
        Self::unavailable(5).with_detail(
            "the resolution was not published (the broker did not confirm, or this server has \
             no broker connection); send the same resolution again",
        )
    }

    /// 400 to a webhook: verified, but not a callback Switchyard can read.
    pub fn webhook_malformed(detail: impl Into<String>) -> Self {
        Self::malformed(detail).with_title("Malformed webhook")
    }

    /// 503 to a webhook: not durably queued, so the provider should deliver it again.
    pub fn webhook_unavailable(retry_after: u32) -> Self {
        Self::unavailable(retry_after)
            .with_detail("the webhook could not be durably queued; deliver it again later")
    }

    /// 400: a query parameter or path segment is not acceptable.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    /// 409: the request does not fit the resource's current state.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut res = (self.status, body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_says_what_failed_in_its_own_words() {
        // The ingress's 503 is about a command; the ledger's and a webhook's are not.
        let ingress = Problem::unavailable(5);
        for (other, words) in [
            (Problem::store_unavailable(), "database"),
            (Problem::resolution_unpublished(), "resolution"),
            (Problem::webhook_unavailable(5), "webhook"),
        ] {
            assert_eq!(other.status(), ingress.status());
            assert_eq!(other.label(), "unavailable");
            assert!(other.detail.contains(words), "{}", other.detail);
            assert!(!other.detail.contains("command"), "{}", other.detail);
        }
        let webhook = Problem::webhook_malformed("no event id");
        assert_eq!(
            (webhook.title, webhook.label()),
            ("Malformed webhook", "malformed")
        );
    }

    #[test]
    fn a_problem_label_is_a_word_of_a_fixed_set_never_its_detail() {
        let problems = [
            Problem::malformed("the body is not valid JSON: expected value at line 1"),
            Problem::unauthenticated(),
            Problem::bad_signature(),
            Problem::too_large(10),
            Problem::not_json(),
            Problem::invalid("provider \"x\" is unknown"),
            Problem::idempotency_conflict("command 0193 already holds this key"),
            Problem::unavailable(5),
            Problem::bad_request("the command id must be a UUID"),
            Problem::conflict("already resolved"),
            Problem::not_found("no provider \"evil\" takes webhooks here"),
            Problem::body_unread(),
        ];
        let labels: Vec<&str> = problems.iter().map(Problem::label).collect();
        assert_eq!(
            labels,
            [
                "malformed",
                "unauthenticated",
                "bad_signature",
                "too_large",
                "unsupported_media_type",
                "invalid",
                "idempotency_conflict",
                "unavailable",
                "bad_request",
                "conflict",
                "not_found",
                "body_unread"
            ]
        );
    }
}
