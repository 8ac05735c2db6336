//! Scripted behaviour for the successive attempts of one command.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What the sandbox does with one attempt of a scripted command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Execute and answer 200 (replaying if the key already executed).
    Ok,
    /// Execute and answer 202 with a reference: a long-running operation accepted, finished
    /// later by a signed callback (when the sandbox has a webhook target).
    Accept(Finish),
    /// Answer this status with an error body, without executing or storing anything.
    Status(u16),
    /// Answer 429 with `Retry-After` in seconds, without executing.
    TooManyRequests {
        /// Seconds sent in `Retry-After`.
        retry_after_secs: u64,
    },
    /// Never answer, without executing: the client must time out.
    Hang,
    /// Execute and store the 200, then never answer: the response is lost in transit.
    Lost,
    /// Wait, then behave as [`Step::Ok`].
    Slow(Duration),
    /// Answer this status with a body full of card data and secrets, as careless providers
    /// do (executing when 2xx): what redaction must catch.
    Leak(u16),
    /// Execute, then answer 200 with a body that is not JSON.
    Garbled,
    /// Execute, then answer 200 with a body larger than any client reads (4 MiB).
    Huge,
    /// Execute and accept long-running work, but answer 202 without a reference.
    NoReference,
    /// Execute and accept long-running work under a reference holding a NUL character.
    NulReference,
    /// Answer PayPal's 422 `UNPROCESSABLE_ENTITY` with this issue (one of
    /// [`PAYPAL_422_ISSUES`]), without executing; other emulators answer a plain 422.
    PayPal422(&'static str),
}

/// The issues `paypal422:ISSUE` can script: PayPal's documented 422 issues on the Orders
/// API, with the description PayPal sends. `PREVIOUS_REQUEST_IN_PROGRESS` is the one PayPal
/// documents as worth retrying.
pub const PAYPAL_422_ISSUES: [(&str, &str); 7] = [
    (
        "PREVIOUS_REQUEST_IN_PROGRESS",
        "A previous request on this resource is currently in progress. Please wait for some time and try again.",
    ),
    (
        "INSTRUMENT_DECLINED",
        "The instrument presented was either declined by the processor or bank, or it can't be used for this payment.",
    ),
    ("TRANSACTION_REFUSED", "The request was refused."),
    (
        "ORDER_NOT_APPROVED",
        "Payer has not yet approved the Order for payment.",
    ),
    (
        "PAYER_ACTION_REQUIRED",
        "Transaction cannot complete successfully, instruct the buyer to return to PayPal.",
    ),
    (
        "ORDER_ALREADY_CAPTURED",
        "Order already captured. If 'intent=CAPTURE' only one capture per order is allowed.",
    ),
    (
        "DUPLICATE_INVOICE_ID",
        "Duplicate Invoice ID detected. To avoid a potential duplicate transaction your account setting requires that Invoice Id be unique for each transaction.",
    ),
];

/// How an accepted operation is reported finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// A `succeeded` callback after the configured delay.
    Succeed,
    /// A `failed` callback after the configured delay.
    Fail,
    /// No callback at all: the command waits until its deadline.
    Silent,
    /// A `succeeded` callback delivered before the 202 answers: the callback overtakes the
    /// worker's own report that the command is waiting.
    Early,
}

/// A step string the sandbox does not understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scenario step {0:?} (expected ok, accept, accept:fail, accept:silent, accept:early, hang, lost, garbled, huge, noref, nulref, a status 200..=599, 429:SECS, slow:MS, leak:STATUS or paypal422:ISSUE)"
)]
pub struct StepParseError(pub String);

