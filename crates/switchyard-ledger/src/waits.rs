//! The resolver's state: which commands wait for which provider reference, which webhook ids
//! were seen, and the one terminal event each waiting command ends with.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{AssertSqlSafe, Row};
use switchyard_core::{
    Callback, CallbackOutcome, ErrorClass, ErrorInfo, Event, Lifecycle, Status, WaitReason,
    WaitRecord,
};
use uuid::Uuid;

use switchyard_amqp::messages::redacted_metadata;

use crate::seal::Sealer;
use crate::store::{Store, StoreError, json_text, ms, text};
use switchyard_sqlrows::Dialect;

/// What a callback or an expiry did.
#[derive(Debug)]
pub enum Resolution {
    /// No waiting command is known for it (yet): a callback may have overtaken its wait record.
    Unknown,
    /// The same webhook id was processed before: no effect.
    Duplicate,
    /// A non-terminal report, recorded: no effect on the state.
    Recorded,
    /// The command had already ended: no effect.
    Late,
    /// This decided the command's end: publish `event`, and dead-letter the command when
    /// it failed.
    Decided {
        /// The terminal event.
        event: Box<Event>,
        /// What the command was waiting for.
        record: Box<WaitRecord>,
    },
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// A waits row.
struct WaitRow {
    record: WaitRecord,
    resolution: Option<Event>,
    resolved_by: Option<String>,
}

/// A waits row, with the command unsealed: the whole command, as it was received.
fn row(sealer: &Sealer, r: &sqlx::any::AnyRow) -> Result<WaitRow, StoreError> {
    let record: String = r.try_get("record")?;
    let resolution: Option<String> = r.try_get("resolution")?;
    let mut record: WaitRecord = serde_json::from_str(&record).map_err(corrupt)?;
    // Rows of versions before sealing hold the command whole in `record`.
    if let Some(sealed) = r.try_get::<Option<String>, _>("sealed")? {
        let bytes = sealer.open(&sealed).map_err(corrupt)?;
        record.command = serde_json::from_slice(&bytes).map_err(corrupt)?;
    }
    Ok(WaitRow {
        record,
        resolution: resolution
            .map(|s| serde_json::from_str(&s).map_err(corrupt))
            .transpose()?,
        resolved_by: r.try_get("resolved_by")?,
    })
}

/// How an operator wants an `unknown` command to end.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The provider did act: `completed`.
    Completed,
    /// It did not (or must be treated as not): `failed`, class `unknown`.
    Failed,
}

/// The audit row of an operator's resolution, shown with the command.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct OperatorResolution {
    /// The status the operator chose.
    pub status: Verdict,
    /// Why, in the operator's words.
    pub reason: String,
    /// Who.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The run it ended.
    pub run: u32,
    /// The terminal event it published.
    pub event_id: Uuid,
}

/// What an operator's resolution did.
#[derive(Debug)]
pub enum Resolved {
    /// The ledger knows no such command.
    NotFound,
    /// The command does not wait on an `unknown` outcome (never did, or it already ended):
    /// nothing was decided. The text says which.
    Conflict(String),
    /// Decided now: publish `event` (and dead-letter the command when it failed).
    Decided {
        /// The terminal event.
        event: Box<Event>,
        /// What the command was waiting for.
        record: Box<WaitRecord>,
    },
}

impl Store {
    /// The wait of `command_id`, unsealed, read inside `tx`.
    async fn wait_of(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        command_id: Uuid,
    ) -> Result<Option<WaitRow>, StoreError> {
        let found = sqlx::query(self.locked(
            "SELECT record, sealed, resolution, resolved_by FROM waits WHERE command_id = $1",
        ))
        .bind(command_id.to_string())
        .fetch_optional(&mut **tx)
        .await?;
        found.as_ref().map(|r| row(&self.sealer, r)).transpose()
    }

    /// `select` locking the rows it reads until the transaction ends, where the database
    /// needs telling. A resolution reads the wait, then decides from what it read: on
    /// PostgreSQL two transactions (two replicas, or a message and its redelivered copy)
    /// could both read it undecided, and the one that lost the race then answered
    /// `Duplicate` or `Late` for a decision its own message had made, so it was never
    /// reported again. Locked, the second reads the row as the first committed it. SQLite's
    /// transactions take the write lock when they begin, so they never overlap.
    fn locked(&self, select: &'static str) -> AssertSqlSafe<String> {
        AssertSqlSafe(match self.dialect {
            Dialect::Postgres => format!("{select} FOR UPDATE"),
            Dialect::Sqlite => select.to_owned(),
        })
    }

    /// A wait record as it may be read: its command's payload and metadata redacted.
    fn readable(&self, w: &WaitRecord) -> WaitRecord {
        let mut r = w.clone();
        if let serde_json::Value::Object(payload) =
            self.redactor
                .redacted(serde_json::Value::Object(std::mem::take(
                    &mut r.command.payload,
                )))
        {
            r.command.payload = payload;
        }
        if let Some(m) = redacted_metadata(&r.command.metadata, &self.redactor) {
            r.command.metadata = m;
        }
        r
    }

