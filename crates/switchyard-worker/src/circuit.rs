//! A provider's circuit breaker: closed, open, half-open, judged over a bucketed time window.
//!
//! Each call costs the same whatever the rate: the window is a ring of counter pairs, one per
//! tenth of `window_ms`, with running totals, so recording a call and judging the window are
//! a few additions under an uncontended lock. A breaker that keeps one record per call and
//! counts them again on every call (as `tower-resilience-circuitbreaker` does) cost 3.4 µs per
//! call at an empty window and 24.5 µs at 32,000 calls in it (docs/design/0007).
//!
//! The state machine is pure: every step takes the time it happens at, so tests drive it with
//! made-up instants and the service passes the clock.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::stack::CircuitSettings;

/// Where a circuit stands, for its gauge and its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through; their outcomes fill the window.
    Closed,
    /// No call goes through until the open time has passed.
    Open,
    /// A few trial calls go through; their outcomes close or reopen it.
    HalfOpen,
}

/// Slots of the window's ring: ten for the window and one for the tenth being filled, so a
/// call counts for at least `window_ms` and at most a tenth longer.
const SLOTS: usize = 11;

/// Calls and failed calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    calls: u64,
    failures: u64,
}

/// The outcomes of the last `window_ms`, a tenth of it per slot.
#[derive(Debug)]
struct Window {
    slots: [Counts; SLOTS],
    /// The sum of `slots`, kept so judging the window reads two numbers.
    totals: Counts,
    /// The tick (tenths of the window since the breaker's epoch) of the newest slot.
    head: u64,
}

impl Window {
    fn new(tick: u64) -> Self {
        Self {
            slots: [Counts::default(); SLOTS],
            totals: Counts::default(),
            head: tick,
        }
    }

    /// Moves the ring to `tick`, forgetting the slots it passes over (at most all of them,
    /// however long the window sat idle).
    fn advance(&mut self, tick: u64) {
        if tick <= self.head {
            return;
        }
        let steps = (tick - self.head).min(SLOTS as u64);
        for step in 1..=steps {
            let slot = &mut self.slots[((self.head + step) % SLOTS as u64) as usize];
            self.totals.calls -= slot.calls;
            self.totals.failures -= slot.failures;
            *slot = Counts::default();
        }
        self.head = tick;
    }

    fn record(&mut self, tick: u64, failed: bool) {
        self.advance(tick);
        let slot = &mut self.slots[(self.head % SLOTS as u64) as usize];
        slot.calls += 1;
        self.totals.calls += 1;
        if failed {
            slot.failures += 1;
            self.totals.failures += 1;
        }
    }
}

/// The state machine, with what each state needs and nothing else.
#[derive(Debug)]
enum Phase {
    Closed(Window),
    Open {
        since: Instant,
    },
    HalfOpen {
        /// Which half-open spell this is: a trial admitted in an earlier one reports into
        /// nothing.
        spell: u64,
        /// Trials admitted and not yet given back.
        admitted: usize,
        succeeded: usize,
    },
}

