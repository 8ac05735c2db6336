//! How a generic provider's operation is called and how its answer is read, declared per
//! operation in configuration: method, path template, query, headers, body, idempotency
//! header; JSON pointers for the reference, the status and the result.

use std::collections::BTreeMap;

use http::Method;
use serde::Deserialize;
use serde_json::{Map, Value};
use switchyard_core::{ErrorClass, ProviderError};

/// Everything but `-`, `_`, `.` and `~` is escaped in a path segment; a value of only dots
/// is refused (URL parsing folds `%2e` segments like `.`).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

/// An operation's call, as declared (`[[providers.operations]]` tables); every field has a
/// default that gives the contract's generic call: `POST {base_url}/{operation}` with the
/// payload as a JSON body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationShape {
    /// The HTTP method (`POST` unless set).
    #[serde(default)]
    pub method: Option<String>,
    /// Relative to `base_url`; `{field}` (or `{a.b}` for a nested field) is replaced by the
    /// payload's value, percent-encoded as one path segment. The operation's name unless set.
    #[serde(default)]
    pub path: Option<String>,
    /// Query parameters, values templated like `path`.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Extra headers, values templated like `path` (`{command_id}` is the command's id).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `json` (the payload, the default), `form` (the payload form-encoded, nested fields as
    /// `a[b]`, the way Stripe reads them), `none`, or a JSON template whose `"{field}"`
    /// strings are replaced by the payload's values.
    #[serde(default)]
    pub body: Option<BodySpec>,
    /// How a templated body is encoded: `json` (the default) or `form` (Twilio's Messages
    /// API, for one, takes `To=...&Body=...`).
    #[serde(default)]
    pub encoding: Option<Encoding>,
    /// Where the provider's reference is in the answer (a JSON pointer); `/reference`, then
    /// `/id` unless set.
    #[serde(default)]
    pub reference: Option<String>,
    /// Where the outcome is in the answer, and which values mean what. Unset: a 202 is
    /// accepted work, any other 2xx is done.
    #[serde(default)]
    pub status: Option<StatusSpec>,
    /// The part of the answer kept as the command's result (a JSON pointer); all of it
    /// unless set.
    #[serde(default)]
    pub result: Option<String>,
}

/// The body of a request.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum BodySpec {
    /// `json`, `form` or `none`.
    Mode(BodyMode),
    /// A JSON template.
    Template(Value),
}

/// The body modes that need no template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyMode {
    /// The payload as JSON.
    Json,
    /// The payload form-encoded.
    Form,
    /// No body.
    None,
}

/// How a templated body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// JSON.
    Json,
    /// `application/x-www-form-urlencoded`, nested fields as `a[b]`.
    Form,
}

/// Which answer values mean done, still going, or failed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusSpec {
    /// Where the status is (a JSON pointer), e.g. `/status`.
    pub pointer: String,
    /// Values meaning the work is done.
    #[serde(default)]
    pub succeeded: Vec<String>,
    /// Values meaning it goes on (the command waits for a callback or a poll).
    #[serde(default)]
    pub pending: Vec<String>,
    /// Values meaning it failed for good.
    #[serde(default)]
    pub failed: Vec<String>,
}

/// What the status field of an answer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Done.
    Succeeded,
    /// Accepted, not done.
    Pending,
    /// Failed for good.
    Failed,
}

