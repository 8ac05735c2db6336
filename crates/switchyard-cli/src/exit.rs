//! The exit codes of `switchyard`, and the error type that carries one.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | runtime failure: broker or ingress unreachable, a publish not confirmed, a bad answer |
//! | 2 | usage error: unknown option, bad value, a missing `--yes` where no terminal can ask |
//! | 3 | not found: `status <id>` unknown to the ledger, `dlq show|replay <id>` not in any DLQ |
//! | 4 | `topology check` found something missing or different |

use std::fmt;

/// Success.
pub const OK: u8 = 0;
/// A runtime failure (the default for any error).
pub const FAILURE: u8 = 1;
/// A usage error (also what clap exits with).
pub const USAGE: u8 = 2;
/// What was asked for does not exist.
pub const NOT_FOUND: u8 = 3;
/// `topology check` found the broker out of order.
pub const CHECK_FAILED: u8 = 4;

/// An error with a specific exit code; any other error exits with [`FAILURE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// The process exit code.
    pub code: u8,
    /// What to print after `error: `.
    pub message: String,
}

impl CliError {
    /// Not found (exit code 3).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            code: NOT_FOUND,
            message: message.into(),
        }
    }

    /// A usage error (exit code 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: USAGE,
            message: message.into(),
        }
    }

    /// A failed topology check (exit code 4).
    pub fn check_failed(message: impl Into<String>) -> Self {
        Self {
            code: CHECK_FAILED,
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// The exit code for `err`: its own when it is (or wraps) a [`CliError`], else [`FAILURE`].
pub fn code_of(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<CliError>())
        .map_or(FAILURE, |e| e.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_survive_context() {
        let e = anyhow::Error::new(CliError::not_found("no such command"));
        assert_eq!(code_of(&e), NOT_FOUND);
        let e = e.context("while asking the ledger");
        assert_eq!(code_of(&e), NOT_FOUND);
        assert_eq!(code_of(&anyhow::anyhow!("boom")), FAILURE);
    }
}