impl Phase {
    fn state(&self) -> CircuitState {
        match self {
            Phase::Closed(_) => CircuitState::Closed,
            Phase::Open { .. } => CircuitState::Open,
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

/// What admitted a call, so its outcome is judged by the phase that let it through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ticket {
    Closed,
    Trial { spell: u64 },
}

/// Called on every change of state, under the breaker's lock so changes are seen in order.
type OnChange = Box<dyn Fn(CircuitState, CircuitState) + Send + Sync>;

struct Inner {
    settings: CircuitSettings,
    /// A tenth of the window, in nanoseconds (at least one).
    tick_nanos: u128,
    epoch: Instant,
    spells: u64,
    phase: Phase,
}

impl Inner {
    fn tick(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos() / self.tick_nanos;
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    fn admit(&mut self, now: Instant, on_change: &OnChange) -> Option<Ticket> {
        match &mut self.phase {
            Phase::Closed(_) => Some(Ticket::Closed),
            Phase::Open { since } => {
                if now.saturating_duration_since(*since) < self.settings.open {
                    return None;
                }
                self.spells += 1;
                let spell = self.spells;
                self.enter(
                    Phase::HalfOpen {
                        spell,
                        admitted: 1,
                        succeeded: 0,
                    },
                    on_change,
                );
                Some(Ticket::Trial { spell })
            }
            Phase::HalfOpen {
                spell, admitted, ..
            } => {
                if *admitted >= self.settings.half_open_calls {
                    return None;
                }
                *admitted += 1;
                Some(Ticket::Trial { spell: *spell })
            }
        }
    }

    fn record(&mut self, ticket: Ticket, failed: bool, now: Instant, on_change: &OnChange) {
        let tick = self.tick(now);
        let settings = &self.settings;
        let next = match (&mut self.phase, ticket) {
            (Phase::Closed(window), Ticket::Closed) => {
                window.record(tick, failed);
                let Counts { calls, failures } = window.totals;
                let opens = calls >= settings.min_calls as u64
                    && failures as f64 >= settings.failure_rate * calls as f64;
                opens.then_some(Phase::Open { since: now })
            }
            (
                Phase::HalfOpen {
                    spell, succeeded, ..
                },
                Ticket::Trial { spell: of },
            ) if *spell == of => {
                if failed {
                    Some(Phase::Open { since: now })
                } else {
                    *succeeded += 1;
                    (*succeeded >= settings.half_open_calls)
                        .then(|| Phase::Closed(Window::new(tick)))
                }
            }
            // A call let through by a phase that has since ended: the circuit has moved on
            // on other evidence.
            _ => None,
        };
        if let Some(next) = next {
            self.enter(next, on_change);
        }
    }

    /// A trial dropped before its outcome (its delivery was cancelled) frees its place.
    fn give_back(&mut self, ticket: Ticket) {
        if let (
            Phase::HalfOpen {
                spell, admitted, ..
            },
            Ticket::Trial { spell: of },
        ) = (&mut self.phase, ticket)
            && *spell == of
        {
            *admitted = admitted.saturating_sub(1);
        }
    }

    fn enter(&mut self, next: Phase, on_change: &OnChange) {
        let from = self.phase.state();
        self.phase = next;
        on_change(from, self.phase.state());
    }
}

/// A provider's circuit breaker; clones share it.
#[derive(Clone)]
pub struct Breaker {
    inner: Arc<Mutex<Inner>>,
    on_change: Arc<OnChange>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Breaker {
    /// A closed breaker whose window starts at `now`. `on_change(from, to)` runs on every
    /// change of state.
    pub fn new(
        settings: CircuitSettings,
        now: Instant,
        on_change: impl Fn(CircuitState, CircuitState) + Send + Sync + 'static,
    ) -> Self {
        let tick_nanos = (settings.window.as_nanos() / 10).max(1);
        Self {
            inner: Arc::new(Mutex::new(Inner {
                settings,
                tick_nanos,
                epoch: now,
                spells: 0,
                phase: Phase::Closed(Window::new(0)),
            })),
            on_change: Arc::new(Box::new(on_change)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing under the lock panics; were it poisoned, the state is still whole.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state now (for tests and the log).
    pub fn state(&self) -> CircuitState {
        self.lock().phase.state()
    }

    /// Lets a call through, or refuses it while the circuit is open (or half-open with all
    /// its trials out). The permit reports the call's outcome.
    pub fn admit(&self, now: Instant) -> Option<Permit> {
        let ticket = self.lock().admit(now, &self.on_change)?;
        Some(Permit {
            breaker: self.clone(),
            ticket: Some(ticket),
        })
    }
}

/// A call the breaker let through. Report its outcome with [`Permit::record`]; dropped
/// without one, a trial gives its place back and a closed call counts for nothing.
#[derive(Debug)]
pub struct Permit {
    breaker: Breaker,
    ticket: Option<Ticket>,
}

impl Permit {
    /// The call ended at `now`; `failed` says whether it speaks against the provider.
    pub fn record(mut self, failed: bool, now: Instant) {
        if let Some(ticket) = self.ticket.take() {
            let breaker = &self.breaker;
            breaker
                .lock()
                .record(ticket, failed, now, &breaker.on_change);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.lock().give_back(ticket);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn settings() -> CircuitSettings {
        CircuitSettings {
            failure_rate: 0.5,
            min_calls: 4,
            window: Duration::from_secs(10),
            open: Duration::from_secs(30),
            half_open_calls: 2,
        }
    }

    type Changes = Arc<Mutex<Vec<(CircuitState, CircuitState)>>>;

    fn breaker(t0: Instant) -> (Breaker, Changes) {
        let changes = Changes::default();
        let seen = changes.clone();
        let b = Breaker::new(settings(), t0, move |from, to| {
            seen.lock().unwrap().push((from, to))
        });
        (b, changes)
    }

    fn call(b: &Breaker, failed: bool, at: Instant) -> bool {
        match b.admit(at) {
            Some(p) => {
                p.record(failed, at);
                true
            }
            None => false,
        }
    }

    #[test]
    fn it_opens_at_the_failure_rate_once_there_are_enough_calls() {
        let t0 = Instant::now();
        let (b, changes) = breaker(t0);
        for failed in [true, true, true] {
            assert!(call(&b, failed, t0));
        }
        // Three of three failed, but fewer than `min_calls`.
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(call(&b, false, t0));
        // Three of four.
        assert_eq!(b.state(), CircuitState::Open);
        assert!(!call(&b, false, t0 + Duration::from_secs(29)));
        assert_eq!(
            *changes.lock().unwrap(),
            [(CircuitState::Closed, CircuitState::Open)]
        );
    }

    #[test]
    fn calls_older_than_the_window_no_longer_count() {
        let t0 = Instant::now();
        let (b, _) = breaker(t0);
        for _ in 0..3 {
            call(&b, true, t0);
        }
        // Eleven seconds later the three failures have left the 10-s window: three
        // successes and one failure are a quarter failed.
        let later = t0 + Duration::from_secs(11);
        for failed in [false, false, false, true] {
            call(&b, failed, later);
        }
        assert_eq!(b.state(), CircuitState::Closed);
        // Within the window they still count: 2 of 4 at 9.5 s.
        let (b, _) = breaker(t0);
        call(&b, true, t0);
        call(&b, true, t0);
        let soon = t0 + Duration::from_millis(9_500);
        call(&b, false, soon);
        call(&b, false, soon);
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn half_open_lets_its_trials_through_and_closes_when_they_all_succeed() {
        let t0 = Instant::now();
        let (b, changes) = breaker(t0);
        for _ in 0..4 {
            call(&b, true, t0);
        }
        let t1 = t0 + Duration::from_secs(30);
        let first = b.admit(t1).expect("the open time has passed");
        let second = b.admit(t1).expect("two trials");
        assert!(b.admit(t1).is_none(), "a third trial while two are out");
        assert_eq!(b.state(), CircuitState::HalfOpen);
        first.record(false, t1);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        second.record(false, t1);
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(
            *changes.lock().unwrap(),
            [
                (CircuitState::Closed, CircuitState::Open),
                (CircuitState::Open, CircuitState::HalfOpen),
                (CircuitState::HalfOpen, CircuitState::Closed),
            ]
        );
        // Closed again with an empty window: the old failures are forgotten.
        call(&b, true, t1);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn a_failed_trial_reopens_it_for_another_open_time() {
        let t0 = Instant::now();
        let (b, _) = breaker(t0);
        for _ in 0..4 {
            call(&b, true, t0);
        }
        let t1 = t0 + Duration::from_secs(30);
        assert!(call(&b, true, t1));
        assert_eq!(b.state(), CircuitState::Open);
        assert!(!call(&b, false, t1 + Duration::from_secs(29)));
        assert!(call(&b, false, t1 + Duration::from_secs(30)));
    }

    #[test]
    fn a_dropped_trial_gives_its_place_back_and_a_stale_outcome_counts_for_nothing() {
        let t0 = Instant::now();
        let (b, _) = breaker(t0);
        // Admitted while closed, finishing after the circuit opened.
        let slow = b.admit(t0).unwrap();
        for _ in 0..4 {
            call(&b, true, t0);
        }
        let t1 = t0 + Duration::from_secs(30);
        let trial = b.admit(t1).unwrap();
        let other = b.admit(t1).unwrap();
        assert!(b.admit(t1).is_none());
        drop(trial);
        // Its place is free again.
        let again = b.admit(t1).unwrap();
        // The closed-era call neither closes nor reopens the half-open circuit.
        slow.record(true, t1);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        other.record(false, t1);
        again.record(false, t1);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    proptest! {
        /// The ring's totals are exactly the calls of the slots it still holds: those of the
        /// last ten tenths and the current one, however time jumps.
        #[test]
        fn the_window_counts_exactly_the_calls_of_its_last_slots(
            steps in proptest::collection::vec((0_u64..15, any::<bool>()), 1..200)
        ) {
            let mut window = Window::new(0);
            let mut log: Vec<(u64, bool)> = Vec::new();
            let mut tick = 0;
            for (gap, failed) in steps {
                tick += gap;
                window.record(tick, failed);
                log.push((tick, failed));
                let kept = log.iter().filter(|(t, _)| t + SLOTS as u64 > tick);
                let expected = kept.fold(Counts::default(), |c, (_, f)| Counts {
                    calls: c.calls + 1,
                    failures: c.failures + u64::from(*f),
                });
                prop_assert_eq!(window.totals, expected);
                let sum = window.slots.iter().fold(Counts::default(), |c, s| Counts {
                    calls: c.calls + s.calls,
                    failures: c.failures + s.failures,
                });
                prop_assert_eq!(window.totals, sum);
            }
        }
    }
}
