//! Commands: what a core application asks Switchyard to do (contract section 1).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::name::{Name, RoutingKey};

/// At most this many metadata entries.
pub const MAX_METADATA_ENTRIES: usize = 32;
/// An idempotency key is 1 to this many characters.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Free-form string pairs echoed on every event: at most 32 entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "BTreeMap<String, String>")]
#[schemars(extend("maxProperties" = MAX_METADATA_ENTRIES))]
pub struct Metadata(
    #[schemars(extend("maxProperties" = MAX_METADATA_ENTRIES))] BTreeMap<String, String>,
);

impl Metadata {
    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries.
    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl TryFrom<BTreeMap<String, String>> for Metadata {
    type Error = String;
    fn try_from(m: BTreeMap<String, String>) -> Result<Self, Self::Error> {
        if m.len() > MAX_METADATA_ENTRIES {
            return Err(format!(
                "metadata has {} entries, at most {MAX_METADATA_ENTRIES} are allowed",
                m.len()
            ));
        }
        Ok(Self(m))
    }
}

/// An idempotency key: 1 to 255 characters, the command's identity in place of its `id`.
/// Within the idempotency window, a command with the same key and the same kind, provider,
/// operation and payload is a duplicate, never executed again; one with the same key and
/// anything else of these is a conflict, refused. The provider's idempotency key derives
/// from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(extend("minLength" = 1, "maxLength" = MAX_IDEMPOTENCY_KEY_LEN))]
pub struct IdempotencyKey(#[schemars(length(min = 1, max = 255))] String);

impl IdempotencyKey {
    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let n = s.chars().count();
        if n == 0 || n > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(format!(
                "idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters, got {n}"
            ));
        }
        Ok(Self(s))
    }
}

impl From<IdempotencyKey> for String {
    fn from(k: IdempotencyKey) -> Self {
        k.0
    }
}

/// A command as it travels on `switchyard.commands` (the v1 envelope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Switchyard command v1")]
pub struct Command {
    /// Unique per command.
    pub id: Uuid,
    /// Integration kind; must match the routing key.
    pub kind: Name,
    /// Provider; must match the routing key.
    pub provider: Name,
    /// Operation; must match the routing key.
    pub operation: Name,
    /// Operation input, validated against the operation's JSON Schema.
    pub payload: Map<String, Value>,
    /// The command's identity, in place of `id`, within the idempotency window
    /// (`worker.idempotency_window`, 24 h by default): the same key with the same kind,
    /// provider, operation and payload is a duplicate, never executed again; with another
    /// kind, provider, operation or payload, a conflict, refused. The key sent to the provider
    /// derives from it, so it is the same on every retry and replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<IdempotencyKey>,
    /// Schedule-to-close: past it the command ends `failed` with class `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// Echoed on every event.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
    /// Set by the publisher.
    pub created_at: DateTime<Utc>,
}

/// A command as the HTTP ingress accepts it: `id` and `created_at` may be omitted.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandDraft {
    /// Optional: derived from `idempotency_key` (UUIDv5), else a fresh UUIDv7.
    #[serde(default)]
    pub id: Option<Uuid>,
    /// Integration kind.
    pub kind: Name,
    /// Provider.
    pub provider: Name,
    /// Operation.
    pub operation: Name,
    /// Operation input.
    pub payload: Map<String, Value>,
    /// The command's identity, as for a published command (also taken from the
    /// `Idempotency-Key` header): a repeat with the same kind, provider, operation and payload
    /// is answered with the original and never executed again; one asking for something else
    /// is refused as a conflict. Without `id`, the id derives from it.
    #[serde(default)]
    pub idempotency_key: Option<IdempotencyKey>,
    /// Schedule-to-close.
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
    /// Echoed on every event.
    #[serde(default)]
    pub metadata: Metadata,
    /// Optional: defaults to the time the ingress received it.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
}

/// Why a message is not a valid command. Carries the id when it was readable, so a `failed`
/// event can still be emitted for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidCommand {
    /// The command id, when it could be read from the body.
    pub id: Option<Uuid>,
    /// The offending field as a dotted path (`payload.amount`), when known.
    pub field: Option<String>,
    /// What is wrong, safe to show to the sender.
    pub message: String,
}

