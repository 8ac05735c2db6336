//! What a try of a delivery learned from the provider, kept for the tries in place after it.
//!
//! A try whose report (`processing`, the attempt records) or decision failed after the provider
//! answered returns the delivery for another try. That try finds the step begun and undecided,
//! exactly as it would after a worker died during the call, and could only call again (with
//! the same key) or, at a provider that takes no key, give up as `unknown`: the answer the
//! first try held would be thrown away. Kept here, it is reported and decided as it was.

use std::sync::Mutex;

use switchyard_core::{AttemptRecord, Event};
use switchyard_journal::Step;

use crate::plan::Plan;

/// The provider's answer to one step, with everything its report needs.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// The step it answered.
    pub step: Step,
    /// `pending` (on a command's first sight) and `processing`, in order.
    pub events: Vec<Event>,
    /// The requests and responses of the call.
    pub records: Vec<AttemptRecord>,
    /// The outcome built from the answer.
    pub plan: Plan,
}

/// At most one answer per delivery: the handler tries one step per delivery.
#[derive(Debug, Default)]
pub(crate) struct Answered(Mutex<Option<Box<Answer>>>);

impl Answered {
    /// Keeps `answer` for the tries after this one.
    pub(crate) fn keep(&self, answer: Answer) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(Box::new(answer));
        }
    }

    /// The answer an earlier try got for `step`, if any.
    pub(crate) fn of(&self, step: Step) -> Option<Answer> {
        let slot = self.0.lock().ok()?;
        slot.as_deref().filter(|a| a.step == step).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(attempt: u32) -> Step {
        Step {
            command_id: uuid::Uuid::nil(),
            run: 0,
            attempt,
        }
    }

    #[test]
    fn an_answer_is_kept_for_its_own_step_only() {
        let c: switchyard_core::Command = serde_json::from_value(serde_json::json!({
            "id": "0190b3f4-7f6e-7c3a-9d2e-3b1f2a4c5d6e",
            "kind": "payment", "provider": "stripe", "operation": "charge",
            "payload": {}, "created_at": "2026-11-25T10:00:00Z"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let now = chrono::Utc::now();
        let (attempt, processing) = switchyard_core::Lifecycle::run(&c, 0).begin(1, now);
        let answered = Answered::default();
        assert!(answered.of(step(1)).is_none());
        answered.keep(Answer {
            step: step(1),
            events: vec![processing],
            records: Vec::new(),
            plan: Plan::Report {
                event: attempt.complete(serde_json::json!({}), None, now),
            },
        });
        assert!(answered.of(step(1)).is_some());
        assert!(answered.of(step(2)).is_none());
    }
}
