//! Helpers shared by the end-to-end tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use switchyard_core::{Event, Status};

/// The statuses of `events`, in arrival order.
pub fn statuses(events: &[Event]) -> Vec<Status> {
    events.iter().map(|e| e.status).collect()
}

/// The one terminal event; panics if there is not exactly one, or if anything follows it.
pub fn terminal(events: &[Event]) -> &Event {
    let terminals: Vec<&Event> = events.iter().filter(|e| e.status.is_terminal()).collect();
    assert_eq!(
        terminals.len(),
        1,
        "exactly one terminal event: {events:#?}"
    );
    let t = terminals[0];
    assert!(
        events.iter().all(|e| e.seq <= t.seq),
        "nothing may follow a terminal status: {events:#?}"
    );
    t
}

/// A workspace binary built by `cargo build --bins` (the test command does it first).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` before the tests (./dev test does)",
        path.display()
    );
    path
}
