//! CPU time and memory of the processes a bench run involves, read from /proc (Linux).
//!
//! CPU is the `utime + stime` of `/proc/<pid>/stat`, in clock ticks: a run takes a snapshot
//! before and after and divides the difference by the commands it drove. Elsewhere than
//! Linux every figure is absent, never wrong.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Clock ticks per second (`getconf CLK_TCK`). Asked once; 100, Linux's value on every
/// common architecture, when `getconf` is missing. `sysconf` itself would need `unsafe`,
/// which the workspace forbids.
pub fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// User plus system CPU seconds a process has used so far.
pub fn cpu_seconds(pid: u32, ticks_per_second: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|t| t as f64 / ticks_per_second)
}

/// `utime + stime` from a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may itself hold spaces or parentheses, so fields are counted from the
/// last `)`: after it come field 3 (state) onwards, making utime and stime (fields 14 and
/// 15) the 12th and 13th.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of a process now, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// Peak resident set size of a process over its life, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The local RabbitMQ node serving `port`: the process that holds the listening socket on
/// that port (several nodes may run on one machine, e.g. a test cluster), else a lone
/// `beam.smp`. Another user's stat and status files are readable; its fds need root or the
/// same user, so the fallback matters.
pub fn broker_pid(port: u16) -> Option<u32> {
    listener_pid(port).or_else(lone_beam)
}

fn listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT; st 0A is LISTEN; the inode is field 10.
            let listening = f.get(3) == Some(&"0A");
            let local = f
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if listening
                && local == Some(port)
                && let Some(inode) = f.get(9)
            {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for pid in pids() {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| target.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn lone_beam() -> Option<u32> {
    let beams: Vec<u32> = pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "beam.smp")
        })
        .collect();
    match beams.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// The processes a run measures, by name.
#[derive(Debug, Clone)]
pub struct Processes {
    pids: Vec<(&'static str, u32)>,
    ticks: f64,
}

impl Processes {
    /// Watches `pids`.
    pub fn new(pids: Vec<(&'static str, u32)>) -> Self {
        Self {
            pids,
            ticks: clock_ticks_per_second(),
        }
    }

    /// The pid of `name`, when watched.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.pids.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }

    /// CPU seconds used so far by each watched process that /proc shows.
    pub fn cpu(&self) -> BTreeMap<&'static str, f64> {
        self.pids
            .iter()
            .filter_map(|(name, pid)| Some((*name, cpu_seconds(*pid, self.ticks)?)))
            .collect()
    }
}

/// CPU seconds per 1,000 commands between two snapshots.
pub fn per_thousand(
    before: &BTreeMap<&'static str, f64>,
    after: &BTreeMap<&'static str, f64>,
    commands: usize,
) -> BTreeMap<&'static str, f64> {
    after
        .iter()
        .filter_map(|(name, end)| {
            let start = before.get(name)?;
            Some((*name, (end - start) / commands.max(1) as f64 * 1000.0))
        })
        .collect()
}

/// Samples a process's resident set every 250 ms and keeps the highest: the broker's own
/// peak (VmHWM) dates from its start, not from this run.
#[derive(Debug, Clone)]
pub struct RssSampler {
    peak_kib: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl RssSampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Self {
        let peak_kib = Arc::new(AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let stop = CancellationToken::new();
        let (peak, done) = (peak_kib.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = done.cancelled() => break,
                    _ = tick.tick() => {
                        if let Some(now) = rss_kib(pid) {
                            peak.fetch_max(now, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
        Self { peak_kib, stop }
    }

    /// The highest resident set seen so far, in KiB.
    pub fn peak_kib(&self) -> u64 {
        self.peak_kib.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 1000 50";
        assert_eq!(parse_cpu_ticks(stat), Some(10));
        assert_eq!(parse_cpu_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn this_process_uses_some_cpu() {
        let ticks = clock_ticks_per_second();
        assert!(ticks > 0.0);
        let cpu = cpu_seconds(std::process::id(), ticks);
        assert!(cpu.is_some_and(|s| s >= 0.0), "{cpu:?}");
    }
}
