//! The API documents under `docs/api/`, generated beside the JSON Schemas
//! ([`crate::schemas`]): `openapi.json` (OpenAPI 3.1) for the HTTP ingress and the ledger's
//! query API, and `asyncapi.json` (AsyncAPI 3.0) for the exchanges and queues a core app and
//! an operator meet.
//!
//! The bodies are the committed JSON Schemas, referred to by relative path, so the documents
//! hold no second copy of a type. What the schemas cannot say is written here, next to the
//! route table: which routes exist (the same as `switchyard-ingress`'s and
//! `switchyard-ledger`'s routers), which answers each gives, and the AMQP names and headers
//! (taken from `switchyard-amqp`'s constants). The examples are built from the real types
//! (a [`Command`], its [`Lifecycle`] events, [`Problem`]s from their own constructors).

use std::net::SocketAddr;

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value, json};
use switchyard_amqp::messages::{
    ATTEMPT_HEADER, ATTEMPTS_HEADER, CHECK_HEADER, ERROR_CLASS_HEADER, ERROR_HEADER,
    FAILED_AT_HEADER, REFERENCE_HEADER, ROUTING_KEY_HEADER, RUN_HEADER, SOURCE_HEADER,
    SOURCE_QUEUE_HEADER, TRACEPARENT_HEADER, WAIT_UNTIL_HEADER,
};
use switchyard_amqp::topology::{
    ATTEMPTS_EXCHANGE, COMMANDS_EXCHANGE, DEAD_EXCHANGE, EVENTS_EXCHANGE, KIND_HEADER,
    LEDGER_ATTEMPTS_QUEUE, LEDGER_DLQ, LEDGER_EVENTS_QUEUE, TIER_HEADER, UNROUTABLE_DLQ,
    UNROUTABLE_EXCHANGE,
};
use switchyard_config::{IngressConfig, LedgerConfig};
use switchyard_core::attempt::ATTEMPT_TYPE_V1;
use switchyard_core::{
    AttemptRecord, COMMAND_TYPE_V1, Command, EVENT_TYPE_V1, ErrorClass, Event, Lifecycle, Metadata,
    Name, Status,
};
use switchyard_ingress::{CommandAccepted, MAX_WEBHOOK_BYTES, Problem};
use switchyard_ledger::{CommandSummary, CommandView, ListQuery, Page};
use uuid::Uuid;

use crate::schemas::{
    self, ATTEMPT, COMMAND, COMMAND_ACCEPTED, COMMAND_PAGE, COMMAND_REQUEST, COMMAND_VIEW, EVENT,
    PROBLEM, RESOLUTION_REQUEST,
};

/// The OpenAPI document's file name under `docs/api/`.
pub const OPENAPI: &str = "openapi.json";
/// The AsyncAPI document's file name under `docs/api/`.
pub const ASYNCAPI: &str = "asyncapi.json";

/// From `docs/api/` to `schemas/`.
const TO_SCHEMAS: &str = "../../schemas/";
/// The version of the AMQP bindings used.
const AMQP_BINDING: &str = "0.3.0";

/// Both documents, by file name.
pub fn render() -> anyhow::Result<Vec<(&'static str, Value)>> {
    let examples = Examples::build()?;
    Ok(vec![
        (OPENAPI, openapi(&examples)?),
        (ASYNCAPI, asyncapi(&examples)),
    ])
}

fn file_ref(path: &str) -> Value {
    json!({ "$ref": format!("{TO_SCHEMAS}{path}") })
}

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

fn obj(pairs: impl IntoIterator<Item = (String, Value)>) -> Value {
    Value::Object(pairs.into_iter().collect::<Map<String, Value>>())
}

fn to_value(v: &impl serde::Serialize) -> anyhow::Result<Value> {
    serde_json::to_value(v).context("serialising an example")
}

/// One command's story, built with the real types: the examples of both documents.
struct Examples {
    command: Command,
    events: Vec<Event>,
    attempt: AttemptRecord,
    view: CommandView,
    page: Page,
    accepted: CommandAccepted,
    resolved: Event,
}

fn at(ms: i64) -> anyhow::Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .context("an example timestamp")
}

fn name(s: &str) -> anyhow::Result<Name> {
    s.parse::<Name>().map_err(|e| anyhow::anyhow!("{s}: {e}"))
}