    /// Records what a command waits for. Repeating it changes nothing; a later run's wait
    /// replaces an earlier run's (a replay that waits again).
    pub async fn record_wait(&self, w: &WaitRecord) -> Result<(), StoreError> {
        let reason = match w.reason {
            WaitReason::Waiting => "waiting",
            WaitReason::Unknown => "unknown",
        };
        // Readable: the command redacted. Whole: sealed, for dead-lettering it on failure.
        let readable = json_text(&self.readable(w));
        let sealed = self.sealer.seal(&w.command.to_bytes());
        let mut tx = self.begin().await?;
        let replaced = sqlx::query(
            "UPDATE waits SET provider = $1, reference = $2, record = $3, expires_at = $4, \
             run = $5, reason = $6, resolution = NULL, resolved_by = NULL, resolved_at = NULL, \
             sealed = $8 WHERE command_id = $7 AND run < $5",
        )
        .bind(text(w.command.provider.as_str()))
        .bind(text(&w.reference))
        .bind(&readable)
        .bind(ms(w.expires_at))
        .bind(i64::from(w.run))
        .bind(reason)
        .bind(w.command.id.to_string())
        .bind(&sealed)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if replaced == 0 {
            sqlx::query(
                "INSERT INTO waits (command_id, provider, reference, record, expires_at, run, reason, \
                 sealed) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            )
            .bind(w.command.id.to_string())
            .bind(text(w.command.provider.as_str()))
            .bind(text(&w.reference))
            .bind(&readable)
            .bind(ms(w.expires_at))
            .bind(i64::from(w.run))
            .bind(reason)
            .bind(&sealed)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Applies a verified callback: at most one terminal event per command, one effect per
    /// webhook id. `redelivered`: the broker delivers this same message again (a crash may
    /// have come between deciding and reporting), so a decision of its own is reported again.
    pub async fn resolve_callback(
        &self,
        c: &Callback,
        redelivered: bool,
    ) -> Result<Resolution, StoreError> {
        let mut tx = self.begin().await?;
        let found = sqlx::query(self.locked(
            "SELECT record, sealed, resolution, resolved_by FROM waits WHERE provider = $1 AND reference = $2",
        ))
        .bind(text(c.provider.as_str()))
        .bind(text(&c.reference))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(found) = found.as_ref().map(|r| row(&self.sealer, r)).transpose()? else {
            return Ok(Resolution::Unknown);
        };
        let by = format!("webhook:{}", c.webhook_id);
        if redelivered
            && found.resolved_by.as_deref() == Some(by.as_str())
            && let Some(event) = found.resolution
        {
            // Decided by this very callback before a crash: report the same event again.
            return Ok(Resolution::Decided {
                event: Box::new(event),
                record: Box::new(found.record),
            });
        }
        let fresh = sqlx::query(
            "INSERT INTO webhook_receipts (provider, webhook_id, received_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(text(c.provider.as_str()))
        .bind(text(&c.webhook_id))
        .bind(ms(c.received_at))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let outcome = if !fresh {
            Resolution::Duplicate
        } else if found.resolution.is_some() {
            Resolution::Late
        } else {
            let record = found.record;
            let waiting =
                Lifecycle::run(&record.command, record.run).resume_waiting(record.attempt);
            match &c.outcome {
                CallbackOutcome::Pending => Resolution::Recorded,
                CallbackOutcome::Succeeded { result } => {
                    let event =
                        waiting.complete(result.clone(), Some(c.reference.clone()), Utc::now());
                    decide(&mut tx, &record, event, &by).await?
                }
                CallbackOutcome::Failed { error } => {
                    let event = waiting.fail(error.clone(), Utc::now());
                    decide(&mut tx, &record, event, &by).await?
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Ends a command still waiting at its deadline as `failed` with class `expired`.
    /// `redelivered` as for [`Store::resolve_callback`].
    pub async fn resolve_expiry(
        &self,
        command_id: Uuid,
        now: DateTime<Utc>,
        redelivered: bool,
    ) -> Result<Resolution, StoreError> {
        let mut tx = self.begin().await?;
        let Some(found) = self.wait_of(&mut tx, command_id).await? else {
            return Ok(Resolution::Unknown);
        };
        let by = "expiry";
        let outcome = match (found.resolution, found.resolved_by.as_deref()) {
            (Some(event), Some(b)) if redelivered && b == by => Resolution::Decided {
                event: Box::new(event),
                record: Box::new(found.record),
            },
            (Some(_), _) => Resolution::Late,
            // An unknown outcome never expires; a deadline later than now is another run's
            // (an earlier run's expiry arriving after a replay waits again).
            (None, _)
                if found.record.reason == WaitReason::Unknown || found.record.expires_at > now =>
            {
                Resolution::Late
            }
            (None, _) => {
                let record = found.record;
                let error = ErrorInfo::new(
                    ErrorClass::Expired,
                    "deadline",
                    format!(
                        "still waiting for {} (reference {}) at the deadline",
                        record.command.provider,
                        text(&record.reference)
                    ),
                );
                let event = Lifecycle::run(&record.command, record.run)
                    .resume_waiting(record.attempt)
                    .fail(error, now);
                decide(&mut tx, &record, event, by).await?
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }
}

impl Store {
    /// An operator ends a command whose open wait is an `unknown` outcome: decided once, in
    /// the same place and the same way as callbacks, so a racing status check or a second
    /// resolution cannot yield a second terminal event. The audit row is written with it.
    pub async fn resolve_unknown(
        &self,
        command_id: Uuid,
        verdict: Verdict,
        reason: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<Resolved, StoreError> {
        let mut tx = self.begin().await?;
        let Some(found) = self.wait_of(&mut tx, command_id).await? else {
            let known = sqlx::query("SELECT id FROM commands WHERE id = $1")
                .bind(command_id.to_string())
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            return Ok(if known {
                Resolved::Conflict(format!(
                    "command {command_id} does not wait on an unknown outcome"
                ))
            } else {
                Resolved::NotFound
            });
        };
        if found.record.reason != WaitReason::Unknown {
            return Ok(Resolved::Conflict(format!(
                "command {command_id} waits for its provider, not on an unknown outcome"
            )));
        }
        let same_verdict = |e: &Event| {
            matches!(
                (verdict, e.status),
                (Verdict::Completed, Status::Completed) | (Verdict::Failed, Status::Failed)
            )
        };
        if let (Some(event), Some(b)) = (&found.resolution, found.resolved_by.as_deref())
            && b.starts_with("operator:")
            && same_verdict(event)
        {
            // The same resolution again (its publication may have failed): the same event,
            // reported again, never a second one.
            return Ok(Resolved::Decided {
                event: Box::new(event.clone()),
                record: Box::new(found.record),
            });
        }
        if found.resolution.is_some() {
            return Ok(Resolved::Conflict(format!(
                "command {command_id} already ended (decided by {})",
                found.resolved_by.as_deref().unwrap_or("?")
            )));
        }
        let record = found.record;
        let waiting = Lifecycle::run(&record.command, record.run).resume_waiting(record.attempt);
        let event = match verdict {
            Verdict::Completed => waiting.complete(
                serde_json::json!({"resolved_by": by, "reason": reason}),
                None,
                now,
            ),
            Verdict::Failed => waiting.fail(
                ErrorInfo::new(
                    ErrorClass::Unknown,
                    "operator_resolved",
                    format!("resolved as failed by {by}: {reason}"),
                ),
                now,
            ),
        };
        let outcome = decide(&mut tx, &record, event, &format!("operator:{by}")).await?;
        let Resolution::Decided { event, record } = outcome else {
            return Ok(Resolved::Conflict(format!(
                "command {command_id} already ended"
            )));
        };
        let status = match verdict {
            Verdict::Completed => Status::Completed,
            Verdict::Failed => Status::Failed,
        };
        sqlx::query(
            "INSERT INTO resolutions (command_id, run, status, reason, resolved_by, resolved_at, event_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(command_id.to_string())
        .bind(i64::from(record.run))
        .bind(status.as_str())
        .bind(text(reason))
        .bind(text(by))
        .bind(ms(now))
        .bind(event.event_id.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Resolved::Decided { event, record })
    }

    /// The operator's resolutions of `command_id`, oldest first.
    pub async fn resolutions(
        &self,
        command_id: Uuid,
    ) -> Result<Vec<OperatorResolution>, StoreError> {
        sqlx::query(
            "SELECT run, status, reason, resolved_by, resolved_at, event_id FROM resolutions \
             WHERE command_id = $1 ORDER BY run",
        )
        .bind(command_id.to_string())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            let status = match r.try_get::<String, _>("status")?.as_str() {
                "completed" => Verdict::Completed,
                _ => Verdict::Failed,
            };
            Ok(OperatorResolution {
                status,
                reason: r.try_get("reason")?,
                by: r.try_get("resolved_by")?,
                at: crate::store::from_ms(r.try_get("resolved_at")?),
                run: u32::try_from(r.try_get::<i64, _>("run")?).unwrap_or_default(),
                event_id: r
                    .try_get::<String, _>("event_id")?
                    .parse()
                    .map_err(corrupt)?,
            })
        })
        .collect()
    }
}

/// Writes the decision unless another got there first.
async fn decide(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    record: &WaitRecord,
    event: Event,
    by: &str,
) -> Result<Resolution, StoreError> {
    let won = sqlx::query(
        "UPDATE waits SET resolution = $1, resolved_by = $2, resolved_at = $3 \
         WHERE command_id = $4 AND resolution IS NULL",
    )
    .bind(json_text(&event))
    .bind(text(by))
    .bind(ms(event.occurred_at))
    .bind(record.command.id.to_string())
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    Ok(if won {
        Resolution::Decided {
            event: Box::new(event),
            record: Box::new(record.clone()),
        }
    } else {
        Resolution::Late
    })
}