/// A built request, before auth.
#[derive(Debug, Clone, PartialEq)]
pub struct Shaped {
    /// The method.
    pub method: Method,
    /// The path relative to `base_url`, query included.
    pub path_and_query: String,
    /// Headers (name, value), templated.
    pub headers: Vec<(String, String)>,
    /// The body and its content type, if any.
    pub body: Option<(Vec<u8>, &'static str)>,
}

/// A payload that cannot fill the operation's templates: the command is invalid, and no
/// request is sent.
fn missing(field: &str, place: &str) -> ProviderError {
    ProviderError::new(
        ErrorClass::Invalid,
        "invalid_payload",
        format!("payload.{field}: missing, and the request's {place} needs it"),
    )
}

/// The value at a dotted field (`a.b`) of the payload, or `command_id`.
fn lookup<'a>(payload: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    let mut parts = field.split('.');
    let mut here = payload.get(parts.next()?)?;
    for p in parts {
        here = match here {
            Value::Object(m) => m.get(p)?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(here)
}

/// A string, number or boolean as text (what a path, a status or an error code compares as).
pub(crate) fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Replaces every `{field}` of `template`; `escape` encodes each value.
fn fill(
    template: &str,
    payload: &Map<String, Value>,
    command_id: &str,
    place: &str,
    escape: impl Fn(&str) -> String,
) -> Result<String, ProviderError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| {
            ProviderError::new(
                ErrorClass::Permanent,
                "bad_template",
                format!("the {place} template has an unclosed {{"),
            )
        })?;
        let field = &after[..close];
        let value = if field == "command_id" {
            command_id.to_owned()
        } else {
            lookup(payload, field)
                .and_then(scalar_text)
                .ok_or_else(|| missing(field, place))?
        };
        if place == "path" && (value.is_empty() || value.chars().all(|c| c == '.')) {
            return Err(ProviderError::new(
                ErrorClass::Invalid,
                "invalid_payload",
                format!("payload.{field}: cannot be a path segment"),
            ));
        }
        out.push_str(&escape(&value));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Fills a JSON template: a string that is exactly `"{field}"` becomes the field's value
/// with its type; other strings are filled as text.
fn fill_json(
    template: &Value,
    payload: &Map<String, Value>,
    command_id: &str,
) -> Result<Value, ProviderError> {
    Ok(match template {
        Value::String(s) => {
            let whole = s
                .strip_prefix('{')
                .and_then(|r| r.strip_suffix('}'))
                .filter(|f| !f.contains(['{', '}']));
            match whole {
                Some("command_id") => Value::String(command_id.to_owned()),
                Some(field) => lookup(payload, field)
                    .cloned()
                    .ok_or_else(|| missing(field, "body"))?,
                None => Value::String(fill(s, payload, command_id, "body", str::to_owned)?),
            }
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|v| fill_json(v, payload, command_id))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), fill_json(v, payload, command_id)?)))
                .collect::<Result<_, ProviderError>>()?,
        ),
        other => other.clone(),
    })
}

/// Form-encodes a JSON object the way Stripe reads nested parameters: `a[b]=1`,
/// `items[0][id]=x`; nulls are left out.
pub fn form_encode(payload: &Map<String, Value>) -> String {
    fn walk(s: &mut form_urlencoded::Serializer<'_, String>, key: &str, v: &Value) {
        match v {
            Value::Null => {}
            Value::Object(m) => {
                for (k, v) in m {
                    walk(s, &format!("{key}[{k}]"), v);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(s, &format!("{key}[{i}]"), v);
                }
            }
            Value::String(t) => {
                s.append_pair(key, t);
            }
            other => {
                s.append_pair(key, &other.to_string());
            }
        }
    }
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in payload {
        walk(&mut s, k, v);
    }
    s.finish()
}

