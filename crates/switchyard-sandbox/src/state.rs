//! Everything the sandbox remembers, in memory: the idempotency ledger, effect counts,
//! scenarios and the per-command request log.
//!
//! One std `Mutex` guards it all; every method takes the lock briefly and never across an
//! `.await`, so a hanging request cannot block anyone else.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;

use crate::callback::Outcome;
use crate::scenario::{Script, Step};

/// Shared handle to the sandbox's memory; clones see the same data.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ledger {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    executions: u64,
    total_requests: u64,
    total_effects: u64,
    effects: BTreeMap<String, u64>,
    keys: HashMap<String, KeyEntry>,
    scripts: HashMap<String, Script>,
    commands: HashMap<String, Vec<RequestRecord>>,
    operations: HashMap<String, Operation>,
    status_checks: HashMap<String, u64>,
    vendors: VendorCounts,
}

/// Counters of vendor emulators whose work is not only effects (tokens fetched, upserts),
/// shown flat in `GET /_sandbox/stats`.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub(crate) struct VendorCounts {
    /// Every request to PayPal's token endpoint, granted or not.
    pub(crate) paypal_token_requests: u64,
    /// Access tokens PayPal's token endpoint issued.
    pub(crate) paypal_tokens_issued: u64,
    /// Orders captured: one per order, however many retries asked.
    pub(crate) paypal_captures: u64,
    /// Contact upserts the CRM executed (replays of an `Idempotency-Key` not included).
    pub(crate) crm_upserts: u64,
}

/// A long-running operation the sandbox accepted, by reference.
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    pub(crate) kind: String,
    /// How it ends; `None` never ends.
    pub(crate) outcome: Option<Outcome>,
    pub(crate) done_at: Instant,
}

impl Operation {
    /// How it stands at `now`: `None` while running.
    pub(crate) fn outcome_at(&self, now: Instant) -> Option<Outcome> {
        self.outcome.filter(|_| now >= self.done_at)
    }
}

/// The state of one idempotency key.
#[derive(Debug)]
enum KeyEntry {
    /// A request with this key is executing right now.
    InFlight,
    /// A request executed; later ones with the same body get this response back.
    Done(Stored),
}

/// A response kept for replay, byte for byte.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) body_sha256: String,
    pub(crate) status: u16,
    pub(crate) body: Bytes,
}

/// What the ledger says about a request that wants to execute.
#[derive(Debug)]
pub(crate) enum Begin {
    /// First to execute under this key: do it, then [`Execution::complete`].
    Execute(Execution),
    /// Already executed with the same body: send this back.
    Replay(Stored),
    /// Already executed with another body.
    Mismatch,
    /// Another request with this key is still executing.
    InUse,
}

/// One request as the command view shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RequestRecord {
    pub(crate) idempotency_key: Option<String>,
    pub(crate) body_sha256: String,
    /// `null` while unanswered (and forever for `hang` and `lost`).
    pub(crate) status: Option<u16>,
    pub(crate) replayed: bool,
    pub(crate) at_ms: u64,
    pub(crate) kind: String,
    pub(crate) operation: String,
    /// The scenario step applied, when the command has a scenario.
    pub(crate) step: Option<String>,
    pub(crate) headers: BTreeMap<String, String>,
}

/// Where a request's record lives, to fill in its outcome later.
#[derive(Debug, Clone)]
pub(crate) struct RecordRef {
    command_id: String,
    index: usize,
}

/// `GET /_sandbox/stats`.
#[derive(Debug, Serialize)]
pub(crate) struct StatsView {
    pub(crate) total_requests: u64,
    pub(crate) total_effects: u64,
    pub(crate) effects: BTreeMap<String, u64>,
    #[serde(flatten)]
    pub(crate) vendors: VendorCounts,
}

/// `GET /_sandbox/commands/{command_id}`.
#[derive(Debug, Serialize)]
pub(crate) struct CommandView {
    pub(crate) command_id: String,
    pub(crate) requests: Vec<RequestRecord>,
    pub(crate) effects: u64,
    /// Status checks made for this command's operations.
    pub(crate) status_checks: u64,
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not turn every later request into another panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers an accepted operation (the first acceptance of a reference wins).
    pub(crate) fn accept_operation(&self, reference: &str, operation: Operation) {
        self.lock()
            .operations
            .entry(reference.to_owned())
            .or_insert(operation);
    }