impl FromStr for Step {
    type Err = StepParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || StepParseError(s.to_owned());
        let parsed = match s {
            "ok" => Step::Ok,
            "accept" => Step::Accept(Finish::Succeed),
            "accept:fail" => Step::Accept(Finish::Fail),
            "accept:silent" => Step::Accept(Finish::Silent),
            "accept:early" => Step::Accept(Finish::Early),
            "hang" => Step::Hang,
            "lost" => Step::Lost,
            "garbled" => Step::Garbled,
            "huge" => Step::Huge,
            "noref" => Step::NoReference,
            "nulref" => Step::NulReference,
            _ => {
                if let Some(secs) = s.strip_prefix("429:") {
                    Step::TooManyRequests {
                        retry_after_secs: parse_digits(secs).ok_or_else(err)?,
                    }
                } else if let Some(status) = s.strip_prefix("leak:") {
                    let status = parse_digits(status).ok_or_else(err)?;
                    if !(200..=599).contains(&status) {
                        return Err(err());
                    }
                    Step::Leak(u16::try_from(status).map_err(|_| err())?)
                } else if let Some(issue) = s.strip_prefix("paypal422:") {
                    let known = PAYPAL_422_ISSUES.iter().find(|(name, _)| *name == issue);
                    Step::PayPal422(known.ok_or_else(err)?.0)
                } else if let Some(ms) = s.strip_prefix("slow:") {
                    Step::Slow(Duration::from_millis(parse_digits(ms).ok_or_else(err)?))
                } else if s.len() == 3 {
                    let status = parse_digits(s).ok_or_else(err)?;
                    // 1xx cannot be a final answer; above 599 is not HTTP.
                    if !(200..=599).contains(&status) {
                        return Err(err());
                    }
                    Step::Status(u16::try_from(status).map_err(|_| err())?)
                } else {
                    return Err(err());
                }
            }
        };
        Ok(parsed)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Ok => f.write_str("ok"),
            Step::Accept(Finish::Succeed) => f.write_str("accept"),
            Step::Accept(Finish::Fail) => f.write_str("accept:fail"),
            Step::Accept(Finish::Silent) => f.write_str("accept:silent"),
            Step::Accept(Finish::Early) => f.write_str("accept:early"),
            Step::Status(status) => write!(f, "{status}"),
            Step::TooManyRequests { retry_after_secs } => write!(f, "429:{retry_after_secs}"),
            Step::Hang => f.write_str("hang"),
            Step::Lost => f.write_str("lost"),
            Step::Slow(delay) => write!(f, "slow:{}", delay.as_millis()),
            Step::Leak(status) => write!(f, "leak:{status}"),
            Step::Garbled => f.write_str("garbled"),
            Step::Huge => f.write_str("huge"),
            Step::NoReference => f.write_str("noref"),
            Step::NulReference => f.write_str("nulref"),
            Step::PayPal422(issue) => write!(f, "paypal422:{issue}"),
        }
    }
}

impl Step {
    /// The step as an emulator without vendor-specific answers applies it: another vendor's
    /// own error form becomes its plain status.
    pub(crate) fn plain(self) -> Step {
        match self {
            Step::PayPal422(_) => Step::Status(422),
            other => other,
        }
    }
}

/// Only plain ASCII digits: `u64::from_str` would also take a leading `+`.
fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A command's script and how far its attempts have consumed it.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    steps: Vec<Step>,
    next: usize,
}

impl Script {
    pub(crate) fn new(steps: Vec<Step>) -> Self {
        Self { steps, next: 0 }
    }

    /// The step for the next attempt; `ok` once the script has run out.
    pub(crate) fn advance(&mut self) -> Step {
        let step = self.steps.get(self.next).copied().unwrap_or(Step::Ok);
        self.next = self.next.saturating_add(1);
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_step() {
        let cases = [
            ("ok", Step::Ok),
            ("accept", Step::Accept(Finish::Succeed)),
            ("accept:fail", Step::Accept(Finish::Fail)),
            ("accept:silent", Step::Accept(Finish::Silent)),
            ("accept:early", Step::Accept(Finish::Early)),
            ("hang", Step::Hang),
            ("lost", Step::Lost),
            ("503", Step::Status(503)),
            ("400", Step::Status(400)),
            ("429", Step::Status(429)),
            (
                "429:2",
                Step::TooManyRequests {
                    retry_after_secs: 2,
                },
            ),
            ("slow:250", Step::Slow(Duration::from_millis(250))),
            (
                "paypal422:PREVIOUS_REQUEST_IN_PROGRESS",
                Step::PayPal422("PREVIOUS_REQUEST_IN_PROGRESS"),
            ),
            (
                "paypal422:INSTRUMENT_DECLINED",
                Step::PayPal422("INSTRUMENT_DECLINED"),
            ),
        ];
        for (text, step) in cases {
            assert_eq!(text.parse::<Step>(), Ok(step), "{text}");
            assert_eq!(step.to_string(), text);
        }
    }

    #[test]
    fn rejects_unknown_steps() {
        for text in [
            "",
            "OK",
            "5000",
            "50",
            "099",
            "600",
            "+50",
            "429:",
            "429:x",
            "429:+1",
            "slow:",
            "slow:-1",
            "fail",
            " ok",
            "paypal422:",
            "paypal422",
            "paypal422:NOPE",
            "paypal422:previous_request_in_progress",
            "paypal:PREVIOUS_REQUEST_IN_PROGRESS",
        ] {
            assert!(text.parse::<Step>().is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn every_paypal_issue_round_trips_and_is_a_plain_422_elsewhere() {
        for (issue, description) in PAYPAL_422_ISSUES {
            let text = format!("paypal422:{issue}");
            let step: Step = text.parse().unwrap();
            assert_eq!(step, Step::PayPal422(issue));
            assert_eq!(step.to_string(), text);
            assert_eq!(step.plain(), Step::Status(422));
            assert!(!description.is_empty());
        }
        assert_eq!(Step::Hang.plain(), Step::Hang);
    }

    #[test]
    fn script_runs_in_order_then_defaults_to_ok() {
        let mut script = Script::new(vec![Step::Status(503), Step::Hang]);
        assert_eq!(script.advance(), Step::Status(503));
        assert_eq!(script.advance(), Step::Hang);
        assert_eq!(script.advance(), Step::Ok);
        assert_eq!(script.advance(), Step::Ok);
    }
}