impl OperationShape {
    /// Checks what can be checked without a payload; `key` names the entry in errors.
    pub fn check(&self, key: &str) -> Result<(), String> {
        if let Some(m) = &self.method {
            Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("{key}.method: {m:?} is not an HTTP method"))?;
        }
        if let Some(p) = &self.path
            && (p.starts_with('/') || p.contains("://"))
        {
            return Err(format!(
                "{key}.path: must be relative to base_url, e.g. \"v2/orders/{{order_id}}/capture\""
            ));
        }
        for (name, pointer) in [
            ("reference", &self.reference),
            ("result", &self.result),
            (
                "status.pointer",
                &self.status.as_ref().map(|s| s.pointer.clone()),
            ),
        ] {
            if let Some(p) = pointer
                && !p.is_empty()
                && !p.starts_with('/')
            {
                return Err(format!(
                    "{key}.{name}: a JSON pointer starts with '/', e.g. \"/id\""
                ));
            }
        }
        match (&self.body, self.encoding) {
            (Some(BodySpec::Template(t)), Some(Encoding::Form)) if !t.is_object() => {
                return Err(format!(
                    "{key}.body: a form-encoded template is a table of fields"
                ));
            }
            (Some(BodySpec::Template(_)), _) | (_, None) => {}
            (_, Some(_)) => {
                return Err(format!(
                    "{key}.encoding: applies to a body template; use body = \"form\" to \
                     form-encode the payload"
                ));
            }
        }
        for name in self.headers.keys() {
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{key}.headers: {name:?} is not a header name"))?;
        }
        Ok(())
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.method
            .as_deref()
            .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .unwrap_or(Method::POST)
    }

    /// Builds the request of `operation` for `payload`; a field the templates need and the
    /// payload lacks is an `invalid` error, raised before anything is sent.
    pub fn build(
        &self,
        operation: &str,
        payload: &Map<String, Value>,
        command_id: &str,
    ) -> Result<Shaped, ProviderError> {
        let mut path_and_query = fill(
            self.path.as_deref().unwrap_or(operation),
            payload,
            command_id,
            "path",
            |v| percent_encoding::utf8_percent_encode(v, PATH_SEGMENT).to_string(),
        )?;
        if !self.query.is_empty() {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &self.query {
                q.append_pair(k, &fill(v, payload, command_id, "query", str::to_owned)?);
            }
            path_and_query.push(if path_and_query.contains('?') {
                '&'
            } else {
                '?'
            });
            path_and_query.push_str(&q.finish());
        }
        let headers = self
            .headers
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    fill(v, payload, command_id, "headers", str::to_owned)?,
                ))
            })
            .collect::<Result<_, ProviderError>>()?;
        let body = match &self.body {
            None | Some(BodySpec::Mode(BodyMode::Json)) => Some((
                serde_json::to_vec(payload).unwrap_or_default(),
                "application/json",
            )),
            Some(BodySpec::Mode(BodyMode::Form)) => Some((
                form_encode(payload).into_bytes(),
                "application/x-www-form-urlencoded",
            )),
            Some(BodySpec::Mode(BodyMode::None)) => None,
            Some(BodySpec::Template(t)) => {
                let filled = fill_json(t, payload, command_id)?;
                match (self.encoding, filled) {
                    (Some(Encoding::Form), Value::Object(fields)) => Some((
                        form_encode(&fields).into_bytes(),
                        "application/x-www-form-urlencoded",
                    )),
                    (_, filled) => Some((
                        serde_json::to_vec(&filled).unwrap_or_default(),
                        "application/json",
                    )),
                }
            }
        };
        Ok(Shaped {
            method: self.method(),
            path_and_query,
            headers,
            body,
        })
    }

    /// The provider's reference in an answer.
    pub fn reference(&self, answer: &Value) -> Option<String> {
        let found = match &self.reference {
            Some(p) => answer.pointer(p),
            None => answer.get("reference").or_else(|| answer.get("id")),
        };
        found.and_then(scalar_text).filter(|r| !r.is_empty())
    }

    /// What the status field says; `None` when no status is declared. A value the
    /// declaration does not list is an unreadable answer: the outcome is unknown.
    pub fn reading(&self, answer: &Value) -> Result<Option<Reading>, ProviderError> {
        let Some(spec) = &self.status else {
            return Ok(None);
        };
        let value = answer.pointer(&spec.pointer).and_then(scalar_text);
        let Some(value) = value else {
            return Err(ProviderError::unreadable_answer(format!(
                "the answer has no status at {}",
                spec.pointer
            )));
        };
        let is = |list: &[String]| list.contains(&value);
        if is(&spec.succeeded) {
            Ok(Some(Reading::Succeeded))
        } else if is(&spec.pending) {
            Ok(Some(Reading::Pending))
        } else if is(&spec.failed) {
            Ok(Some(Reading::Failed))
        } else {
            Err(ProviderError::unreadable_answer(format!(
                "status {value:?} at {} is not declared",
                spec.pointer
            )))
        }
    }

    /// The part of the answer kept as the result.
    pub fn result(&self, answer: &Value) -> Value {
        match &self.result {
            Some(p) => answer.pointer(p).cloned().unwrap_or(Value::Null),
            None => answer.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_default_shape_is_the_contract_call() {
        let s = OperationShape::default()
            .build("charge", &payload(json!({"amount": 5})), "c1")
            .unwrap();
        assert_eq!(s.method, Method::POST);
        assert_eq!(s.path_and_query, "charge");
        assert_eq!(
            s.body,
            Some((br#"{"amount":5}"#.to_vec(), "application/json"))
        );
    }

    #[test]
    fn path_query_and_headers_are_filled_and_escaped() {
        let shape: OperationShape = serde_json::from_value(json!({
            "method": "put", "path": "v3/contacts/{email}/x/{n.id}",
            "query": {"idem": "{command_id}", "q": "a b"},
            "headers": {"X-Tenant": "t-{tenant}"}, "body": "none"
        }))
        .unwrap();
        let s = shape
            .build(
                "upsert",
                &payload(json!({"email": "a/b@c.d", "n": {"id": 7}, "tenant": "eu"})),
                "c1",
            )
            .unwrap();
        assert_eq!(s.method, Method::PUT);
        assert_eq!(
            s.path_and_query,
            "v3/contacts/a%2Fb%40c%2Ed/x/7?idem=c1&q=a+b"
        );
        assert_eq!(s.headers, vec![("X-Tenant".into(), "t-eu".into())]);
        assert_eq!(s.body, None);
    }

    #[test]
    fn a_missing_field_is_invalid_before_any_call() {
        let shape: OperationShape =
            serde_json::from_value(json!({"path": "orders/{order_id}/capture"})).unwrap();
        let e = shape
            .build("capture", &payload(json!({})), "c1")
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Invalid);
        assert!(e.message.contains("payload.order_id"), "{}", e.message);
        let e = shape
            .build("capture", &payload(json!({"order_id": ".."})), "c1")
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Invalid);
    }

    #[test]
    fn form_bodies_nest_the_way_stripe_reads_them() {
        let body = form_encode(&payload(json!({
            "amount": 100, "metadata": {"order": "42"}, "items": [{"id": "a"}], "skip": null
        })));
        assert_eq!(
            body,
            "amount=100&items%5B0%5D%5Bid%5D=a&metadata%5Border%5D=42"
        );
    }

    #[test]
    fn a_form_template_renames_fields_the_way_twilio_reads_them() {
        let shape: OperationShape = serde_json::from_value(json!({
            "encoding": "form",
            "body": {"To": "{to}", "Body": "{body}", "From": "+15005550006"}
        }))
        .unwrap();
        shape.check("x").unwrap();
        let s = shape
            .build(
                "send_sms",
                &payload(json!({"to": "+14155550100", "body": "hi there"})),
                "c1",
            )
            .unwrap();
        assert_eq!(
            s.body,
            Some((
                b"Body=hi+there&From=%2B15005550006&To=%2B14155550100".to_vec(),
                "application/x-www-form-urlencoded"
            ))
        );
        let bad: OperationShape =
            serde_json::from_value(json!({"encoding": "form", "body": "json"})).unwrap();
        assert!(bad.check("x").unwrap_err().contains("encoding"));
    }

    #[test]
    fn json_templates_keep_types_and_fill_text() {
        let shape: OperationShape = serde_json::from_value(json!({"body": {
            "intent": "CAPTURE",
            "purchase_units": [{"reference_id": "{order}", "amount": {"value": "{amount}",
              "currency_code": "{currency}"}, "note": "order {order}"}]
        }}))
        .unwrap();
        let s = shape
            .build(
                "create_order",
                &payload(json!({"order": "o-1", "amount": "10.00", "currency": "USD"})),
                "c1",
            )
            .unwrap();
        let body: Value = serde_json::from_slice(&s.body.unwrap().0).unwrap();
        assert_eq!(
            body["purchase_units"][0],
            json!({"reference_id": "o-1", "amount": {"value": "10.00", "currency_code": "USD"},
                   "note": "order o-1"})
        );
    }

    #[test]
    fn answers_are_read_by_pointer() {
        let shape: OperationShape = serde_json::from_value(json!({
            "reference": "/sid", "result": "/data",
            "status": {"pointer": "/status", "succeeded": ["delivered"],
                       "pending": ["queued", "sent"], "failed": ["undelivered"]}
        }))
        .unwrap();
        let a = json!({"sid": "SM1", "status": "queued", "data": {"x": 1}});
        assert_eq!(shape.reference(&a).as_deref(), Some("SM1"));
        assert_eq!(shape.reading(&a).unwrap(), Some(Reading::Pending));
        assert_eq!(shape.result(&a), json!({"x": 1}));
        let odd = json!({"sid": "SM1", "status": "weird"});
        assert_eq!(shape.reading(&odd).unwrap_err().class, ErrorClass::Unknown);
    }

    #[test]
    fn bad_declarations_are_named() {
        for (shape, needle) in [
            (json!({"method": "GET X"}), "method"),
            (json!({"path": "/abs"}), "path"),
            (json!({"reference": "id"}), "reference"),
            (json!({"headers": {"bad header": "x"}}), "headers"),
        ] {
            let shape: OperationShape = serde_json::from_value(shape).unwrap();
            let e = shape.check("providers[0].operations.x").unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }
}