impl Examples {
    fn build() -> anyhow::Result<Self> {
        // 2026-11-25T10:00:00.120Z, as in docs/ledger.md.
        let t0 = 1_795_600_800_120;
        let id: Uuid = "0193f0c1-5d1e-7a52-9d0e-2b9c1f0e7a11".parse()?;
        let payload = json!({"amount": 1999, "currency": "usd", "payment_method": "pm_card_visa"});
        let Value::Object(payload) = payload else {
            anyhow::bail!("the example payload is an object");
        };
        let command = Command {
            id,
            kind: name("payment")?,
            provider: name("sandbox")?,
            operation: name("charge")?,
            payload,
            idempotency_key: Some(
                "order-42"
                    .to_owned()
                    .try_into()
                    .map_err(anyhow::Error::msg)?,
            ),
            deadline: None,
            metadata: Metadata::try_from(
                [("order".to_owned(), "42".to_owned())]
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
            )
            .map_err(anyhow::Error::msg)?,
            created_at: at(t0)?,
        };
        let lifecycle = Lifecycle::of(&command);
        let pending = lifecycle.pending(at(t0)?);
        let (attempt, processing) = lifecycle.begin(1, at(t0 + 11)?);
        let reference = "sbx_3f9c2a".to_owned();
        let completed = attempt.complete(
            json!({"reference": reference, "status": "succeeded"}),
            Some(reference.clone()),
            at(t0 + 40)?,
        );
        let record = AttemptRecord {
            record_id: "0193f0c1-5d3a-7c10-8e55-41b7d2a9e0f3".parse()?,
            command_id: id,
            attempt: 1,
            kind: command.kind.clone(),
            provider: command.provider.clone(),
            operation: command.operation.clone(),
            method: "POST".into(),
            url: "https://127.0.0.1:8443/generic/payment/charge".into(),
            status: Some(200),
            duration_ms: 4,
            started_at: at(t0 + 11)?,
            request_headers: [
                ("authorization".to_owned(), "[REDACTED]".to_owned()),
                ("content-type".to_owned(), "application/json".to_owned()),
                ("idempotency-key".to_owned(), "[REDACTED]".to_owned()),
            ]
            .into_iter()
            .collect(),
            request_body: r#"{"amount":1999,"currency":"usd","payment_method":"pm_card_visa"}"#
                .into(),
            response_headers: [("content-type".to_owned(), "application/json".to_owned())]
                .into_iter()
                .collect(),
            response_body: format!(r#"{{"reference":"{reference}","status":"succeeded"}}"#),
            error_class: None,
            error: None,
        };
        let summary = CommandSummary {
            id,
            kind: command.kind.to_string(),
            provider: command.provider.to_string(),
            operation: command.operation.to_string(),
            status: completed.status,
            seq: completed.seq,
            run: completed.run,
            attempt: completed.attempt,
            provider_reference: Some(reference),
            result: completed.result.clone(),
            error: None,
            metadata: to_value(&command.metadata)?,
            created_at: pending.occurred_at,
            updated_at: completed.occurred_at,
        };
        let events = vec![pending, processing, completed];
        let view = CommandView {
            id,
            summary: Some(summary.clone()),
            events: events.clone(),
            attempts: vec![record.clone()],
            resolution: None,
        };
        let page = Page {
            items: vec![summary],
            next_cursor: None,
        };
        let accepted = CommandAccepted {
            id,
            status: Status::Pending,
            status_url: format!("/v1/commands/{id}"),
        };
        // An operator ends an `unknown` outcome: the `completed` event the ledger publishes.
        let resolved = Lifecycle::of(&command).resume_waiting(1).complete(
            json!({"resolved_by": "ana", "reason": "charge seen in the provider's dashboard"}),
            None,
            at(t0 + 600_000)?,
        );
        Ok(Self {
            command,
            events,
            attempt: record,
            view,
            page,
            accepted,
            resolved,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAPI 3.1: the ingress and the ledger's query API.
// ---------------------------------------------------------------------------------------------

/// Where the HTTP routes are served (the configuration's defaults).
struct Servers {
    ingress: SocketAddr,
    ledger: SocketAddr,
    workers: Vec<(String, SocketAddr)>,
}

impl Servers {
    fn new() -> Self {
        Self {
            ingress: IngressConfig::default().listen,
            ledger: LedgerConfig::default().listen,
            workers: switchyard_ingress::builtin_kinds()
                .iter()
                .map(|k| (k.spec().name.to_string(), k.default_listen()))
                .collect(),
        }
    }

    fn ingress(&self) -> Value {
        json!({
            "url": format!("http://{}", self.ingress),
            "description": "The ingress (`[ingress] listen`; the default is shown). Under \
                `switchyard up` it also serves the ledger's routes.",
        })
    }

    fn ledger(&self) -> Value {
        json!({
            "url": format!("http://{}", self.ledger),
            "description": "The ledger (`[ledger] listen`; the default is shown).",
        })
    }

    fn workers(&self) -> Vec<Value> {
        self.workers
            .iter()
            .map(|(kind, addr)| {
                json!({
                    "url": format!("http://{addr}"),
                    "description": format!(
                        "The {kind} worker's operations endpoint (`[worker] listen`; this \
                         kind's default is shown)."
                    ),
                })
            })
            .collect()
    }
}

/// The headers of the answers.
fn headers_components() -> Value {
    json!({
        "Location": {
            "description": "The command's `status_url`: where the ledger answers what happened \
                to it, relative to the ingress's base URL.",
            "schema": {"type": "string", "format": "uri-reference"},
        },
        "IdempotentReplayed": {
            "description": "Present on a repeat: this command's identity (its idempotency key, \
                else its id) and fingerprint were accepted before; it is not executed again.",
            "schema": {"type": "string", "const": "true"},
        },
        "RetryAfter": {
            "description": "Seconds to wait before trying again; nothing was accepted or decided.",
            "schema": {"type": "integer", "minimum": 0},
        },
    })
}

/// An answer of `application/problem+json` with one example per problem it can carry.
fn problem_answer(
    description: &str,
    problems: &[(&str, Problem)],
    retry_after: Option<&str>,
) -> anyhow::Result<Value> {
    let mut examples = Map::new();
    for (key, problem) in problems {
        examples.insert(
            (*key).to_owned(),
            json!({"summary": *key, "value": to_value(problem)?}),
        );
    }
    let mut answer = json!({
        "description": description,
        "content": {
            "application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"},
                "examples": examples,
            }
        },
    });
    if let Some(seconds) = retry_after {
        answer["headers"] = json!({
            "Retry-After": {
                "$ref": "#/components/headers/RetryAfter",
            }
        });
        answer["description"] = Value::String(format!("{description} `Retry-After`: {seconds}."));
    }
    Ok(answer)
}

fn unauthenticated() -> anyhow::Result<Value> {
    problem_answer(
        "No valid bearer token.",
        &[("unauthenticated", Problem::unauthenticated())],
        None,
    )
}

fn store_unavailable() -> anyhow::Result<Value> {
    problem_answer(
        "The ledger's database did not answer.",
        &[("unavailable", Problem::store_unavailable())],
        Some("1 second"),
    )
}

fn body_unread() -> anyhow::Result<Value> {
    problem_answer(
        "The body did not arrive whole: it stalled longer than `[http] body_timeout_ms` \
         between two chunks, or the client went away. Nothing was accepted; send it again.",
        &[("body-unread", Problem::body_unread())],
        None,
    )
}

fn uuid_path_parameter() -> Value {
    json!({
        "name": "id",
        "in": "path",
        "required": true,
        "description": "The command id (a UUID).",
        "schema": {"type": "string", "format": "uuid"},
    })
}

fn bad_id() -> anyhow::Result<Value> {
    problem_answer(
        "The id is not a UUID.",
        &[(
            "bad-request",
            Problem::bad_request("the command id must be a UUID"),
        )],
        None,
    )
}

fn json_body(schema: &str, example_key: &str, example: Value) -> Value {
    json!({
        "application/json": {
            "schema": {"$ref": format!("#/components/schemas/{schema}")},
            "examples": {example_key: {"value": example}},
        }
    })
}

/// What the ingress says in `Retry-After`.
fn ingress_retry_after(ingress: &IngressConfig) -> String {
    format!(
        "`[ingress] retry_after_secs` seconds ({} by default)",
        ingress.retry_after_secs
    )
}

fn submit_command(servers: &Servers, ex: &Examples) -> anyhow::Result<Value> {
    let ingress = IngressConfig::default();
    let retry_after = ingress_retry_after(&ingress);
    let mut request = to_value(&ex.command)?;
    if let Value::Object(m) = &mut request {
        // `id` and `created_at` are optional over HTTP: the ingress fills them in.
        m.remove("id");
        m.remove("created_at");
    }
    let mut operations = Vec::new();
    for kind in switchyard_ingress::builtin_kinds() {
        let spec = kind.spec();
        for op in &spec.operations {
            operations.push(format!(
                "`{}`/`{}`: [{}]({TO_SCHEMAS}{})",
                spec.name,
                op.name,
                schemas::operation_schema(spec.name.as_str(), op.name.as_str()),
                schemas::operation_schema(spec.name.as_str(), op.name.as_str()),
            ));
        }
    }
    Ok(json!({
        "operationId": "submitCommand",
        "tags": ["ingress"],
        "summary": "Submit a command",
        "description": format!(
            "Validates the command (authentication, size, media type, shape, kind, provider \
             and operation, the operation's payload schema, no card numbers), then publishes it \
             on `{COMMANDS_EXCHANGE}` (persistent, mandatory) and answers `202` only once the \
             broker confirmed it. A repeat of an accepted command (same identity and \
             fingerprint) is answered `200` with `Idempotent-Replayed: true` and never executed \
             again. The payload of each built-in operation has its own schema: {}; kinds and \
             providers declared in the configuration bring theirs.",
            operations.join(", ")
        ),
        "servers": [servers.ingress()],
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": false,
                "description": "The command's idempotency key (1 to 255 visible characters), \
                    instead of or equal to the body's `idempotency_key`: both given and \
                    different is a `400`.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            },
            {
                "name": TRACEPARENT_HEADER,
                "in": "header",
                "required": false,
                "description": "W3C trace context: the command's trace becomes a child of the \
                    caller's, and travels with the command and its events.",
                "schema": {"type": "string"},
            },
        ],
        "requestBody": {
            "required": true,
            "description": "The command. `Content-Type` must be `application/json` or \
                another `application/*+json` type.",
            "content": json_body("CommandRequest", "charge", request),
        },
        "responses": {
            "202": {
                "description": "Accepted: the broker confirmed the command and the `pending` \
                    event was published.",
                "headers": {"Location": {"$ref": "#/components/headers/Location"}},
                "content": json_body("CommandAccepted", "accepted", to_value(&ex.accepted)?),
            },
            "200": {
                "description": "A repeat of a command accepted before: the original's id and \
                    status, as the ledger last recorded it.",
                "headers": {
                    "Idempotent-Replayed": {"$ref": "#/components/headers/IdempotentReplayed"},
                    "Location": {"$ref": "#/components/headers/Location"},
                },
                "content": json_body("CommandAccepted", "replayed", to_value(&ex.accepted)?),
            },
            "400": problem_answer(
                "The body is not JSON or not a command's shape, or the `Idempotency-Key` header \
                 is malformed or differs from the body's `idempotency_key`.",
                &[
                    ("malformed", Problem::malformed(
                        "the body is not valid JSON: expected value at line 1 column 1",
                    )),
                    ("idempotency-key", Problem::malformed(
                        "the Idempotency-Key header and the idempotency_key field differ",
                    ).with_field(Some("idempotency_key".into()))),
                ],
                None,
            )?,
            "401": unauthenticated()?,
            "408": body_unread()?,
            "413": problem_answer(
                &format!(
                    "The body is over `[ingress] max_body_bytes` ({} bytes by default).",
                    ingress.max_body_bytes
                ),
                &[("too-large", Problem::too_large(ingress.max_body_bytes))],
                None,
            )?,
            "415": problem_answer(
                "The `Content-Type` is not JSON.",
                &[("unsupported-media-type", Problem::not_json())],
                None,
            )?,
            "422": problem_answer(
                "Well-formed but not acceptable: a kind, provider or operation that is not a \
                 valid name or is not configured, a payload its schema refuses, a card number anywhere, or an identity (the \
                 idempotency key, else the id) that already names a command asking for \
                 something else. `field` names the culprit.",
                &[
                    ("invalid", Problem::invalid(
                        "payload.amount: 0 is less than the minimum of 1",
                    ).with_field(Some("payload.amount".into()))),
                    ("idempotency-conflict", Problem::idempotency_conflict(format!(
                        "command {} already holds this idempotency key and asks for another \
                         kind, provider, operation or payload",
                        ex.command.id
                    )).with_field(Some("idempotency_key".into()))),
                ],
                None,
            )?,
            "503": problem_answer(
                "The broker (or the identity journal) could not confirm: nothing was accepted; \
                 send the same request again later.",
                &[("unavailable", Problem::unavailable(ingress.retry_after_secs))],
                Some(&retry_after),
            )?,
        },
    }))
}

fn list_parameters() -> anyhow::Result<Vec<Value>> {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.inline_subschemas = true;
    let schema = settings
        .into_generator()
        .into_root_schema_for::<ListQuery>()
        .to_value();
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .context("ListQuery has properties")?;
    let mut parameters = Vec::new();
    for (name, property) in properties {
        let mut property = property.clone();
        let description = property
            .as_object_mut()
            .and_then(|p| p.remove("description"))
            .unwrap_or(Value::Null);
        // Optional in the query, so not null-able on the wire: drop the null branch.
        if let Some(types) = property.get_mut("type")
            && let Value::Array(list) = types
        {
            list.retain(|t| t != "null");
            if list.len() == 1 {
                *types = list[0].clone();
            }
        }
        if let Some(Value::Array(branches)) = property.get_mut("anyOf") {
            branches.retain(|b| b.get("type") != Some(&json!("null")));
            if branches.len() == 1 {
                property = branches[0].clone();
            }
        }
        if name == "limit" {
            property["default"] = json!(50);
        }
        parameters.push(json!({
            "name": name,
            "in": "query",
            "required": false,
            "description": description,
            "schema": property,
        }));
    }
    Ok(parameters)
}

fn list_commands(servers: &Servers, ex: &Examples) -> anyhow::Result<Value> {
    Ok(json!({
        "operationId": "listCommands",
        "tags": ["ledger"],
        "summary": "List commands (operators)",
        "description": "Command summaries, newest first, filtered by every parameter given. \
            Pass `next_cursor` as `cursor` for the next page, until it is `null`; the cursor is \
            a keyset position, so pages stay consistent while new commands arrive.",
        "servers": [servers.ledger(), servers.ingress()],
        "parameters": list_parameters()?,
        "responses": {
            "200": {
                "description": "One page.",
                "content": json_body("CommandPage", "page", to_value(&ex.page)?),
            },
            "400": problem_answer(
                "An unknown parameter, a value that does not parse, or a cursor that does not \
                 decode.",
                &[
                    ("bad-request", Problem::bad_request(
                        "Failed to deserialize query string: unknown field `state`, expected one \
                         of `status`, `kind`, `provider`, `since`, `until`, `limit`, `cursor`",
                    )),
                    ("bad-cursor", Problem::bad_request("invalid cursor")
                        .with_field(Some("cursor".into()))),
                ],
                None,
            )?,
            "401": unauthenticated()?,
            "503": store_unavailable()?,
        },
    }))
}

fn show_command(servers: &Servers, ex: &Examples) -> anyhow::Result<Value> {
    Ok(json!({
        "operationId": "getCommand",
        "tags": ["ledger"],
        "summary": "What happened to a command",
        "description": "Its current status and run, its events in `seq` order, its provider \
            attempts and, when an operator ended an `unknown` outcome, the `resolution`. The \
            status fields are absent while only attempt records have arrived.",
        "servers": [servers.ledger(), servers.ingress()],
        "parameters": [uuid_path_parameter()],
        "responses": {
            "200": {
                "description": "Everything the ledger knows of the command.",
                "content": json_body("CommandView", "completed", to_value(&ex.view)?),
            },
            "400": bad_id()?,
            "401": unauthenticated()?,
            "404": problem_answer(
                "The ledger never heard of this id.",
                &[("not-found", Problem::not_found(format!(
                    "no command {} is known to the ledger",
                    ex.command.id
                )))],
                None,
            )?,
            "503": store_unavailable()?,
        },
    }))
}

fn resolve_command(servers: &Servers, ex: &Examples) -> anyhow::Result<Value> {
    Ok(json!({
        "operationId": "resolveCommand",
        "tags": ["ledger"],
        "summary": "End an unknown outcome (operators)",
        "description": "Ends a command whose open wait is an `unknown` outcome, once: the first \
            decision wins. `completed` publishes the run's `completed` event with result \
            `{\"resolved_by\", \"reason\"}`; `failed` publishes `failed` (class `unknown`, code \
            `operator_resolved`) and dead-letters the command. Sending the same resolution again \
            after a `503` publishes the same event again, never a second one.",
        "servers": [servers.ledger(), servers.ingress()],
        "parameters": [uuid_path_parameter()],
        "requestBody": {
            "required": true,
            "content": json_body(
                "ResolutionRequest",
                "completed",
                json!({"status": "completed", "reason": "charge seen in the provider's dashboard", "by": "ana"}),
            ),
        },
        "responses": {
            "200": {
                "description": "Decided and published: the terminal event.",
                "content": json_body("Event", "completed", to_value(&ex.resolved)?),
            },
            "400": bad_id()?,
            "401": unauthenticated()?,
            "404": problem_answer(
                "The ledger never heard of this id.",
                &[("not-found", Problem::not_found(format!(
                    "no command {} is known to the ledger",
                    ex.command.id
                )))],
                None,
            )?,
            "409": problem_answer(
                "The command does not wait on an `unknown` outcome: it waits for its provider, \
                 or it already ended (the detail says which).",
                &[("conflict", Problem::conflict(format!(
                    "command {} is not waiting on an unknown outcome",
                    ex.command.id
                )))],
                None,
            )?,
            "422": problem_answer(
                "The body is not a resolution: not JSON (or not `Content-Type: \
                 application/json`, or not read whole), an unknown field, a `status` other than \
                 `completed` or `failed`, `by` missing or empty, `by` or `reason` over 1000 bytes.",
                &[("invalid", Problem::invalid(
                    "`by` must name who resolves (1 to 1000 bytes) and `reason` be at most 1000 \
                     bytes",
                ).with_field(Some("by".into())))],
                None,
            )?,
            "503": problem_answer(
                "Not published: the broker did not confirm (send the same resolution again), \
                 the database did not answer, or this server has no broker connection (a \
                 query-only router).",
                &[("unavailable", Problem::resolution_unpublished())],
                Some("5 seconds"),
            )?,
        },
    }))
}

fn receive_webhook(servers: &Servers) -> anyhow::Result<Value> {
    let ingress = IngressConfig::default();
    let retry_after = ingress_retry_after(&ingress);
    Ok(json!({
        "operationId": "receiveWebhook",
        "tags": ["webhooks"],
        "summary": "A provider's callback",
        "description": "Verified on the raw bytes by the provider's signature scheme (Standard \
            Webhooks, Stripe, GitHub- or EasyPost-style HMAC, Twilio) before anything is \
            parsed, then durably queued for the resolver before the answer. No bearer token: \
            the signature authenticates.",
        "servers": [servers.ingress()],
        "security": [],
        "parameters": [{
            "name": "provider",
            "in": "path",
            "required": true,
            "description": "A configured provider that takes webhooks.",
            "schema": {"type": "string"},
        }],
        "requestBody": {
            "required": true,
            "description": "The provider's own payload, as it signed it.",
            "content": {"*/*": {"schema": {}}},
        },
        "responses": {
            "204": {
                "description": "Verified; queued for the resolver, or about nothing Switchyard \
                    waits for.",
            },
            "400": problem_answer(
                "Verified, but not readable as the provider's callback.",
                &[("malformed", Problem::webhook_malformed("the callback has no event id"))],
                None,
            )?,
            "401": problem_answer(
                "The signature is missing, invalid or outside the timestamp tolerance.",
                &[("bad-signature", Problem::bad_signature())],
                None,
            )?,
            "404": problem_answer(
                "No provider of that name takes webhooks here.",
                &[("not-found", Problem::not_found("no provider \"acme\" takes webhooks here"))],
                None,
            )?,
            "408": body_unread()?,
            "413": problem_answer(
                &format!("The body is over {MAX_WEBHOOK_BYTES} bytes."),
                &[("too-large", Problem::too_large(MAX_WEBHOOK_BYTES))],
                None,
            )?,
            "503": problem_answer(
                "The broker did not confirm; the provider should deliver it again.",
                &[("unavailable", Problem::webhook_unavailable(ingress.retry_after_secs))],
                Some(&retry_after),
            )?,
        },
    }))
}

fn ops_operation(servers: &Servers, id: &str, summary: &str, responses: Value) -> Value {
    let mut all = vec![servers.ingress(), servers.ledger()];
    all.extend(servers.workers());
    json!({
        "operationId": id,
        "tags": ["operations"],
        "summary": summary,
        "servers": all,
        "security": [],
        "responses": responses,
    })
}

fn text(description: &str, example: &str) -> Value {
    json!({
        "description": description,
        "content": {"text/plain": {"schema": {"type": "string"}, "example": example}},
    })
}

fn openapi(ex: &Examples) -> anyhow::Result<Value> {
    let servers = Servers::new();
    let mut components_schemas = Map::new();
    for (name, path) in [
        ("CommandRequest", COMMAND_REQUEST),
        ("CommandAccepted", COMMAND_ACCEPTED),
        ("Problem", PROBLEM),
        ("CommandView", COMMAND_VIEW),
        ("CommandPage", COMMAND_PAGE),
        ("ResolutionRequest", RESOLUTION_REQUEST),
        ("Event", EVENT),
    ] {
        components_schemas.insert(name.to_owned(), file_ref(path));
    }
    let paths = json!({
        "/v1/commands": {
            "post": submit_command(&servers, ex)?,
            "get": list_commands(&servers, ex)?,
        },
        "/v1/commands/{id}": {
            "get": show_command(&servers, ex)?,
        },
        "/v1/commands/{id}/resolution": {
            "post": resolve_command(&servers, ex)?,
        },
        "/v1/webhooks/{provider}": {
            "post": receive_webhook(&servers)?,
        },
        "/healthz": {
            "get": ops_operation(&servers, "healthz", "Liveness", json!({
                "200": text("The process is up.", "ok"),
            })),
        },
        "/readyz": {
            "get": ops_operation(&servers, "readyz", "Readiness", json!({
                "200": text("Its broker connection is up.", "ready"),
                "503": text("Its broker connection is down.", "not ready"),
            })),
        },
        "/metrics": {
            "get": ops_operation(&servers, "metrics", "Prometheus metrics", json!({
                "200": {
                    "description": "The Prometheus text exposition format.",
                    "content": {"text/plain; version=0.0.4; charset=utf-8": {
                        "schema": {"type": "string"},
                    }},
                },
            })),
        },
    });
    Ok(json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Switchyard HTTP API",
            "version": version(),
            "summary": "The ingress (commands in, provider webhooks in) and the ledger's query API.",
            "description": "Generated from the Rust types by `switchyard schemas write`; do not \
                edit. Every error is `application/problem+json` (RFC 9457). Bodies are the JSON \
                Schemas under `schemas/`, whose `$id`s are identifiers, not download locations. \
                See docs/api/README.md.",
            "license": {"name": env!("CARGO_PKG_LICENSE"), "identifier": env!("CARGO_PKG_LICENSE")},
        },
        "servers": [servers.ingress(), servers.ledger()],
        "tags": [
            {"name": "ingress", "description": "Commands in: `switchyard-ingress`."},
            {"name": "webhooks", "description": "Provider callbacks in: `switchyard-ingress`."},
            {"name": "ledger", "description": "What happened to a command: `switchyard-ledger`."},
            {"name": "operations", "description": "Health, readiness and metrics, on every \
                server process."},
        ],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <token>` with a token of \
                        `[ingress] tokens`, compared in constant time. `[ingress] auth_disabled` \
                        turns it off (local development only).",
                }
            },
            "headers": headers_components(),
            "schemas": components_schemas,
        },
    }))
}

// ---------------------------------------------------------------------------------------------
// AsyncAPI 3.0: the exchanges and queues.
// ---------------------------------------------------------------------------------------------

fn header(schema: Value, description: &str) -> Value {
    let mut schema = schema;
    schema["description"] = Value::String(description.to_owned());
    schema
}

fn int_header(description: &str) -> Value {
    header(json!({"type": "integer", "minimum": 0}), description)
}

fn string_header(description: &str) -> Value {
    header(json!({"type": "string"}), description)
}

fn traceparent_header() -> Value {
    header(
        json!({"type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"}),
        "W3C trace context of the command's trace.",
    )
}

/// The headers a command can carry on `switchyard.commands`.
fn command_headers() -> Map<String, Value> {
    let mut h = Map::new();
    h.insert(TRACEPARENT_HEADER.into(), traceparent_header());
    h.insert(
        RUN_HEADER.into(),
        int_header(
            "The run: absent or 0 for the first; `switchyard dlq replay` sets the dead \
             letter's run + 1.",
        ),
    );
    h.insert(
        ATTEMPT_HEADER.into(),
        int_header(
            "Attempts already made; set by the worker on delayed retries, never by a core app.",
        ),
    );
    h.insert(
        SOURCE_HEADER.into(),
        header(
            json!({"type": "string", "enum": ["ingress"]}),
            "Set by the ingress: the `pending` event was already published.",
        ),
    );
    // Switchyard's own copies travel on the same exchange: delayed retries (through the
    // retry tiers, dead-lettered back with the broker's `x-death`) and status checks.
    h.insert(
        KIND_HEADER.into(),
        string_header("On a delayed retry: the kind, matched by `switchyard.retry`."),
    );
    h.insert(
        TIER_HEADER.into(),
        string_header("On a delayed retry: the delay tier (`250ms`, `5s`, `2m`, `1h`)."),
    );
    h.insert(
        CHECK_HEADER.into(),
        int_header("On a status check of a waiting command: the check's number."),
    );
    h.insert(
        REFERENCE_HEADER.into(),
        string_header("On a status check: the provider's reference it asks about."),
    );
    h.insert(
        WAIT_UNTIL_HEADER.into(),
        int_header("On a status check: when the wait expires (Unix milliseconds)."),
    );
    h
}

/// The headers every dead letter of the contract adds to the original ones.
fn dead_letter_headers() -> Map<String, Value> {
    let mut classes = schemars::schema_for!(ErrorClass).to_value();
    if let Value::Object(m) = &mut classes {
        m.remove("$schema");
        m.remove("title");
    }
    let mut h = Map::new();
    h.insert(
        ERROR_CLASS_HEADER.into(),
        header(classes, "The class of the failure."),
    );
    h.insert(
        ERROR_HEADER.into(),
        header(
            json!({"type": "string", "maxLength": 1000}),
            "`{code}: {message}`, redacted, at most 1000 bytes.",
        ),
    );
    h.insert(
        ATTEMPTS_HEADER.into(),
        int_header("Attempts made before it was dead-lettered."),
    );
    h.insert(
        FAILED_AT_HEADER.into(),
        header(
            json!({"type": "string", "format": "date-time"}),
            "When it was dead-lettered (RFC 3339).",
        ),
    );
    h
}

fn headers_schema(properties: Map<String, Value>, required: &[&str]) -> Value {
    let mut schema = json!({
        "type": "object",
        "properties": properties,
    });
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    schema
}

fn amqp_message_binding(message_type: &str) -> Value {
    json!({"amqp": {"messageType": message_type, "bindingVersion": AMQP_BINDING}})
}

/// The AMQP properties every message of the contract is published with.
fn amqp_properties(message_id: &str, message_type: &str) -> Value {
    json!({
        "delivery_mode": 2,
        "content_type": "application/json",
        "message_id": message_id,
        "type": message_type,
        "timestamp": "the publication time, Unix seconds",
    })
}

fn exchange_channel(
    address: &str,
    exchange: &str,
    kind: &str,
    description: String,
    parameters: Value,
    messages: Value,
) -> Value {
    json!({
        "address": address,
        "title": exchange,
        "description": description,
        "parameters": parameters,
        "messages": messages,
        "bindings": {"amqp": {
            "is": "routingKey",
            "exchange": {"name": exchange, "type": kind, "durable": true, "autoDelete": false, "vhost": "/"},
            "bindingVersion": AMQP_BINDING,
        }},
    })
}

fn queue_channel(address: &str, description: String, parameters: Value, messages: Value) -> Value {
    let mut channel = json!({
        "address": address,
        "title": address,
        "description": description,
        "messages": messages,
        "bindings": {"amqp": {
            "is": "queue",
            "queue": {"name": address, "durable": true, "exclusive": false, "autoDelete": false, "vhost": "/"},
            "bindingVersion": AMQP_BINDING,
        }},
    });
    if parameters.as_object().is_some_and(|p| !p.is_empty()) {
        channel["parameters"] = parameters;
    }
    channel
}

fn message_ref(id: &str) -> Value {
    json!({"$ref": format!("#/components/messages/{id}")})
}

fn channel_message_ref(channel: &str, id: &str) -> Value {
    json!({"$ref": format!("#/channels/{channel}/messages/{id}")})
}

fn receive(channel: &str, messages: &[&str], summary: &str) -> Value {
    json!({
        "action": "receive",
        "channel": {"$ref": format!("#/channels/{channel}")},
        "summary": summary,
        "messages": messages.iter().map(|m| channel_message_ref(channel, m)).collect::<Vec<_>>(),
        "bindings": {"amqp": {"ack": true, "bindingVersion": AMQP_BINDING}},
    })
}

struct BuiltIn {
    kinds: Vec<String>,
    operations: Vec<(String, String)>,
}

impl BuiltIn {
    fn new() -> Self {
        let mut kinds = Vec::new();
        let mut operations = Vec::new();
        for kind in switchyard_ingress::builtin_kinds() {
            let spec = kind.spec();
            kinds.push(spec.name.to_string());
            for op in &spec.operations {
                operations.push((spec.name.to_string(), op.name.to_string()));
            }
        }
        Self { kinds, operations }
    }

    fn command_message_id(kind: &str, operation: &str) -> String {
        format!("command.{kind}.{operation}")
    }

    fn payload_schema_id(kind: &str, operation: &str) -> String {
        format!("{kind}.{operation}")
    }
}

fn parameter(description: &str, examples: &[String]) -> Value {
    json!({"description": description, "examples": examples})
}

fn asyncapi(ex: &Examples) -> Value {
    let builtin = BuiltIn::new();
    let kind_param = parameter(
        "The integration kind: a built-in one or one declared in `[[kinds]]`.",
        &builtin.kinds,
    );
    let provider_param = parameter(
        "A provider configured for the kind.",
        &["sandbox".to_owned()],
    );
    let mut op_names: Vec<String> = builtin.operations.iter().map(|(_, o)| o.clone()).collect();
    op_names.sort();
    op_names.dedup();
    let operation_param = parameter("An operation of the kind.", &op_names);
    let statuses: Vec<String> = Status::ALL.iter().map(|s| s.as_str().to_owned()).collect();
    let status_param = json!({
        "description": "The status the event reports.",
        "enum": statuses,
    });

    let cmd_headers = command_headers();
    let command_props = || {
        let mut p = amqp_properties("the command's `id`", COMMAND_TYPE_V1);
        p["note"] = json!(
            "How the ingress publishes a command. A core app publishing directly must use \
             delivery mode 2 and should set the others alike; workers read only the body, the \
             routing key and the headers."
        );
        p
    };

    // Messages.
    let mut messages = Map::new();
    messages.insert(
        "command".into(),
        json!({
            "name": "command",
            "title": "Command (v1 envelope)",
            "summary": "A command: what a core app asks Switchyard to do.",
            "description": "Publish it persistent and mandatory, with publisher confirms: a \
                command is accepted once the broker confirmed it. The routing key must match \
                its `kind`, `provider` and `operation`, and `payload` the operation's schema. \
                Its identity is its `idempotency_key`, else its `id`.",
            "contentType": "application/json",
            "headers": headers_schema(cmd_headers.clone(), &[]),
            "payload": {"$ref": "#/components/schemas/Command"},
            "correlationId": {"location": "$message.payload#/id"},
            "bindings": amqp_message_binding(COMMAND_TYPE_V1),
            "x-amqp-properties": command_props(),
            "examples": [{
                "name": "charge",
                "headers": {TRACEPARENT_HEADER: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
                "payload": to_value(&ex.command).unwrap_or_default(),
            }],
        }),
    );
    let mut command_messages = vec!["command".to_owned()];
    for (kind, operation) in &builtin.operations {
        let id = BuiltIn::command_message_id(kind, operation);
        messages.insert(
            id.clone(),
            json!({
                "name": id,
                "title": format!("Command {kind}/{operation}"),
                "summary": format!("A `{operation}` command of kind `{kind}`: routing key `{kind}.{{provider}}.{operation}`."),
                "contentType": "application/json",
                "headers": headers_schema(cmd_headers.clone(), &[]),
                "payload": {"allOf": [
                    {"$ref": "#/components/schemas/Command"},
                    {
                        "type": "object",
                        "properties": {
                            "kind": {"const": kind},
                            "operation": {"const": operation},
                            "payload": {"$ref": format!("#/components/schemas/{}", BuiltIn::payload_schema_id(kind, operation))},
                        },
                    },
                ]},
                "correlationId": {"location": "$message.payload#/id"},
                "bindings": amqp_message_binding(COMMAND_TYPE_V1),
                "x-amqp-properties": command_props(),
            }),
        );
        command_messages.push(id);
    }
    let mut event_headers = Map::new();
    event_headers.insert(TRACEPARENT_HEADER.into(), traceparent_header());
    messages.insert(
        "event".into(),
        json!({
            "name": "event",
            "title": "Lifecycle event (v1)",
            "summary": "A step of a command's lifecycle.",
            "description": "The highest `seq` is the command's current status, whatever order \
                events arrive in; the same transition has the same `event_id` (de-duplicate on \
                it). Terminal: `completed`, `failed`, `duplicate`.",
            "contentType": "application/json",
            "headers": headers_schema(event_headers, &[]),
            "payload": {"$ref": "#/components/schemas/Event"},
            "correlationId": {"location": "$message.payload#/command_id"},
            "bindings": amqp_message_binding(EVENT_TYPE_V1),
            "x-amqp-properties": amqp_properties("the event's `event_id`", EVENT_TYPE_V1),
            "examples": ex.events.iter().map(|e| json!({
                "name": e.status.as_str(),
                "payload": to_value(e).unwrap_or_default(),
            })).collect::<Vec<_>>(),
        }),
    );
    messages.insert(
        "attempt".into(),
        json!({
            "name": "attempt",
            "title": "Attempt record (v1)",
            "summary": "One provider request and its answer, redacted and capped.",
            "description": "The ledger keeps them; a quick in-process retry is a second record \
                with the same `attempt`.",
            "contentType": "application/json",
            "payload": {"$ref": "#/components/schemas/AttemptRecord"},
            "correlationId": {"location": "$message.payload#/command_id"},
            "bindings": amqp_message_binding(ATTEMPT_TYPE_V1),
            "x-amqp-properties": amqp_properties("the record's `record_id`", ATTEMPT_TYPE_V1),
            "examples": [{"name": "charge", "payload": to_value(&ex.attempt).unwrap_or_default()}],
        }),
    );
    let mut dl_headers = cmd_headers.clone();
    dl_headers.extend(dead_letter_headers());
    messages.insert(
        "deadLetter".into(),
        json!({
            "name": "deadLetter",
            "title": "Dead-lettered command",
            "summary": "A command that failed for good: retries exhausted, refused, invalid or expired.",
            "description": format!(
                "The original message (body and properties) plus the dead-letter headers. A \
                 message the broker dead-lettered by itself (past a work queue's delivery \
                 limit) has the broker's `x-death` header instead. The body is the command as \
                 published (card numbers masked), which for class `invalid` may not be a valid \
                 command. Routed on `{DEAD_EXCHANGE}` by the command's routing key (or \
                 `{{kind}}.{{provider}}.invalid`). `switchyard dlq replay` starts a new run."
            ),
            "contentType": "application/json",
            "headers": headers_schema(dl_headers, &[]),
            "payload": {"anyOf": [
                {"$ref": "#/components/schemas/Command"},
                {"description": "Any other body, as it was published."},
            ]},
        }),
    );
    let mut unroutable_headers = cmd_headers.clone();
    unroutable_headers.extend(dead_letter_headers());
    unroutable_headers.insert(
        ROUTING_KEY_HEADER.into(),
        string_header("The routing key it was published with."),
    );
    messages.insert(
        "unroutableCommand".into(),
        json!({
            "name": "unroutableCommand",
            "title": "Unroutable command",
            "summary": "A command no worker serves, parked after its `failed` event (class `invalid`, code `unroutable`).",
            "description": format!(
                "Taken by `{COMMANDS_EXCHANGE}`'s alternate exchange `{UNROUTABLE_EXCHANGE}`, \
                 then moved by a worker through the default exchange: body and properties \
                 unchanged, plus the dead-letter headers and `{ROUTING_KEY_HEADER}`."
            ),
            "contentType": "application/json",
            "headers": headers_schema(unroutable_headers, &[ERROR_CLASS_HEADER, ERROR_HEADER, ROUTING_KEY_HEADER]),
            "payload": {"anyOf": [
                {"$ref": "#/components/schemas/Command"},
                {"description": "Any other body, as it was published."},
            ]},
        }),
    );
    let mut ledger_headers = dead_letter_headers();
    ledger_headers.insert(
        SOURCE_QUEUE_HEADER.into(),
        header(
            json!({"type": "string", "enum": [LEDGER_EVENTS_QUEUE, LEDGER_ATTEMPTS_QUEUE]}),
            "The ledger queue it came from, where a replay sends it.",
        ),
    );
    messages.insert(
        "ledgerDeadLetter".into(),
        json!({
            "name": "ledgerDeadLetter",
            "title": "Ledger dead letter",
            "summary": "An event or attempt record the ledger's database refused (`ledger_refused`), or could not decode (`undecodable`).",
            "description": "A message that crash-looped past a ledger queue's delivery limit \
                has the broker's `x-death` header instead of these.",
            "contentType": "application/json",
            "headers": headers_schema(ledger_headers, &[]),
            "payload": {"anyOf": [
                {"$ref": "#/components/schemas/Event"},
                {"$ref": "#/components/schemas/AttemptRecord"},
                {"description": "A body that could not be decoded, as it was."},
            ]},
        }),
    );

    // Schemas: the committed files.
    let mut schemas_map = Map::new();
    schemas_map.insert("Command".into(), file_ref(COMMAND));
    schemas_map.insert("Event".into(), file_ref(EVENT));
    schemas_map.insert("AttemptRecord".into(), file_ref(ATTEMPT));
    for (kind, operation) in &builtin.operations {
        schemas_map.insert(
            BuiltIn::payload_schema_id(kind, operation),
            file_ref(&schemas::operation_schema(kind, operation)),
        );
    }

    let refs = |ids: &[String]| obj(ids.iter().map(|id| (id.clone(), message_ref(id))));
    let one = |id: &str| obj([(id.to_owned(), message_ref(id))]);

    let channels = json!({
        "commands": exchange_channel(
            "{kind}.{provider}.{operation}",
            COMMANDS_EXCHANGE,
            "topic",
            format!(
                "Commands in. One quorum work queue per provider (`switchyard.work.{{kind}}.{{provider}}`, \
                 bound `{{kind}}.{{provider}}.*`); a command nobody routes goes to the alternate \
                 exchange `{UNROUTABLE_EXCHANGE}` instead of being lost."
            ),
            json!({"kind": kind_param, "provider": provider_param, "operation": operation_param}),
            refs(&command_messages),
        ),
        "events": exchange_channel(
            "{kind}.{provider}.{status}",
            EVENTS_EXCHANGE,
            "topic",
            "Lifecycle events out. Bind your own queue, e.g. `payment.*.*` or `#`.".to_owned(),
            json!({"kind": kind_param, "provider": provider_param, "status": status_param}),
            one("event"),
        ),
        "attempts": exchange_channel(
            "{kind}.{provider}",
            ATTEMPTS_EXCHANGE,
            "topic",
            format!(
                "One redacted record per provider request. The ledger binds \
                 `{LEDGER_ATTEMPTS_QUEUE}` with `#`."
            ),
            json!({"kind": kind_param, "provider": provider_param}),
            one("attempt"),
        ),
        "deadLetters": queue_channel(
            "switchyard.dlq.{kind}",
            format!(
                "The kind's dead-letter queue (quorum), bound `{{kind}}.#` on `{DEAD_EXCHANGE}`. \
                 Read it with `switchyard dlq list|show|replay|purge`."
            ),
            json!({"kind": kind_param}),
            one("deadLetter"),
        ),
        "unroutable": queue_channel(
            UNROUTABLE_DLQ,
            "Commands no worker serves, after their `failed` event; `switchyard dlq replay \
             --lot unroutable` runs them once a worker serves them.".to_owned(),
            json!({}),
            one("unroutableCommand"),
        ),
        "ledgerDeadLetters": queue_channel(
            LEDGER_DLQ,
            format!("What the ledger could not store, bound `ledger.#` on `{DEAD_EXCHANGE}`."),
            json!({}),
            one("ledgerDeadLetter"),
        ),
    });

    let send_messages: Vec<Value> = command_messages
        .iter()
        .map(|m| channel_message_ref("commands", m))
        .collect();
    let operations = json!({
        "sendCommand": {
            "action": "send",
            "channel": {"$ref": "#/channels/commands"},
            "summary": "Ask for an integration.",
            "description": "Persistent (delivery mode 2), mandatory, confirmed: a command the \
                broker did not confirm was not accepted; publish it again (same id or \
                idempotency key: it runs once).",
            "messages": send_messages,
            "bindings": {"amqp": {"deliveryMode": 2, "mandatory": true, "timestamp": true, "bindingVersion": AMQP_BINDING}},
        },
        "receiveEvents": receive("events", &["event"], "Follow commands through their lifecycle."),
        "receiveAttempts": receive("attempts", &["attempt"], "Every provider request (the ledger's feed)."),
        "receiveDeadLetters": receive("deadLetters", &["deadLetter"], "Operators: commands that failed for good."),
        "receiveUnroutable": receive("unroutable", &["unroutableCommand"], "Operators: commands nobody serves."),
        "receiveLedgerDeadLetters": receive("ledgerDeadLetters", &["ledgerDeadLetter"], "Operators: what the ledger could not store."),
    });

    json!({
        "asyncapi": "3.0.0",
        "id": "urn:switchyard:messaging",
        "info": {
            "title": "Switchyard messaging",
            "version": version(),
            "description": "The AMQP contract between a core app and Switchyard, seen from the \
                core app: it sends commands and receives lifecycle events; operators also read \
                attempt records and the parking lots. Generated from the Rust types by \
                `switchyard schemas write`; do not edit. Payloads are the JSON Schemas under \
                `schemas/`, whose `$id`s are identifiers, not download locations. See \
                docs/messaging.md and docs/api/README.md.",
            "license": {"name": env!("CARGO_PKG_LICENSE")},
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "The broker of `./dev up`; elsewhere `SWITCHYARD_AMQP_URL`.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas_map,
            "messages": messages,
        },
    })
}
