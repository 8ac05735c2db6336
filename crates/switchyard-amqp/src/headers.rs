//! Typed access to AMQP message headers.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Builds a header table.
#[derive(Debug, Clone, Default)]
pub struct Headers(FieldTable);

impl Headers {
    /// Starts from existing headers (e.g. to keep a command's headers on republish).
    pub fn from_table(table: Option<&FieldTable>) -> Self {
        Self(table.cloned().unwrap_or_default())
    }

    /// Sets a string header.
    pub fn str(mut self, key: &str, value: &str) -> Self {
        self.0.insert(
            ShortString::from(key),
            AMQPValue::LongString(LongString::from(value.as_bytes().to_vec())),
        );
        self
    }

    /// Sets an integer header.
    pub fn int(mut self, key: &str, value: i64) -> Self {
        self.0
            .insert(ShortString::from(key), AMQPValue::LongLongInt(value));
        self
    }

    /// Removes a header.
    pub fn without(self, key: &str) -> Self {
        let mut map = self.0.inner().clone();
        map.remove(key);
        Self(FieldTable::from(map))
    }

    /// Removes what the broker wrote about the message's past (`x-death` and its summaries,
    /// the quorum queue's `x-delivery-count`). A copy published with them is a new message:
    /// an `x-death` naming its own work queue makes the broker drop it as a dead-letter cycle
    /// when a delay tier sends it back there.
    pub fn without_broker_annotations(self) -> Self {
        BROKER_ANNOTATIONS
            .iter()
            .fold(self, |headers, key| headers.without(key))
    }

    /// The table, for `BasicProperties::with_headers`.
    pub fn build(self) -> FieldTable {
        self.0
    }
}

/// The headers the broker sets on a dead-lettered or redelivered message.
pub const BROKER_ANNOTATIONS: [&str; 8] = [
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
];

/// The broker's latest dead-lettering of a message (the first entry of its `x-death`), when
/// the broker dead-lettered it: its `reason` (`delivery_limit`, `rejected`, `expired`, ...),
/// `queue` and `time`.
pub fn broker_death(headers: &Option<FieldTable>) -> Option<FieldTable> {
    let deaths = headers.as_ref()?.inner().get("x-death")?;
    let AMQPValue::FieldArray(deaths) = deaths else {
        return None;
    };
    match deaths.as_slice().first()? {
        AMQPValue::FieldTable(t) => Some(t.clone()),
        _ => None,
    }
}

/// Why the broker last dead-lettered a message (`delivery_limit`, `rejected`, `expired`, ...):
/// the `reason` of [`broker_death`].
pub fn broker_death_reason(headers: &Option<FieldTable>) -> Option<String> {
    Some(broker_death(headers)?).header_str("reason")
}

/// Reads headers of a received message.
pub trait HeaderRead {
    /// A string header, if present and textual.
    fn header_str(&self, key: &str) -> Option<String>;
    /// An integer header, if present and numeric.
    fn header_int(&self, key: &str) -> Option<i64>;
}

impl HeaderRead for Option<FieldTable> {
    fn header_str(&self, key: &str) -> Option<String> {
        match self.as_ref()?.inner().get(key)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        }
    }

    fn header_int(&self, key: &str) -> Option<i64> {
        match self.as_ref()?.inner().get(key)? {
            AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
            AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
            AMQPValue::ShortInt(v) => Some(i64::from(*v)),
            AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
            AMQPValue::LongInt(v) => Some(i64::from(*v)),
            AMQPValue::LongUInt(v) => Some(i64::from(*v)),
            AMQPValue::LongLongInt(v) => Some(*v),
            AMQPValue::Timestamp(v) => i64::try_from(*v).ok(),
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = Some(Headers::default().str("a", "x").int("n", 3).build());
        assert_eq!(t.header_str("a").as_deref(), Some("x"));
        assert_eq!(t.header_int("n"), Some(3));
        assert_eq!(t.header_int("a"), None);
        let t = Some(Headers::from_table(t.as_ref()).without("a").build());
        assert_eq!(t.header_str("a"), None);
    }

    #[test]
    fn a_copy_forgets_what_the_broker_wrote_about_the_original() {
        let mut death = FieldTable::default();
        death.insert(
            "reason".into(),
            AMQPValue::LongString("delivery_limit".into()),
        );
        let mut original = Headers::default()
            .str("traceparent", "00-abc-def-01")
            .str("x-last-death-reason", "delivery_limit")
            .int("x-delivery-count", 2)
            .build();
        original.insert(
            "x-death".into(),
            AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
        );
        let original = Some(original);
        assert_eq!(
            broker_death_reason(&original).as_deref(),
            Some("delivery_limit")
        );
        let copy = Some(
            Headers::from_table(original.as_ref())
                .without_broker_annotations()
                .build(),
        );
        assert_eq!(broker_death(&copy), None);
        assert_eq!(copy.header_int("x-delivery-count"), None);
        assert_eq!(copy.header_str("x-last-death-reason"), None);
        assert_eq!(
            copy.header_str("traceparent").as_deref(),
            Some("00-abc-def-01")
        );
    }
}
