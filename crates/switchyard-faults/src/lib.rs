//! Named fault points, for proving crash safety step by step.
//!
//! A component calls [`point`] at each step where a crash must be survivable (after the
//! provider answered, after a retry copy is confirmed, before the ack, ...). The points are
//! compiled into the release binaries and cost one relaxed load while `SWITCHYARD_FAULTS` is
//! unset. When it names a point, e.g. `SWITCHYARD_FAULTS=after_retry_publish:0.2,before_ack`,
//! the process aborts there with that probability (1 when no probability is given): no
//! destructor runs, nothing is flushed or acknowledged, exactly as with `kill -9`.
//!
//! Only the names in [`POINTS`] exist; [`arm_from_env`] refuses any other, so a typo cannot
//! make a chaos run test nothing.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The environment variable that arms fault points.
pub const ENV: &str = "SWITCHYARD_FAULTS";

/// Every fault point, by component and in the order a delivery meets them.
pub const POINTS: &[&str] = &[
    // worker
    "before_begin",
    "after_begin",
    "after_provider_answer",
    "after_decide",
    "after_retry_publish",
    "after_dead_letter_publish",
    "after_wait_publish",
    "after_terminal_event",
    "after_check_scheduled",
    "before_ack",
    // ingress
    "after_admit",
    "after_command_publish",
    // ledger
    "after_ledger_commit",
    "after_resolution",
];

static ARMED: OnceLock<HashMap<&'static str, f64>> = OnceLock::new();

/// A `SWITCHYARD_FAULTS` value that names no known point or has a bad probability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFaults(pub String);

impl std::fmt::Display for BadFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{ENV}: {}", self.0)
    }
}

impl std::error::Error for BadFaults {}

/// Parses `name[:probability],...`.
pub fn parse(spec: &str) -> Result<HashMap<&'static str, f64>, BadFaults> {
    let mut armed = HashMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, p) = match item.split_once(':') {
            Some((n, p)) => {
                let p: f64 = p
                    .trim()
                    .parse()
                    .map_err(|_| BadFaults(format!("{item:?}: the probability is not a number")))?;
                (n.trim(), p)
            }
            None => (item, 1.0),
        };
        if !(0.0..=1.0).contains(&p) {
            return Err(BadFaults(format!(
                "{item:?}: the probability must be within 0..=1"
            )));
        }
        let Some(known) = POINTS.iter().find(|k| **k == name) else {
            return Err(BadFaults(format!(
                "no fault point {name:?}; the points are {}",
                POINTS.join(", ")
            )));
        };
        armed.insert(*known, p);
    }
    Ok(armed)
}

/// Arms the points `SWITCHYARD_FAULTS` names, once per process; call it at start-up so a bad
/// value stops the process before it does anything.
pub fn arm_from_env() -> Result<(), BadFaults> {
    let armed = match std::env::var(ENV) {
        Ok(spec) => parse(&spec)?,
        Err(_) => HashMap::new(),
    };
    if !armed.is_empty() {
        tracing::warn!(faults = ?armed, "fault points armed: this process will abort on purpose");
    }
    let _ = ARMED.set(armed);
    Ok(())
}

/// Aborts the process here if `name` is armed (with its probability).
pub fn point(name: &'static str) {
    let Some(armed) = ARMED.get() else { return };
    if let Some(p) = armed.get(name)
        && rand::random::<f64>() < *p
    {
        tracing::error!(point = name, "fault point fired: aborting");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_points_and_refuses_the_rest() {
        let armed = parse("after_retry_publish:0.2, before_ack").unwrap_or_default();
        assert_eq!(armed.get("after_retry_publish"), Some(&0.2));
        assert_eq!(armed.get("before_ack"), Some(&1.0));
        assert!(parse("after_retyr_publish:0.2").is_err());
        assert!(parse("before_ack:2").is_err());
        assert!(parse("before_ack:x").is_err());
        assert_eq!(parse("").map(|a| a.len()), Ok(0));
    }

    #[test]
    fn an_unarmed_point_does_nothing() {
        point("before_ack");
    }
}
