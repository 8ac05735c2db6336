//! CPU time and memory of the processes a bench run involves, read from /proc (Linux).
//!
//! CPU is the `utime + stime` of `/proc/<pid>/stat`, in clock ticks, and storage writes the
//! `write_bytes` of `/proc/<pid>/io`: a run takes a snapshot before and after and divides the
//! difference by the commands it drove. Elsewhere than Linux (or where another user's `io`
//! file is not readable) the figure is absent, never wrong.

use std::collections::BTreeMap;
use std::net::IpAddr;
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
    let stat = Stat::read(pid)?;
    Some(stat.own as f64 / ticks_per_second)
}

/// CPU seconds used so far by a process and every process it started, live or ended, from
/// the live members of its [`tree`]: a server that forks a process per connection
/// (PostgreSQL) is measured whole. An ended child's time is in its parent's `cutime +
/// cstime` once the parent has waited for it, which a server does; a live one's is in its
/// own stat, so nothing is counted twice.
fn members_cpu_seconds(members: &[(u32, Stat)], ticks_per_second: f64) -> f64 {
    let ticks = members
        .iter()
        .map(|(_, stat)| stat.own + stat.reaped_children)
        .sum::<u64>();
    ticks as f64 / ticks_per_second
}

/// `root` and every live process it started, with their stats; None when `root` is gone.
fn tree(root: u32) -> Option<Vec<(u32, Stat)>> {
    let stats: Vec<(u32, Stat)> = pids()
        .into_iter()
        .filter_map(|pid| Some((pid, Stat::read(pid)?)))
        .collect();
    let mut pending = vec![root];
    let mut members = Vec::new();
    while let Some(pid) = pending.pop() {
        for (child, stat) in &stats {
            if *child == pid {
                members.push((pid, *stat));
            } else if stat.parent == pid {
                pending.push(*child);
            }
        }
    }
    members
        .iter()
        .any(|(pid, _)| *pid == root)
        .then_some(members)
}

/// Bytes a process has sent to storage so far: `write_bytes` of `/proc/<pid>/io`, counted
/// by the kernel when a page of the page cache turns dirty (a page written again before it
/// reaches the disk counts once), so it is what the disk will be asked to write, not what
/// `write` calls passed. Readable for another user's process only as root.
pub fn written_bytes(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}

/// The figures of a `/proc/<pid>/stat` line this module uses, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    parent: u32,
    /// `utime + stime`.
    own: u64,
    /// `cutime + cstime`: the children this process has waited for.
    reaped_children: u64,
}

impl Stat {
    fn read(pid: u32) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// The command name (field 2) is in parentheses and may itself hold spaces or
    /// parentheses, so fields are counted from the last `)`: after it come field 3 (state)
    /// onwards, making the parent (field 4) the 2nd, and utime, stime, cutime and cstime
    /// (fields 14 to 17) the 12th to 15th.
    fn parse(stat: &str) -> Option<Self> {
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().take(15).collect();
        let number = |i: usize| fields.get(i)?.parse::<u64>().ok();
        Some(Self {
            parent: fields.get(1)?.parse().ok()?,
            own: number(11)? + number(12)?,
            reaped_children: number(13)? + number(14)?,
        })
    }
}

/// What the kernel still has to write to disk (`Dirty` + `Writeback` of `/proc/meminfo`), in
/// KiB: what a run leaves behind for the next one to wait on.
pub fn unwritten_kib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(field("Dirty:")? + field("Writeback:")?)
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

/// The local PostgreSQL server a `postgres://` URL names: its postmaster, the process that
/// listens on the URL's port (5432 when none is given), or the only postmaster when the
/// listener's owner cannot be read. None for a remote server, whose CPU this machine
/// cannot see.
pub fn database_pid(url: &str) -> Option<u32> {
    let port = local_postgres_port(url)?;
    let postmaster = |pid: u32| {
        // A backend forked a moment ago may still hold the listening socket: go up to the
        // first process whose parent is not PostgreSQL.
        let mut pid = pid;
        while let Some(parent) = Stat::read(pid).map(|s| s.parent)
            && comm(parent).as_deref() == Some("postgres")
        {
            pid = parent;
        }
        pid
    };
    listener_pid(port).map(postmaster).or_else(|| {
        let roots: Vec<u32> = pids()
            .into_iter()
            .filter(|pid| comm(*pid).as_deref() == Some("postgres"))
            .filter(|pid| {
                Stat::read(*pid).is_some_and(|s| comm(s.parent).as_deref() != Some("postgres"))
            })
            .collect();
        match roots.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    })
}