    /// The accepted operation under `reference`, if any.
    pub(crate) fn operation(&self, reference: &str) -> Option<Operation> {
        self.lock().operations.get(reference).cloned()
    }

    /// Counts one effect under `key`, for providers without idempotency (each request
    /// that executes is an effect, however often the same key arrives).
    pub(crate) fn count_effect(&self, key: &str) {
        let mut inner = self.lock();
        *inner.effects.entry(key.to_owned()).or_default() += 1;
        inner.total_effects += 1;
    }

    /// Counts a status check, by the command that asked.
    pub(crate) fn count_status_check(&self, command_id: &str) {
        *self
            .lock()
            .status_checks
            .entry(command_id.to_owned())
            .or_default() += 1;
    }

    pub(crate) fn count_request(&self) {
        self.lock().total_requests += 1;
    }

    /// Bumps one of the vendor counters.
    pub(crate) fn count_vendor(&self, bump: impl FnOnce(&mut VendorCounts)) {
        bump(&mut self.lock().vendors);
    }

    /// A number no other execution has: how a provider without idempotency keeps each
    /// request its own effect.
    pub(crate) fn next_execution(&self) -> u64 {
        let mut inner = self.lock();
        inner.executions += 1;
        inner.executions
    }

    /// Replaces the command's script and restarts it from its first step.
    pub(crate) fn set_script(&self, command_id: &str, steps: Vec<Step>) {
        self.lock()
            .scripts
            .insert(command_id.to_owned(), Script::new(steps));
    }

    /// The step for this attempt of the command, or `None` when it has no scenario.
    pub(crate) fn next_step(&self, command_id: &str) -> Option<Step> {
        self.lock().scripts.get_mut(command_id).map(Script::advance)
    }

    pub(crate) fn record(&self, command_id: &str, record: RequestRecord) -> RecordRef {
        let mut inner = self.lock();
        let requests = inner.commands.entry(command_id.to_owned()).or_default();
        requests.push(record);
        RecordRef {
            command_id: command_id.to_owned(),
            index: requests.len() - 1,
        }
    }

    pub(crate) fn update_record(&self, at: &RecordRef, update: impl FnOnce(&mut RequestRecord)) {
        let mut inner = self.lock();
        if let Some(record) = inner
            .commands
            .get_mut(&at.command_id)
            .and_then(|requests| requests.get_mut(at.index))
        {
            update(record);
        }
    }

    /// Claims the key for execution, or says why this request must not execute.
    pub(crate) fn begin(&self, key: &str, body_sha256: &str) -> Begin {
        let mut inner = self.lock();
        match inner.keys.get(key) {
            None => {
                inner.keys.insert(key.to_owned(), KeyEntry::InFlight);
                Begin::Execute(Execution {
                    ledger: self.clone(),
                    key: key.to_owned(),
                    body_sha256: body_sha256.to_owned(),
                    finished: false,
                })
            }
            Some(KeyEntry::InFlight) => Begin::InUse,
            Some(KeyEntry::Done(stored)) if stored.body_sha256 != body_sha256 => Begin::Mismatch,
            Some(KeyEntry::Done(stored)) => Begin::Replay(stored.clone()),
        }
    }

    pub(crate) fn stats(&self) -> StatsView {
        let inner = self.lock();
        StatsView {
            total_requests: inner.total_requests,
            total_effects: inner.total_effects,
            effects: inner.effects.clone(),
            vendors: inner.vendors,
        }
    }

    /// The command's requests and the effects of the keys they carried, plus those counted
    /// under the command itself (by vendors without idempotency keys, e.g. EasyPost). A
    /// command known only by its status checks (asked about an operation whose request never
    /// arrived) has a view too: those checks are requests the provider saw.
    pub(crate) fn command(&self, command_id: &str) -> Option<CommandView> {
        let inner = self.lock();
        let status_checks = inner.status_checks.get(command_id).copied().unwrap_or(0);
        let requests = match inner.commands.get(command_id) {
            Some(requests) => requests.clone(),
            None if status_checks > 0 => Vec::new(),
            None => return None,
        };
        let mut keys: BTreeSet<&str> = requests
            .iter()
            .filter_map(|r| r.idempotency_key.as_deref())
            .collect();
        keys.insert(command_id);
        let effects = keys.iter().filter_map(|key| inner.effects.get(*key)).sum();
        Some(CommandView {
            command_id: command_id.to_owned(),
            requests,
            effects,
            status_checks,
        })
    }
}