impl InvalidCommand {
    /// An error about one field.
    pub fn field(id: Option<Uuid>, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            id,
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

/// Decodes JSON into `T`, reporting the path of the offending field.
pub fn decode_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, InvalidCommand> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        InvalidCommand {
            id: None,
            field: (path != "." && !path.is_empty()).then_some(path),
            message: inner.to_string(),
        }
    })
}

/// Reads `id` from a body that failed to decode, so the failure can still be reported.
pub fn sniff_id(bytes: &[u8]) -> Option<Uuid> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: Uuid,
    }
    serde_json::from_slice::<IdOnly>(bytes).ok().map(|x| x.id)
}

impl Command {
    /// Decodes a command from an AMQP body and checks it against the routing key it came with.
    pub fn decode(bytes: &[u8], routing_key: &str) -> Result<Self, InvalidCommand> {
        let command: Command = decode_json(bytes).map_err(|mut e| {
            e.id = sniff_id(bytes);
            e
        })?;
        let rk = command.routing_key().to_string();
        if rk != routing_key {
            return Err(InvalidCommand::field(
                Some(command.id),
                "kind",
                format!("routing key {routing_key:?} does not match the body's {rk:?}"),
            ));
        }
        Ok(command)
    }

    /// A shell of a command whose body is unusable: enough to address its events (id and
    /// routing key), nothing else.
    pub fn shell(id: Uuid, routing_key: RoutingKey, created_at: DateTime<Utc>) -> Self {
        Self {
            id,
            kind: routing_key.kind,
            provider: routing_key.provider,
            operation: routing_key.operation,
            payload: Map::new(),
            idempotency_key: None,
            deadline: None,
            metadata: Metadata::default(),
            created_at,
        }
    }

    /// Where this command is routed.
    pub fn routing_key(&self) -> RoutingKey {
        RoutingKey {
            kind: self.kind.clone(),
            provider: self.provider.clone(),
            operation: self.operation.clone(),
        }
    }

    /// The body as published: compact JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Whether the deadline has passed at `now`.
    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }

    /// Who this command is (contract 7): its idempotency key when it has one, else its id.
    pub fn identity(&self) -> Identity {
        match &self.idempotency_key {
            Some(k) => Identity(format!("key:{}", k.as_str())),
            None => Identity::of_id(self.id),
        }
    }

    /// What this command asks for (contract 7): a SHA-256 over its kind, provider, operation
    /// and the canonical JSON of its payload (keys sorted, no whitespace). Metadata, deadline
    /// and timestamps are not part of it: a retried publish may change them.
    pub fn fingerprint(&self) -> Fingerprint {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for part in [&self.kind, &self.provider, &self.operation] {
            h.update(part.as_str().as_bytes());
            h.update([0]);
        }
        let mut sink = DigestWriter(h);
        write_canonical_object(&self.payload, &mut sink);
        Fingerprint(format!("{:x}", sink.0.finalize()))
    }
}

/// A command's identity: `key:{idempotency_key}` or `id:{uuid}`. Two commands with one
/// identity are one command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity(String);

impl Identity {
    /// The identity of a command without an idempotency key.
    pub fn of_id(id: Uuid) -> Self {
        Self(format!("id:{id}"))
    }

    /// The identity as stored and hashed.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The SHA-256 (hex) of what a command asks for; see [`Command::fingerprint`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex digest, owned (to store it).
    pub fn into_string(self) -> String {
        self.0
    }

    /// A fingerprint read back from storage.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }
}

/// Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace, strings and numbers
/// as serde_json writes them. Independent of the map's own order. Written straight into the
/// digest: a command's payload is neither copied nor rendered into a buffer first.
fn write_canonical(v: &Value, out: &mut DigestWriter) {
    match v {
        Value::Object(m) => write_canonical_object(m, out),
        Value::Array(a) => {
            out.bytes(b"[");
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.bytes(b",");
                }
                write_canonical(x, out);
            }
            out.bytes(b"]");
        }
        scalar => out.json(scalar),
    }
}

fn write_canonical_object(m: &serde_json::Map<String, Value>, out: &mut DigestWriter) {
    let mut entries: Vec<(&String, &Value)> = m.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.bytes(b"{");
    for (i, (k, x)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.bytes(b",");
        }
        out.json(k);
        out.bytes(b":");
        write_canonical(x, out);
    }
    out.bytes(b"}");
}

/// Feeds what serde_json writes to a SHA-256.
struct DigestWriter(sha2::Sha256);