/// The port of a `postgres://` URL that names this machine (a loopback address,
/// `localhost`, or no host: a Unix socket), 5432 when it names none.
fn local_postgres_port(url: &str) -> Option<u16> {
    let url = url::Url::parse(url).ok()?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return None;
    }
    let local = match url.host() {
        None => true,
        // A URL of another scheme than http's family keeps an IPv4 host as a name.
        Some(url::Host::Domain(name)) => {
            name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
    };
    local.then(|| url.port().unwrap_or(5432))
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_owned())
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
        .filter(|pid| comm(*pid).as_deref() == Some("beam.smp"))
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
    /// Measured with every process they start (`tree`).
    trees: Vec<(&'static str, u32)>,
    ticks: f64,
}

impl Processes {
    /// Watches `pids`.
    pub fn new(pids: Vec<(&'static str, u32)>) -> Self {
        Self {
            pids,
            trees: Vec::new(),
            ticks: clock_ticks_per_second(),
        }
    }

    /// Also watches `root` and every process it starts, as `name`.
    pub fn with_tree(mut self, name: &'static str, root: u32) -> Self {
        self.trees.push((name, root));
        self
    }

    /// The pid of `name`, when watched.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.pids.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }

    /// CPU seconds used so far by each watched process that /proc shows.
    pub fn cpu(&self) -> BTreeMap<&'static str, f64> {
        self.cpu_with(&self.tree_members())
    }

    /// What each watched process has used so far: CPU, and storage writes where its `io`
    /// file is readable. Each tree is walked once for both.
    pub fn snapshot(&self) -> Snapshot {
        let trees = self.tree_members();
        Snapshot {
            cpu: self.cpu_with(&trees),
            written: self.written_with(&trees),
        }
    }

    /// The live members of each watched tree whose root still runs.
    fn tree_members(&self) -> Vec<(&'static str, Vec<(u32, Stat)>)> {
        self.trees
            .iter()
            .filter_map(|(name, root)| Some((*name, tree(*root)?)))
            .collect()
    }

    fn cpu_with(&self, trees: &[(&'static str, Vec<(u32, Stat)>)]) -> BTreeMap<&'static str, f64> {
        let processes = self
            .pids
            .iter()
            .filter_map(|(name, pid)| Some((*name, cpu_seconds(*pid, self.ticks)?)));
        let trees = trees
            .iter()
            .map(|(name, members)| (*name, members_cpu_seconds(members, self.ticks)));
        processes.chain(trees).collect()
    }

    /// Bytes sent to storage so far; a tree counts its live processes (what an ended one
    /// wrote is not kept by the kernel).
    fn written_with(
        &self,
        trees: &[(&'static str, Vec<(u32, Stat)>)],
    ) -> BTreeMap<&'static str, f64> {
        let processes = self
            .pids
            .iter()
            .filter_map(|(name, pid)| Some((*name, written_bytes(*pid)? as f64)));
        let trees = trees.iter().filter_map(|(name, members)| {
            let bytes: Option<u64> = members.iter().map(|(pid, _)| written_bytes(*pid)).sum();
            Some((*name, bytes? as f64))
        });
        processes.chain(trees).collect()
    }
}

/// What the watched processes had used at one moment ([`Processes::snapshot`]).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// CPU seconds.
    cpu: BTreeMap<&'static str, f64>,
    /// Bytes sent to storage.
    written: BTreeMap<&'static str, f64>,
}

/// What each process used during a run, per command.
#[derive(Debug, Clone, Default)]
pub struct Used {
    /// CPU seconds per 1,000 commands.
    pub cpu: BTreeMap<&'static str, f64>,
    /// KiB sent to storage per command.
    pub written: BTreeMap<&'static str, f64>,
}

impl Used {
    /// What was used between two snapshots, for `commands` commands.
    pub fn between(before: &Snapshot, after: &Snapshot, commands: usize) -> Self {
        Self {
            cpu: per_command(&before.cpu, &after.cpu, commands, 1000.0),
            written: per_command(&before.written, &after.written, commands, 1.0 / 1024.0),
        }
    }

    /// Only the processes `keep` names.
    pub fn only(mut self, keep: impl Fn(&str) -> bool) -> Self {
        self.cpu.retain(|name, _| keep(name));
        self.written.retain(|name, _| keep(name));
        self
    }

    /// The mean of several runs' figures, process by process.
    pub fn mean<'a>(runs: impl ExactSizeIterator<Item = &'a Used>) -> Self {
        let n = runs.len().max(1) as f64;
        let mut mean = Self::default();
        for run in runs {
            for (into, from) in [(&mut mean.cpu, &run.cpu), (&mut mean.written, &run.written)] {
                for (name, v) in from {
                    *into.entry(name).or_default() += v / n;
                }
            }
        }
        mean
    }
}

/// What each process used between two snapshots, per command, times `scale`.
fn per_command(
    before: &BTreeMap<&'static str, f64>,
    after: &BTreeMap<&'static str, f64>,
    commands: usize,
    scale: f64,
) -> BTreeMap<&'static str, f64> {
    after
        .iter()
        .filter_map(|(name, end)| {
            let start = before.get(name)?;
            Some((*name, (end - start) / commands.max(1) as f64 * scale))
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
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 5 4 20 0 1 0 5 1000 50";
        assert_eq!(
            Stat::parse(stat),
            Some(Stat {
                parent: 1,
                own: 10,
                reaped_children: 9
            })
        );
        assert_eq!(Stat::parse("42 (x) S 1"), None);
    }

    /// A shell that keeps a CPU busy for `secs` seconds of wall time.
    fn busy(secs: u32) -> std::process::Child {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "end=$(( $(date +%s) + {secs} )); while [ $(date +%s) -lt $end ]; do :; done"
            ))
            .spawn()
            .expect("sh")
    }

