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

/// Each attempt owns four consecutive `seq` values: processing, then retrying, waiting or
/// unknown, then terminal.
const PHASES: u64 = 4;

/// Each run owns this many `seq` values, so a replay's events sort above every event of the
/// runs before it ("highest `seq` wins" across runs). Attempts per run are capped far below
/// `RUN_SPAN / PHASES` by the configuration.
pub const RUN_SPAN: u64 = 1_000_000;

/// The most attempts one run may have (the configuration refuses more).
pub const MAX_ATTEMPTS_PER_RUN: u32 = 1_000;

fn seq_of(run: u32, attempt: u32, status: Status) -> u64 {
    let phase = match status {
        Status::Pending => 0,
        Status::Processing => 1,
        Status::Retrying | Status::Waiting | Status::Unknown => 2,
        Status::Completed | Status::Failed | Status::Duplicate => 3,
    };
    u64::from(run) * RUN_SPAN + u64::from(attempt) * PHASES + phase
}

/// The deterministic id of a transition: replaying it yields the same id.
pub fn event_id(command_id: Uuid, seq: u64, status: Status) -> Uuid {
    Uuid::new_v5(&command_id, format!("{seq}.{status}").as_bytes())
}

/// Builds the events of one run of one command.
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle<'a> {
    command: &'a Command,
    run: u32,
}

fn event(command: &Command, run: u32, attempt: u32, status: Status, at: DateTime<Utc>) -> Event {
    let seq = seq_of(run, attempt, status);
    Event {
        event_id: event_id(command.id, seq, status),
        command_id: command.id,
        seq,
        run,
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
        duplicate_of: None,
    }
}

impl<'a> Lifecycle<'a> {
    /// The first run of `command`.
    pub fn of(command: &'a Command) -> Self {
        Self { command, run: 0 }
    }

    /// Run `run` of `command` (0 first, n for the n-th replay).
    pub fn run(command: &'a Command, run: u32) -> Self {
        Self { command, run }
    }

    /// The run these events belong to.
    pub fn run_number(&self) -> u32 {
        self.run
    }

    /// `pending`: accepted and durably queued.
    pub fn pending(&self, at: DateTime<Utc>) -> Event {
        event(self.command, self.run, 0, Status::Pending, at)
    }

    /// `failed` before attempt `attempt` could start (invalid or expired).
    pub fn reject(&self, attempt: u32, error: ErrorInfo, at: DateTime<Utc>) -> Event {
        let mut e = event(self.command, self.run, attempt, Status::Failed, at);
        e.error = Some(error);
        e
    }

    /// `duplicate`: this command repeated `original`'s identity and fingerprint and was not
    /// executed. The only event of this id.
    pub fn duplicate(&self, original: Uuid, at: DateTime<Utc>) -> Event {
        let mut e = event(self.command, self.run, 0, Status::Duplicate, at);
        e.duplicate_of = Some(original);
        e
    }

    /// Starts attempt `n` (1-based): returns the attempt and its `processing` event.
    pub fn begin(&self, n: u32, at: DateTime<Utc>) -> (Attempt<'a>, Event) {
        let n = n.max(1);
        (
            Attempt {
                command: self.command,
                run: self.run,
                n,
            },
            event(self.command, self.run, n, Status::Processing, at),
        )
    }

    /// Resumes a command that is `waiting` (or `unknown`) after attempt `n`, to report how it
    /// ended.
    pub fn resume_waiting(&self, n: u32) -> Waiting<'a> {
        Waiting {
            command: self.command,
            run: self.run,
            n,
        }
    }
}

/// One attempt in progress; consumed by its outcome.
#[derive(Debug)]
#[must_use = "an attempt must end in exactly one outcome"]
pub struct Attempt<'a> {
    command: &'a Command,
    run: u32,
    n: u32,
}

impl<'a> Attempt<'a> {
    /// The 1-based attempt number.
    pub fn number(&self) -> u32 {
        self.n
    }

    /// `completed` with the provider's result.
    pub fn complete(self, result: Value, reference: Option<String>, at: DateTime<Utc>) -> Event {
        let mut e = event(self.command, self.run, self.n, Status::Completed, at);
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
        let mut e = event(self.command, self.run, self.n, Status::Retrying, at);
        e.error = Some(error);
        e.next_attempt_at = Some(next_attempt_at);
        e
    }

    /// `waiting`: the provider accepted long-running work under `reference`.
    pub fn wait(self, reference: String, at: DateTime<Utc>) -> (Waiting<'a>, Event) {
        let mut e = event(self.command, self.run, self.n, Status::Waiting, at);
        e.provider_reference = Some(reference);
        (
            Waiting {
                command: self.command,
                run: self.run,
                n: self.n,
            },
            e,
        )
    }

