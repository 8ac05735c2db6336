//! The lifecycle state machine: `pending -> processing -> (retrying | waiting) -> completed |
//! failed`, in the types.
//!
//! An [`Attempt`] is consumed by exactly one outcome, so a worker cannot report two outcomes
//! for one attempt, and nothing can be built that follows a terminal event. [`Tracker`] folds
//! events that may arrive late, twice or out of order into the current state ("highest `seq`
//! wins", terminal is sticky), which is what every subscriber and the ledger do.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::command::Command;
use crate::error::ErrorInfo;
use crate::event::{Event, Status};

/// Each attempt owns four consecutive `seq` values: processing, retrying or waiting, terminal.
const PHASES: u64 = 4;

fn seq_of(attempt: u32, status: Status) -> u64 {
    let phase = match status {
        Status::Pending => 0,
        Status::Processing => 1,
        Status::Retrying | Status::Waiting => 2,
        Status::Completed | Status::Failed => 3,
    };
    u64::from(attempt) * PHASES + phase
}

/// The deterministic id of a transition: replaying it yields the same id.
pub fn event_id(command_id: Uuid, seq: u64, status: Status) -> Uuid {
    Uuid::new_v5(&command_id, format!("{seq}.{status}").as_bytes())
}

/// Builds the events of one command.
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle<'a> {
    command: &'a Command,
}

fn event(command: &Command, attempt: u32, status: Status, at: DateTime<Utc>) -> Event {
    let seq = seq_of(attempt, status);
    Event {
        event_id: event_id(command.id, seq, status),
        command_id: command.id,
        seq,
        status,
        kind: command.kind.clone(),
        provider: command.provider.clone(),
        operation: command.operation.clone(),
        attempt,
        occurred_at: at,
        metadata: command.metadata.clone(),
        result: None,
        provider_reference: None,
        next_attempt_at: None,
        error: None,
    }
}

impl<'a> Lifecycle<'a> {
    /// The lifecycle of `command`.
    pub fn of(command: &'a Command) -> Self {
        Self { command }
    }

    /// `pending`: accepted and durably queued.
    pub fn pending(&self, at: DateTime<Utc>) -> Event {
        event(self.command, 0, Status::Pending, at)
    }

    /// `failed` before attempt `attempt` could start (invalid or expired).
    pub fn reject(&self, attempt: u32, error: ErrorInfo, at: DateTime<Utc>) -> Event {
        let mut e = event(self.command, attempt, Status::Failed, at);
        e.error = Some(error);
        e
    }

    /// Starts attempt `n` (1-based): returns the attempt and its `processing` event.
    pub fn begin(&self, n: u32, at: DateTime<Utc>) -> (Attempt<'a>, Event) {
        let n = n.max(1);
        (
            Attempt {
                command: self.command,
                n,
            },
            event(self.command, n, Status::Processing, at),
        )
    }

    /// Resumes a command that is `waiting` after attempt `n`, to report how it ended.
    pub fn resume_waiting(&self, n: u32) -> Waiting<'a> {
        Waiting {
            command: self.command,
            n,
        }
    }
}

/// One attempt in progress; consumed by its outcome.
#[derive(Debug)]
#[must_use = "an attempt must end in exactly one outcome"]
pub struct Attempt<'a> {
    command: &'a Command,
    n: u32,
}

impl<'a> Attempt<'a> {
    /// The 1-based attempt number.
    pub fn number(&self) -> u32 {
        self.n
    }

    /// `completed` with the provider's result.
    pub fn complete(self, result: Value, reference: Option<String>, at: DateTime<Utc>) -> Event {
        let mut e = event(self.command, self.n, Status::Completed, at);
        e.result = Some(result);
        e.provider_reference = reference;
        e
    }

    /// `retrying`: the next attempt is due at `next_attempt_at`.
    pub fn retry(
        self,
        error: ErrorInfo,
        next_attempt_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Event {
        let mut e = event(self.command, self.n, Status::Retrying, at);
        e.error = Some(error);
        e.next_attempt_at = Some(next_attempt_at);
        e
    }

    /// `waiting`: the provider accepted long-running work under `reference`.
    pub fn wait(self, reference: String, at: DateTime<Utc>) -> (Waiting<'a>, Event) {
        let mut e = event(self.command, self.n, Status::Waiting, at);
        e.provider_reference = Some(reference);
        (
            Waiting {
                command: self.command,
                n: self.n,
            },
            e,
        )
    }

    /// `failed`: permanent, exhausted or expired.
    pub fn fail(self, error: ErrorInfo, at: DateTime<Utc>) -> Event {
        let mut e = event(self.command, self.n, Status::Failed, at);
        e.error = Some(error);
        e
    }
}

/// A command waiting for a long-running operation; consumed by how it ends.
#[derive(Debug)]
#[must_use = "a waiting command must end in exactly one outcome"]
pub struct Waiting<'a> {
    command: &'a Command,
    n: u32,
}

