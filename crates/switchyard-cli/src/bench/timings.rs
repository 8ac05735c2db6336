//! Where the worker's deliveries spent their time in a phase, read from the worker's own
//! `/metrics` before and after it: the mean of each histogram the worker keeps on its path
//! (a whole delivery, the provider call, a journal batch, a publish's confirm) and the
//! journal's operations per batch.
//!
//! The end-to-end latency says how long a command took; these say which wait it was. At
//! 400 commands/s on the project's machine, for instance, a delivery lasted 53 ms and waited
//! for two rounds of confirms in a row, each 19 ms on average, while the disk synced in
//! 0.4 ms: the broker's own work, not the disk, was the wait.

use std::collections::BTreeMap;

use anyhow::Context as _;

/// A histogram read: the name printed, the metric, and a label it must carry.
struct Read {
    name: &'static str,
    metric: &'static str,
    label: Option<(&'static str, &'static str)>,
}

impl Read {
    /// A duration (read in seconds, given in milliseconds: the name ends in `_ms`), not a
    /// count.
    fn in_ms(&self) -> bool {
        self.name.ends_with("_ms")
    }
}

/// The histograms of a delivery's path, in the order printed.
const READS: [Read; 5] = [
    Read {
        name: "delivery_ms",
        metric: "switchyard_delivery_duration_seconds",
        label: None,
    },
    Read {
        name: "provider_call_ms",
        metric: "switchyard_attempt_duration_seconds",
        label: None,
    },
    Read {
        name: "journal_batch_ms",
        metric: "switchyard_journal_write_seconds",
        label: None,
    },
    Read {
        name: "publish_confirm_ms",
        metric: "switchyard_publish_confirm_seconds",
        label: Some(("outcome", "ok")),
    },
    Read {
        name: "journal_ops_per_batch",
        metric: "switchyard_journal_batch_size",
        label: None,
    },
];

/// The sum and count of every read histogram at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals(BTreeMap<&'static str, (f64, f64)>);

impl Totals {
    /// Reads the totals from a scrape in Prometheus's text format. A histogram the process
    /// has not recorded yet counts as empty.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .context("reading the worker's /metrics")?;
        let total = |read: &Read, suffix: &str| -> f64 {
            let metric = format!("{}{suffix}", read.metric);
            scrape
                .samples
                .iter()
                .filter(|s| s.metric == metric)
                .filter(|s| read.label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
                .filter_map(|s| match s.value {
                    prometheus_parse::Value::Untyped(v)
                    | prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v) => Some(v),
                    _ => None,
                })
                .sum()
        };
        Ok(Self(
            READS
                .iter()
                .map(|r| (r.name, (total(r, "_sum"), total(r, "_count"))))
                .collect(),
        ))
    }

    /// The mean of each histogram over what was recorded since `earlier` (durations in
    /// milliseconds), for those that recorded anything.
    pub fn means_since(&self, earlier: &Totals) -> BTreeMap<&'static str, f64> {
        READS
            .iter()
            .filter_map(|r| {
                let (sum, count) = self.0.get(r.name).copied()?;
                let (sum0, count0) = earlier.0.get(r.name).copied().unwrap_or_default();
                let n = count - count0;
                let scale = if r.in_ms() { 1000.0 } else { 1.0 };
                (n > 0.0).then(|| (r.name, (sum - sum0) / n * scale))
            })
            .collect()
    }
}

/// Scrapes `url` (a process's `/metrics`).
pub async fn scrape(client: &reqwest::Client, url: &str) -> anyhow::Result<Totals> {
    let text = client
        .get(url)
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("scraping {url}"))?
        .text()
        .await?;
    Totals::parse(&text)
}

/// One line for the human output: `delivery 52.8 ms, provider call 2.9 ms, ...`.
pub fn line(means: &BTreeMap<&'static str, f64>) -> String {
    READS
        .iter()
        .filter_map(|r| {
            let v = means.get(r.name)?;
            let unit = if r.in_ms() { " ms" } else { "" };
            let name = r.name.trim_end_matches("_ms").replace('_', " ");
            Some(format!("{name} {v:.1}{unit}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As the worker's exporter writes them (`metrics-exporter-prometheus`).
    fn exposition(confirm_sum: f64, confirm_count: u64, batches: u64) -> String {
        format!(
            "# TYPE switchyard_publish_confirm_seconds histogram\n\
             switchyard_publish_confirm_seconds_bucket{{outcome=\"ok\",le=\"0.01\"}} 3\n\
             switchyard_publish_confirm_seconds_bucket{{outcome=\"ok\",le=\"+Inf\"}} {confirm_count}\n\
             switchyard_publish_confirm_seconds_sum{{outcome=\"ok\"}} {confirm_sum}\n\
             switchyard_publish_confirm_seconds_count{{outcome=\"ok\"}} {confirm_count}\n\
             switchyard_publish_confirm_seconds_bucket{{outcome=\"nacked\",le=\"+Inf\"}} 1\n\
             switchyard_publish_confirm_seconds_sum{{outcome=\"nacked\"}} 30\n\
             switchyard_publish_confirm_seconds_count{{outcome=\"nacked\"}} 1\n\
             # TYPE switchyard_journal_batch_size histogram\n\
             switchyard_journal_batch_size_bucket{{le=\"+Inf\"}} {batches}\n\
             switchyard_journal_batch_size_sum {}\n\
             switchyard_journal_batch_size_count {batches}\n\
             # TYPE switchyard_delivery_duration_seconds histogram\n\
             switchyard_delivery_duration_seconds_sum{{kind=\"payment\"}} 0.5\n\
             switchyard_delivery_duration_seconds_count{{kind=\"payment\"}} 10\n\
             switchyard_delivery_duration_seconds_sum{{kind=\"shipping\"}} 1.5\n\
             switchyard_delivery_duration_seconds_count{{kind=\"shipping\"}} 10\n",
            batches * 4
        )
    }

    #[test]
    fn means_are_taken_over_the_phase_only_and_by_the_label_asked() {
        let before = Totals::parse(&exposition(1.0, 100, 10)).unwrap();
        let after = Totals::parse(&exposition(3.0, 200, 30)).unwrap();
        let means = after.means_since(&before);
        // 2 s over 100 confirms; the nacked one (30 s) is not a confirm wait.
        assert!(
            (means["publish_confirm_ms"] - 20.0).abs() < 1e-9,
            "{means:?}"
        );
        assert!(
            (means["journal_ops_per_batch"] - 4.0).abs() < 1e-9,
            "{means:?}"
        );
        // Nothing recorded during the phase: no mean rather than 0/0.
        assert!(!means.contains_key("delivery_ms"), "{means:?}");
        // Every kind's deliveries count: 2 s over 20.
        let from_start = after.means_since(&Totals::default());
        assert!(
            (from_start["delivery_ms"] - 100.0).abs() < 1e-9,
            "{from_start:?}"
        );
        assert!(!from_start.contains_key("provider_call_ms"));
        assert_eq!(
            line(&means),
            "publish confirm 20.0 ms, journal ops per batch 4.0"
        );
    }

    #[test]
    fn a_scrape_that_is_not_prometheus_text_reads_as_empty_not_as_figures() {
        let t = Totals::parse("<html>not metrics</html>").unwrap();
        assert!(t.means_since(&Totals::default()).is_empty());
    }
}