impl DigestWriter {
    fn bytes(&mut self, b: &[u8]) {
        sha2::Digest::update(&mut self.0, b);
    }

    /// A string or a scalar as JSON. Writing plain data into a digest cannot fail.
    fn json<T: serde::Serialize + ?Sized>(&mut self, v: &T) {
        let _ = serde_json::to_writer(&mut *self, v);
    }
}

impl std::io::Write for DigestWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Value {
        serde_json::json!({
            "id": "0190b3f4-7f6e-7c3a-9d2e-3b1f2a4c5d6e",
            "kind": "payment", "provider": "stripe", "operation": "charge",
            "payload": {"amount": 100},
            "metadata": {"order": "42"},
            "created_at": "2026-11-25T10:00:00Z"
        })
    }

    #[test]
    fn identity_is_the_key_else_the_id_and_the_fingerprint_ignores_key_order() {
        let a: Command = serde_json::from_value(body()).unwrap();
        assert_eq!(a.identity().as_str(), format!("id:{}", a.id));
        let mut b = a.clone();
        b.idempotency_key = Some(IdempotencyKey::try_from("order-42".to_owned()).unwrap());
        assert_eq!(b.identity().as_str(), "key:order-42");
        let mut c = a.clone();
        c.payload =
            serde_json::from_str(r#"{"z":{"b":1,"a":[2,{"y":1,"x":2}]},"amount":100}"#).unwrap();
        let mut d = a.clone();
        d.payload =
            serde_json::from_str(r#"{"amount":100,"z":{"a":[2,{"x":2,"y":1}],"b":1}}"#).unwrap();
        assert_eq!(c.fingerprint(), d.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        let mut e = a.clone();
        e.metadata = Metadata::default();
        e.created_at = Utc::now();
        assert_eq!(a.fingerprint(), e.fingerprint());
        let mut f = a.clone();
        f.operation = "refund".parse().unwrap();
        assert_ne!(a.fingerprint(), f.fingerprint());
    }

    /// Fingerprints are stored by the journal and compared with every redelivery: a change
    /// of their bytes would turn a redelivered command into a conflicting one. Pinned.
    #[test]
    fn the_fingerprint_of_a_payload_is_stable() {
        let mut c: Command = serde_json::from_value(body()).unwrap();
        c.payload = serde_json::from_str(
            r#"{"z":[1.5,-2,1e300,true,null,{}],"\u00e9\"\n":"\u20ac \\ \t\u0001","amount":100,
                "nested":{"b":[],"a":{"k":"v","K":"V"}},"":"empty"}"#,
        )
        .unwrap();
        assert_eq!(
            c.fingerprint().as_str(),
            "7623a1df3c4ba76a599cbc543e9b46d5d76e7306fb7f0e914e931ee81430c2f8"
        );
    }

    #[test]
    fn decodes_and_checks_the_routing_key() {
        let bytes = serde_json::to_vec(&body()).unwrap();
        let c = Command::decode(&bytes, "payment.stripe.charge").unwrap();
        assert_eq!(c.metadata.entries()["order"], "42");
        let e = Command::decode(&bytes, "payment.adyen.charge").unwrap_err();
        assert_eq!(e.id, Some(c.id));
    }

    #[test]
    fn reports_the_offending_field_and_the_id() {
        let mut b = body();
        b["provider"] = "Stripe!".into();
        let e = Command::decode(&serde_json::to_vec(&b).unwrap(), "x").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("provider"));
        assert!(e.id.is_some());
        let e = Command::decode(b"\x00\xffgarbage", "x").unwrap_err();
        assert_eq!(e.id, None);
    }

    #[test]
    fn rejects_unknown_fields_and_oversized_metadata() {
        let mut b = body();
        b["surprise"] = 1.into();
        assert!(
            Command::decode(&serde_json::to_vec(&b).unwrap(), "payment.stripe.charge").is_err()
        );
        let mut b = body();
        let meta: Map<String, Value> = (0..33).map(|i| (format!("k{i}"), "v".into())).collect();
        b["metadata"] = meta.into();
        let e =
            Command::decode(&serde_json::to_vec(&b).unwrap(), "payment.stripe.charge").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("metadata"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!(
            "{{\"payload\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(Command::decode(deep.as_bytes(), "a.b.c").is_err());
    }
}
