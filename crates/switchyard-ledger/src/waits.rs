//! The resolver's state: which commands wait for which provider reference, which webhook ids
//! were seen, and the one terminal event each waiting command ends with.

use chrono::{DateTime, Utc};
use sqlx::Row;
use switchyard_core::{
    Callback, CallbackOutcome, ErrorClass, ErrorInfo, Event, Lifecycle, WaitRecord,
};
use uuid::Uuid;

use crate::store::{Store, StoreError, json_text, ms};

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

fn row(r: &sqlx::any::AnyRow) -> Result<WaitRow, StoreError> {
    let record: String = r.try_get("record")?;
    let resolution: Option<String> = r.try_get("resolution")?;
    Ok(WaitRow {
        record: serde_json::from_str(&record).map_err(corrupt)?,
        resolution: resolution
            .map(|s| serde_json::from_str(&s).map_err(corrupt))
            .transpose()?,
        resolved_by: r.try_get("resolved_by")?,
    })
}

impl Store {
    /// Records what a command waits for. Repeating it changes nothing.
    pub async fn record_wait(&self, w: &WaitRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO waits (command_id, provider, reference, record, expires_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(w.command.id.to_string())
        .bind(w.command.provider.as_str())
        .bind(w.reference.as_str())
        .bind(json_text(w))
        .bind(ms(w.expires_at))
        .execute(&self.pool)
        .await?;
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
        let mut tx = self.pool.begin().await?;
        let found = sqlx::query(
            "SELECT record, resolution, resolved_by FROM waits WHERE provider = $1 AND reference = $2",
        )
        .bind(c.provider.as_str())
        .bind(c.reference.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(found) = found.as_ref().map(row).transpose()? else {
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
        .bind(c.provider.as_str())
        .bind(c.webhook_id.as_str())
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
            let waiting = Lifecycle::of(&record.command).resume_waiting(record.attempt);
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
        let mut tx = self.pool.begin().await?;
        let found =
            sqlx::query("SELECT record, resolution, resolved_by FROM waits WHERE command_id = $1")
                .bind(command_id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(found) = found.as_ref().map(row).transpose()? else {
            return Ok(Resolution::Unknown);
        };
        let by = "expiry";
        let outcome = match (found.resolution, found.resolved_by.as_deref()) {
            (Some(event), Some(b)) if redelivered && b == by => Resolution::Decided {
                event: Box::new(event),
                record: Box::new(found.record),
            },
            (Some(_), _) => Resolution::Late,
            (None, _) => {
                let record = found.record;
                let error = ErrorInfo::new(
                    ErrorClass::Expired,
                    "deadline",
                    format!(
                        "still waiting for {} (reference {}) at the deadline",
                        record.command.provider, record.reference
                    ),
                );
                let event = Lifecycle::of(&record.command)
                    .resume_waiting(record.attempt)
                    .fail(error, now);
                decide(&mut tx, &record, event, by).await?
            }
        };
        tx.commit().await?;
        Ok(outcome)
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
    .bind(by)
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