    /// `unknown`: the provider may have acted but its answer cannot be read. Like `waiting`,
    /// a status check or an operator ends it.
    pub fn unknown(self, error: ErrorInfo, at: DateTime<Utc>) -> (Waiting<'a>, Event) {
        let mut e = event(self.command, self.run, self.n, Status::Unknown, at);
        e.error = Some(error);
        (
            Waiting {
                command: self.command,
                run: self.run,
                n: self.n,
            },
            e,
        )
    }

    /// `failed`: permanent, exhausted or expired.
    pub fn fail(self, error: ErrorInfo, at: DateTime<Utc>) -> Event {
        let mut e = event(self.command, self.run, self.n, Status::Failed, at);
        e.error = Some(error);
        e
    }
}

/// A command waiting for a long-running operation; consumed by how it ends.
#[derive(Debug)]
#[must_use = "a waiting command must end in exactly one outcome"]
pub struct Waiting<'a> {
    command: &'a Command,
    run: u32,
    n: u32,
}

impl Waiting<'_> {
    /// `completed`, reported later by webhook or polling.
    pub fn complete(self, result: Value, reference: Option<String>, at: DateTime<Utc>) -> Event {
        Attempt {
            command: self.command,
            run: self.run,
            n: self.n,
        }
        .complete(result, reference, at)
    }

    /// `failed`, reported later by webhook or polling, or at the deadline.
    pub fn fail(self, error: ErrorInfo, at: DateTime<Utc>) -> Event {
        Attempt {
            command: self.command,
            run: self.run,
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
    current: Option<(u64, u32, Status)>,
}

impl Tracker {
    /// Applies an event: the highest `seq` wins; a terminal state is left only by a later run
    /// (a replay reopens the command).
    pub fn apply(&mut self, event: &Event) -> Applied {
        match self.current {
            Some((_, run, status)) if status.is_terminal() && event.run <= run => Applied::Ignored,
            Some((seq, _, _)) if event.seq <= seq => Applied::Ignored,
            _ => {
                self.current = Some((event.seq, event.run, event.status));
                Applied::Advanced
            }
        }
    }

    /// The current status, if any event was seen.
    pub fn status(&self) -> Option<Status> {
        self.current.map(|(_, _, s)| s)
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
    fn a_later_run_reopens_and_sorts_above_every_earlier_event() {
        let c = command();
        let now = Utc::now();
        let err = || ErrorInfo::new(ErrorClass::Permanent, "x", "x");
        let (a, _) = Lifecycle::of(&c).begin(MAX_ATTEMPTS_PER_RUN, now);
        let failed = a.fail(err(), now);
        let replay = Lifecycle::run(&c, 1);
        let (b, processing) = replay.begin(1, now);
        let done = b.complete(Value::Null, None, now);
        assert!(processing.seq > failed.seq && done.seq > processing.seq);
        assert_eq!((processing.run, done.run), (1, 1));
        assert_ne!(
            processing.event_id,
            Lifecycle::of(&c).begin(1, now).1.event_id
        );
        let mut t = Tracker::default();
        t.apply(&failed);
        // An old run's late event changes nothing; the next run's does.
        assert_eq!(
            t.apply(&Lifecycle::of(&c).begin(2, now).1),
            Applied::Ignored
        );
        assert_eq!(t.apply(&processing), Applied::Advanced);
        assert_eq!(t.apply(&done), Applied::Advanced);
        assert_eq!(t.apply(&failed), Applied::Ignored);
        assert_eq!(t.status(), Some(Status::Completed));
    }

    #[test]
    fn unknown_is_ended_like_waiting_and_duplicate_names_the_original() {
        let c = command();
        let now = Utc::now();
        let (a, _) = Lifecycle::of(&c).begin(1, now);
        let (later, unknown) = a.unknown(ErrorInfo::new(ErrorClass::Unknown, "x", "x"), now);
        assert_eq!(unknown.status, Status::Unknown);
        assert!(!unknown.status.is_terminal());
        let done = later.complete(Value::Null, None, now);
        assert!(Status::Unknown.may_precede(done.status) && done.seq > unknown.seq);
        let original = Uuid::now_v7();
        let dup = Lifecycle::of(&c).duplicate(original, now);
        assert_eq!(
            (dup.status, dup.duplicate_of),
            (Status::Duplicate, Some(original))
        );
        assert!(dup.status.is_terminal());
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
