//! Sending with a record: every provider request becomes a redacted [`AttemptRecord`].

use std::time::Instant;

use chrono::Utc;
use switchyard_core::{AttemptRecord, ProviderCall, ProviderError};
use switchyard_redact::{Redactor, recordable_url, redact_headers};
use uuid::Uuid;

use crate::client::{
    HttpExchange, OutboundClient, OutboundRequest, TRACEPARENT, client_span, traceparent_value,
};

impl OutboundClient {
    /// [`OutboundClient::send`], recording the request and its answer (or failure), redacted,
    /// into `call.recorder`. The answer's classification is recorded too; the caller still
    /// classifies it to decide.
    pub async fn send_recorded(
        &self,
        request: OutboundRequest,
        call: &ProviderCall,
        redactor: &Redactor,
    ) -> Result<HttpExchange, ProviderError> {
        let mut request = request;
        // Every provider call carries the command's trace (W3C Trace Context), in one place:
        // the context of this request's client span, or the call's when traces are off.
        let span = client_span(&request);
        if let Some(tp) = traceparent_value(&span).or_else(|| {
            call.traceparent
                .as_deref()
                .and_then(|t| http::HeaderValue::from_str(t).ok())
        }) {
            request.headers.insert(TRACEPARENT, tp);
        }
        let command = &call.command;
        let mut record = AttemptRecord {
            record_id: Uuid::now_v7(),
            command_id: command.id,
            attempt: call.attempt,
            kind: command.kind.clone(),
            provider: command.provider.clone(),
            operation: command.operation.clone(),
            method: request.method.to_string(),
            url: recordable_url(&request.url),
            status: None,
            duration_ms: 0,
            started_at: Utc::now(),
            request_headers: redact_headers(&request.headers),
            request_body: redactor.body(&request.body),
            response_headers: Default::default(),
            response_body: String::new(),
            error_class: None,
            error: None,
        };
        let started = Instant::now();
        let result = self.send_in(request, span).await;
        record.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(exchange) => {
                record.status = Some(exchange.status.as_u16());
                record.response_headers = redact_headers(&exchange.headers);
                record.response_body = redactor.body(&exchange.body);
                if let Err(e) = exchange.classify() {
                    record.error_class = Some(e.class);
                    record.error = Some(redactor.text(&e.message));
                }
            }
            Err(e) => {
                record.error_class = Some(e.class);
                record.error = Some(redactor.text(&e.to_string()));
            }
        }
        call.recorder.push(record);
        result
    }
}