/// A claimed key. Dropping it unfinished (the client went away mid-execution) releases the
/// key without an effect, so a retry can execute.
#[derive(Debug)]
pub(crate) struct Execution {
    ledger: Ledger,
    key: String,
    body_sha256: String,
    finished: bool,
}

impl Execution {
    /// Stores the response for replay and counts one effect.
    pub(crate) fn complete(mut self, status: u16, body: Bytes) {
        self.finished = true;
        let mut inner = self.ledger.lock();
        let stored = Stored {
            body_sha256: std::mem::take(&mut self.body_sha256),
            status,
            body,
        };
        inner.keys.insert(self.key.clone(), KeyEntry::Done(stored));
        *inner.effects.entry(self.key.clone()).or_default() += 1;
        inner.total_effects += 1;
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        if !self.finished {
            let mut inner = self.ledger.lock();
            if matches!(inner.keys.get(&self.key), Some(KeyEntry::InFlight)) {
                inner.keys.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, hash: &str) -> RequestRecord {
        RequestRecord {
            idempotency_key: Some(key.to_owned()),
            body_sha256: hash.to_owned(),
            status: None,
            replayed: false,
            at_ms: 0,
            kind: "payment".to_owned(),
            operation: "charge".to_owned(),
            step: None,
            headers: BTreeMap::new(),
        }
    }

    #[test]
    fn first_request_executes_then_same_body_replays_and_other_body_mismatches() {
        let ledger = Ledger::default();
        let Begin::Execute(execution) = ledger.begin("k1", "h1") else {
            panic!("first request must execute");
        };
        assert!(matches!(ledger.begin("k1", "h1"), Begin::InUse));
        execution.complete(200, Bytes::from_static(b"{}"));

        match ledger.begin("k1", "h1") {
            Begin::Replay(stored) => {
                assert_eq!(stored.status, 200);
                assert_eq!(stored.body, Bytes::from_static(b"{}"));
            }
            other => panic!("expected a replay, got {other:?}"),
        }
        assert!(matches!(ledger.begin("k1", "h2"), Begin::Mismatch));

        let stats = ledger.stats();
        assert_eq!(stats.total_effects, 1);
        assert_eq!(stats.effects.get("k1"), Some(&1));
    }

    #[test]
    fn abandoned_execution_releases_the_key_without_an_effect() {
        let ledger = Ledger::default();
        let Begin::Execute(execution) = ledger.begin("k1", "h1") else {
            panic!("first request must execute");
        };
        drop(execution);
        assert!(matches!(ledger.begin("k1", "h1"), Begin::Execute(_)));
        assert_eq!(ledger.stats().total_effects, 0);
    }

    #[test]
    fn command_view_sums_effects_of_its_keys_only() {
        let ledger = Ledger::default();
        for key in ["a", "b"] {
            let Begin::Execute(execution) = ledger.begin(key, "h") else {
                panic!("must execute");
            };
            execution.complete(200, Bytes::new());
        }
        assert!(ledger.command("cmd").is_none());
        let at = ledger.record("cmd", record("a", "h"));
        ledger.update_record(&at, |r| r.status = Some(200));

        let view = ledger.command("cmd").unwrap();
        assert_eq!(view.effects, 1);
        assert_eq!(view.requests.len(), 1);
        assert_eq!(view.requests[0].status, Some(200));
        assert_eq!(ledger.stats().total_effects, 2);
    }

    /// A worker that died before its request arrived leaves the command in doubt; the status
    /// check that settles it is then the only request the provider saw of it.
    #[test]
    fn a_command_known_only_by_its_status_checks_has_a_view() {
        let ledger = Ledger::default();
        ledger.count_status_check("cmd");
        let view = ledger.command("cmd").unwrap();
        assert_eq!(view.status_checks, 1);
        assert!(view.requests.is_empty());
        assert_eq!(view.effects, 0);
    }

    #[test]
    fn scripts_are_per_command_and_absent_without_a_scenario() {
        let ledger = Ledger::default();
        assert_eq!(ledger.next_step("cmd"), None);
        ledger.set_script("cmd", vec![Step::Hang]);
        assert_eq!(ledger.next_step("cmd"), Some(Step::Hang));
        assert_eq!(ledger.next_step("cmd"), Some(Step::Ok));
        assert_eq!(ledger.next_step("other"), None);
    }
}