    #[test]
    fn a_tree_counts_its_live_and_its_ended_children() {
        let ticks = clock_ticks_per_second();
        let me = std::process::id();
        let own = || cpu_seconds(me, ticks).expect("own");
        let watched = Processes::new(vec![]).with_tree("tests", me);
        let tree = || watched.cpu()["tests"];
        let (own_before, tree_before) = (own(), tree());

        let mut live = busy(3);
        std::thread::sleep(Duration::from_millis(1500));
        let while_live = tree() - tree_before - (own() - own_before);
        assert!(while_live > 0.3, "a live child's CPU: {while_live} s");

        live.wait().expect("wait");
        let after_it_ended = tree() - tree_before - (own() - own_before);
        assert!(
            after_it_ended >= while_live,
            "an ended child's CPU is still counted: {after_it_ended} s, {while_live} s while it ran"
        );
        let gone = Processes::new(vec![]).with_tree("gone", u32::MAX);
        assert!(!gone.cpu().contains_key("gone"));
        assert!(!gone.snapshot().written.contains_key("gone"));
    }

    /// A child shell that writes 4 MiB to a file itself (its `printf` is a built-in; on the
    /// disk the build is on, as a `tmpfs` has no storage to count) and stays alive is seen to
    /// have written them, by its pid and as a member of this process's tree.
    #[test]
    fn storage_writes_are_read_per_process_and_per_tree() {
        let me = std::process::id();
        let watched = Processes::new(vec![]).with_tree("tests", me);
        let tree_before = watched.snapshot().written["tests"];
        let file = std::env::current_exe()
            .expect("the test binary")
            .with_file_name(format!("written-bytes-{me}"));
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf '%4194304s' '' > {} && echo done && sleep 5",
                file.display()
            ))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let mut done = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut done,
        )
        .expect("the child's line");
        assert_eq!(done.trim(), "done");
        let by_pid = written_bytes(child.id()).expect("the child's io file");
        let by_tree = watched.snapshot().written["tests"] - tree_before;
        child.kill().expect("kill");
        child.wait().expect("wait");
        std::fs::remove_file(&file).expect("remove");
        assert!(by_pid >= 4 << 20, "the child wrote {by_pid} bytes");
        assert!(
            by_tree >= (4 << 20) as f64,
            "the tree wrote {by_tree} bytes"
        );
        assert!(written_bytes(u32::MAX).is_none());
    }

    #[test]
    fn only_a_local_postgresql_server_is_looked_for() {
        for (url, port) in [
            ("postgres://u@127.0.0.1:5433/x", Some(5433)),
            ("postgres://u@localhost/x", Some(5432)),
            ("postgresql://u@[::1]:6000/x", Some(6000)),
            ("postgres:///x?host=/var/run/postgresql", Some(5432)),
            ("postgres://u@db.example.com:5432/x", None),
            ("postgres://u@10.1.2.3/x", None),
            ("sqlite:///tmp/x.db", None),
            ("not a url", None),
        ] {
            assert_eq!(local_postgres_port(url), port, "{url}");
        }
        assert_eq!(database_pid("postgres://u@db.example.com/x"), None);
    }

    #[test]
    fn what_the_kernel_has_yet_to_write_is_read() {
        // Linux always reports both fields; their sum is whatever the machine holds now.
        assert!(unwritten_kib().is_some());
    }

    #[test]
    fn this_process_uses_some_cpu() {
        let ticks = clock_ticks_per_second();
        assert!(ticks > 0.0);
        let cpu = cpu_seconds(std::process::id(), ticks);
        assert!(cpu.is_some_and(|s| s >= 0.0), "{cpu:?}");
    }
}