impl Waiting<'_> {
    /// `completed`, reported later by webhook or polling.
    pub fn complete(self, result: Value, reference: Option<String>, at: DateTime<Utc>) -> Event {
        Attempt {
            command: self.command,
            n: self.n,
        }
        .complete(result, reference, at)
    }

    /// `failed`, reported later by webhook or polling, or at the deadline.
    pub fn fail(self, error: ErrorInfo, at: DateTime<Utc>) -> Event {
        Attempt {
            command: self.command,
            n: self.n,
        }
        .fail(error, at)
    }
}

/// What [`Tracker::apply`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event moved the command forward.
    Advanced,
    /// Seen before (same `event_id`) or older than the current state: no effect.
    Ignored,
}

/// The current state of one command, folded from its events in any order.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    current: Option<(u64, Status)>,
}

impl Tracker {
    /// Applies an event: the highest `seq` wins and a terminal state is never left.
    pub fn apply(&mut self, event: &Event) -> Applied {
        match self.current {
            Some((_, status)) if status.is_terminal() => Applied::Ignored,
            Some((seq, _)) if event.seq <= seq => Applied::Ignored,
            _ => {
                self.current = Some((event.seq, event.status));
                Applied::Advanced
            }
        }
    }

    /// The current status, if any event was seen.
    pub fn status(&self) -> Option<Status> {
        self.current.map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;
    use proptest::prelude::*;

    fn command() -> Command {
        serde_json::from_value(serde_json::json!({
            "id": "0190b3f4-7f6e-7c3a-9d2e-3b1f2a4c5d6e",
            "kind": "payment", "provider": "stripe", "operation": "charge",
            "payload": {}, "created_at": "2026-11-25T10:00:00Z"
        }))
        .unwrap()
    }

    /// One way an attempt can end, as proptest chooses it.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Retry,
        Complete,
        Fail,
        WaitThenComplete,
        WaitThenFail,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            Just(Step::Retry),
            Just(Step::Complete),
            Just(Step::Fail),
            Just(Step::WaitThenComplete),
            Just(Step::WaitThenFail),
        ]
    }

    /// Drives the typestate API through `steps` (retries until a terminal step) and returns
    /// every event it produced.
    fn run(command: &Command, steps: &[Step]) -> Vec<Event> {
        let now = Utc::now();
        let err = || ErrorInfo::new(ErrorClass::Transient, "x", "x");
        let lc = Lifecycle::of(command);
        let mut events = vec![lc.pending(now)];
        for (i, s) in steps.iter().enumerate() {
            let (attempt, processing) = lc.begin(i as u32 + 1, now);
            events.push(processing);
            match s {
                Step::Retry => events.push(attempt.retry(err(), now, now)),
                Step::Complete => {
                    events.push(attempt.complete(Value::Null, None, now));
                    break;
                }
                Step::Fail => {
                    events.push(attempt.fail(err(), now));
                    break;
                }
                Step::WaitThenComplete | Step::WaitThenFail => {
                    let (waiting, e) = attempt.wait("ref".into(), now);
                    events.push(e);
                    events.push(match s {
                        Step::WaitThenComplete => waiting.complete(Value::Null, None, now),
                        _ => waiting.fail(err(), now),
                    });
                    break;
                }
            }
        }
        events
    }

    proptest! {
        #[test]
        fn every_produced_sequence_is_a_legal_lifecycle(steps in prop::collection::vec(step(), 1..12)) {
            let c = command();
            let events = run(&c, &steps);
            for pair in events.windows(2) {
                prop_assert!(pair[0].status.may_precede(pair[1].status),
                    "{} -> {}", pair[0].status, pair[1].status);
                prop_assert!(pair[0].seq < pair[1].seq);
            }
            let terminals = events.iter().filter(|e| e.status.is_terminal()).count();
            prop_assert!(terminals <= 1);
            // Every id is unique and deterministic.
            let again = run(&c, &steps);
            for (a, b) in events.iter().zip(&again) {
                prop_assert_eq!(a.event_id, b.event_id);
            }
            let mut ids: Vec<_> = events.iter().map(|e| e.event_id).collect();
            ids.sort();
            ids.dedup();
            prop_assert_eq!(ids.len(), events.len());
        }

        #[test]
        fn highest_seq_wins_whatever_the_order_and_duplicates(
            steps in prop::collection::vec(step(), 1..8),
            order in prop::collection::vec(any::<prop::sample::Index>(), 1..40),
        ) {
            let c = command();
            let events = run(&c, &steps);
            // Deliver a shuffled stream with duplicates, then make sure everything arrived once.
            let mut delivered: Vec<&Event> = order.iter().map(|i| &events[i.index(events.len())]).collect();
            delivered.extend(events.iter());
            let mut t = Tracker::default();
            for e in delivered {
                t.apply(e);
            }
            let last = events.last().unwrap();
            prop_assert_eq!(t.status(), Some(last.status));
        }
    }

    #[test]
    fn terminal_state_is_never_left() {
        let c = command();
        let now = Utc::now();
        let lc = Lifecycle::of(&c);
        let (a, _) = lc.begin(1, now);
        let done = a.complete(Value::Null, None, now);
        let (_, later) = lc.begin(5, now);
        let mut t = Tracker::default();
        assert_eq!(t.apply(&done), Applied::Advanced);
        assert_eq!(t.apply(&later), Applied::Ignored);
        assert_eq!(t.status(), Some(Status::Completed));
    }
}
