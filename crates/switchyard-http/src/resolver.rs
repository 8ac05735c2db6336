//! Destination policy (S2): which addresses a provider call may reach, enforced where names
//! become addresses so that a DNS answer cannot smuggle a call into the private network.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::{BoxFuture, FutureExt, Shared};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A range of addresses that is not the public internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressRange {
    /// 127.0.0.0/8 and ::1: this machine.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, deprecated IPv6 site-local and local-use NAT64.
    Private,
    /// 100.64.0.0/10: carrier-grade NAT.
    SharedCgnat,
    /// 169.254.0.0/16 and fe80::/10, where cloud metadata services live.
    LinkLocal,
    /// fc00::/7.
    UniqueLocal,
    /// 0.0.0.0/8 and `::`, which the kernel may route to this machine.
    Unspecified,
    /// 224.0.0.0/4 and ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// 198.18.0.0/15.
    Benchmarking,
    /// Other special-purpose ranges: 192.0.0/24, 240/4, 100::/64, 2001::/23.
    Reserved,
}

impl AddressRange {
    /// A short human name, used in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::SharedCgnat => "shared (CGNAT)",
            Self::LinkLocal => "link-local",
            Self::UniqueLocal => "unique local",
            Self::Unspecified => "unspecified",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Documentation => "documentation",
            Self::Benchmarking => "benchmarking",
            Self::Reserved => "reserved",
        }
    }

    /// The range an address belongs to, or `None` for a public address.
    pub fn of(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V4(v4) => v4_range(v4),
            IpAddr::V6(v6) => v6_range(v6),
        }
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<AddressRange> {
    let [a, b, c, _] = ip.octets();
    let range = match (a, b, c) {
        (0, _, _) => AddressRange::Unspecified,
        (127, _, _) => AddressRange::Loopback,
        (10, _, _) | (192, 168, _) => AddressRange::Private,
        (172, 16..=31, _) => AddressRange::Private,
        (100, 64..=127, _) => AddressRange::SharedCgnat,
        (169, 254, _) => AddressRange::LinkLocal,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => AddressRange::Documentation,
        (198, 18..=19, _) => AddressRange::Benchmarking,
        (192, 0, 0) => AddressRange::Reserved,
        (224..=239, _, _) => AddressRange::Multicast,
        _ if ip.is_broadcast() => AddressRange::Broadcast,
        (240..=255, _, _) => AddressRange::Reserved,
        _ => return None,
    };
    Some(range)
}

fn v6_range(ip: Ipv6Addr) -> Option<AddressRange> {
    if ip.is_loopback() {
        return Some(AddressRange::Loopback);
    }
    if ip.is_unspecified() {
        return Some(AddressRange::Unspecified);
    }
    let s = ip.segments();
    // Forms that carry an IPv4 address are judged by that address, so `::ffff:127.0.0.1`
    // is loopback like `127.0.0.1`.
    if let Some(embedded) = embedded_v4(&s) {
        return v4_range(embedded);
    }
    let range = match s[0] {
        0xfc00..=0xfdff => AddressRange::UniqueLocal,
        0xfe80..=0xfebf => AddressRange::LinkLocal,
        0xfec0..=0xfeff => AddressRange::Private,
        0xff00..=0xffff => AddressRange::Multicast,
        0x2001 if s[1] == 0x0db8 => AddressRange::Documentation,
        0x2001 if s[1] < 0x0200 => AddressRange::Reserved,
        0x3fff if s[1] < 0x1000 => AddressRange::Documentation,
        0x0100 if s[1..4] == [0, 0, 0] => AddressRange::Reserved,
        0x0064 if s[1] == 0xff9b && s[2] == 0x0001 => AddressRange::Private,
        _ => return None,
    };
    Some(range)
}

/// The IPv4 address inside IPv4-mapped, IPv4-compatible, NAT64 and 6to4 addresses.
fn embedded_v4(s: &[u16; 8]) -> Option<Ipv4Addr> {
    let from = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0, 0, hi, lo] => Some(from(*hi, *lo)),
        [0x0064, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(from(*hi, *lo)),
        [0x2002, hi, lo, ..] => Some(from(*hi, *lo)),
        _ => None,
    }
}

/// Which non-public destinations are allowed. The default allows none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddressPolicy {
    /// Allow loopback (tests and `switchyard up` talk to local emulators).
    pub allow_loopback: bool,
    /// Allow every other non-public range.
    pub allow_private: bool,
}

impl AddressPolicy {
    /// `Ok` when the address may be called, else the range that refuses it.
    pub fn check(&self, ip: IpAddr) -> Result<(), AddressRange> {
        match AddressRange::of(ip) {
            None => Ok(()),
            Some(AddressRange::Loopback) if self.allow_loopback => Ok(()),
            Some(AddressRange::Loopback) => Err(AddressRange::Loopback),
            Some(_) if self.allow_private => Ok(()),
            Some(range) => Err(range),
        }
    }

    /// Keeps the allowed addresses; fails when none is left, naming one that was refused.
    pub fn filter(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, DestinationRefused> {
        let mut refused = None;
        let kept: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|addr| match self.check(addr.ip()) {
                Ok(()) => true,
                Err(range) => {
                    refused.get_or_insert((addr.ip(), range));
                    false
                }
            })
            .collect();
        match (kept.is_empty(), refused) {
            (true, Some((ip, range))) => Err(DestinationRefused {
                host: host.to_owned(),
                ip,
                range,
            }),
            _ => Ok(kept),
        }
    }
}

/// A destination the policy does not allow. Found again in reqwest's error chain to
/// classify the failure as permanent rather than as a connection error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("destination {host} is not allowed: {ip} is a {range} address")]
pub struct DestinationRefused {
    /// The host name or literal from the URL.
    pub host: String,
    /// The refused address.
    pub ip: IpAddr,
    /// Why it is refused.
    pub range: AddressRange,
}

/// A system lookup of one host name, shared by every caller that asked for it while it ran.
type SharedLookup = Shared<BoxFuture<'static, Result<Arc<[SocketAddr]>, Arc<io::Error>>>>;

/// How a name becomes addresses: the system's resolver, or a counted stand-in in tests.
type LookupFn = fn(String) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>>;

fn system_lookup(host: String) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
    Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.collect()) })
}

/// A resolver that asks the system (through tokio) and then applies the [`AddressPolicy`].
///
/// Lookups of one name that overlap share one system lookup. A burst of new connections to a
/// provider (a worker starting with a backlog, or after an idle spell closed its connections)
/// would otherwise make as many `getaddrinfo` calls at once, each on a blocking thread of its
/// own: 128 calls in flight made 57 threads. Only lookups in flight are shared; every new
/// connection after one has finished asks the system again, so DNS answers are never kept
/// past what the system's own resolver keeps.
#[derive(Clone)]
pub(crate) struct GuardedResolver {
    policy: AddressPolicy,
    lookup: LookupFn,
    in_flight: Arc<Mutex<HashMap<String, SharedLookup>>>,
}

impl GuardedResolver {
    pub(crate) fn new(policy: AddressPolicy) -> Self {
        Self::with_lookup(policy, system_lookup)
    }

    fn with_lookup(policy: AddressPolicy, lookup: LookupFn) -> Self {
        Self {
            policy,
            lookup,
            in_flight: Arc::default(),
        }
    }

    /// The lookup in flight for `host`, or a new one. A poisoned map (a panic while it was
    /// held) is still a consistent map: entries are inserted and removed whole.
    fn shared_lookup(&self, host: &str) -> SharedLookup {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(lookup) = in_flight.get(host) {
            return lookup.clone();
        }
        let lookup = (self.lookup)(host.to_owned())
            .map(|found| found.map(Arc::from).map_err(Arc::new))
            .boxed()
            .shared();
        in_flight.insert(host.to_owned(), lookup.clone());
        lookup
    }

    /// Whoever sees the lookup finish removes it, so the next connection asks again. Callers
    /// that gave up before it finished leave it in place for the next caller to finish.
    fn finished(&self, host: &str, lookup: &SharedLookup) {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if in_flight.get(host).is_some_and(|l| l.ptr_eq(lookup)) {
            in_flight.remove(host);
        }
    }
}

impl fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedResolver")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let lookup = resolver.shared_lookup(&host);
            let found = lookup.clone().await;
            resolver.finished(&host, &lookup);
            let found = found?;
            let kept = resolver.policy.filter(&host, found.iter().copied())?;
            if kept.is_empty() {
                return Err(format!("no address found for {host}").into());
            }
            let addrs: Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const STRICT: AddressPolicy = AddressPolicy {
        allow_loopback: false,
        allow_private: false,
    };
    const LOOPBACK: AddressPolicy = AddressPolicy {
        allow_loopback: true,
        allow_private: false,
    };
    const PRIVATE: AddressPolicy = AddressPolicy {
        allow_loopback: false,
        allow_private: true,
    };

    #[test]
    fn ranges_are_recognised() {
        let table = [
            ("127.0.0.1", Some(AddressRange::Loopback)),
            ("127.255.0.9", Some(AddressRange::Loopback)),
            ("::1", Some(AddressRange::Loopback)),
            ("::ffff:127.0.0.1", Some(AddressRange::Loopback)),
            ("10.1.2.3", Some(AddressRange::Private)),
            ("172.16.0.1", Some(AddressRange::Private)),
            ("172.31.255.255", Some(AddressRange::Private)),
            ("192.168.1.1", Some(AddressRange::Private)),
            ("::ffff:10.0.0.1", Some(AddressRange::Private)),
            ("64:ff9b::a00:1", Some(AddressRange::Private)),
            ("2002:c0a8:101::1", Some(AddressRange::Private)),
            ("100.64.0.1", Some(AddressRange::SharedCgnat)),
            ("100.127.255.255", Some(AddressRange::SharedCgnat)),
            ("169.254.169.254", Some(AddressRange::LinkLocal)),
            ("fe80::1", Some(AddressRange::LinkLocal)),
            ("fc00::1", Some(AddressRange::UniqueLocal)),
            ("fd12:3456::1", Some(AddressRange::UniqueLocal)),
            ("0.0.0.0", Some(AddressRange::Unspecified)),
            ("::", Some(AddressRange::Unspecified)),
            ("224.0.0.1", Some(AddressRange::Multicast)),
            ("ff02::1", Some(AddressRange::Multicast)),
            ("255.255.255.255", Some(AddressRange::Broadcast)),
            ("192.0.2.1", Some(AddressRange::Documentation)),
            ("2001:db8::1", Some(AddressRange::Documentation)),
            ("198.18.0.1", Some(AddressRange::Benchmarking)),
            ("240.0.0.1", Some(AddressRange::Reserved)),
            ("93.184.216.34", None),
            ("8.8.8.8", None),
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("2606:2800:220:1:248:1893:25c8:1946", None),
            ("::ffff:93.184.216.34", None),
        ];
        for (addr, want) in table {
            assert_eq!(AddressRange::of(ip(addr)), want, "{addr}");
        }
    }

    #[test]
    fn loopback_needs_allow_loopback() {
        for addr in ["127.0.0.1", "::1"] {
            assert_eq!(STRICT.check(ip(addr)), Err(AddressRange::Loopback));
            assert_eq!(PRIVATE.check(ip(addr)), Err(AddressRange::Loopback));
            assert_eq!(LOOPBACK.check(ip(addr)), Ok(()));
        }
    }

    #[test]
    fn private_ranges_need_allow_private() {
        for addr in [
            "10.0.0.1",
            "192.168.0.10",
            "169.254.169.254",
            "fc00::1",
            "100.64.0.1",
        ] {
            assert!(STRICT.check(ip(addr)).is_err(), "{addr}");
            assert!(LOOPBACK.check(ip(addr)).is_err(), "{addr}");
            assert_eq!(PRIVATE.check(ip(addr)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        assert_eq!(STRICT.check(ip("93.184.216.34")), Ok(()));
    }

    #[test]
    fn filter_keeps_allowed_and_names_refused() {
        let addrs = [
            SocketAddr::new(ip("10.0.0.5"), 0),
            SocketAddr::new(ip("93.184.216.34"), 0),
        ];
        let kept = STRICT.filter("mixed.example", addrs).unwrap();
        assert_eq!(kept, vec![SocketAddr::new(ip("93.184.216.34"), 0)]);

        let err = STRICT
            .filter("internal.example", [SocketAddr::new(ip("10.0.0.5"), 0)])
            .unwrap_err();
        assert_eq!(err.range, AddressRange::Private);
        assert_eq!(
            err.to_string(),
            "destination internal.example is not allowed: 10.0.0.5 is a private address"
        );
    }

    #[tokio::test]
    async fn resolver_refuses_localhost_unless_allowed() {
        let strict = GuardedResolver::new(STRICT);
        let err = strict
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .unwrap();
        let refused = err.downcast_ref::<DestinationRefused>().unwrap();
        assert_eq!(refused.range, AddressRange::Loopback);

        let loose = GuardedResolver::new(LOOPBACK);
        let addrs: Vec<_> = loose
            .resolve("localhost".parse().unwrap())
            .await
            .ok()
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        assert!(!addrs.is_empty());
    }

    /// Lookups made by [`counted_lookup`]; one counter for the tests below, which run one at a
    /// time through [`COUNTED`].
    static LOOKUPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static COUNTED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// A lookup that takes 50 ms, counts itself and answers with a public address.
    fn counted_lookup(_host: String) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        Box::pin(async move {
            LOOKUPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            Ok(vec![SocketAddr::new(ip("93.184.216.34"), 0)])
        })
    }

    fn lookups() -> usize {
        LOOKUPS.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn overlapping_lookups_of_one_name_make_one_system_lookup() {
        let _one_at_a_time = COUNTED.lock().await;
        let resolver = GuardedResolver::with_lookup(STRICT, counted_lookup);
        let before = lookups();
        let answers = futures::future::join_all(
            (0..128).map(|_| resolver.resolve("api.provider.example".parse().unwrap())),
        )
        .await;
        assert_eq!(lookups() - before, 1, "128 connections at once, one lookup");
        for answer in answers {
            let addrs: Vec<_> = answer.ok().unwrap().collect();
            assert_eq!(addrs, vec![SocketAddr::new(ip("93.184.216.34"), 0)]);
        }

        let _ = resolver.resolve("other.example".parse().unwrap()).await;
        assert_eq!(lookups() - before, 2, "another name is its own lookup");
    }

    #[tokio::test]
    async fn a_finished_lookup_is_not_kept() {
        let _one_at_a_time = COUNTED.lock().await;
        let resolver = GuardedResolver::with_lookup(STRICT, counted_lookup);
        let before = lookups();
        for _ in 0..3 {
            assert!(
                resolver
                    .resolve("api.provider.example".parse().unwrap())
                    .await
                    .is_ok()
            );
        }
        assert_eq!(
            lookups() - before,
            3,
            "each new connection after the last asks again"
        );
        assert!(resolver.in_flight.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_lookup_whose_caller_gave_up_is_finished_by_the_next() {
        let _one_at_a_time = COUNTED.lock().await;
        let resolver = GuardedResolver::with_lookup(STRICT, counted_lookup);
        let before = lookups();
        let abandoned = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            resolver.resolve("api.provider.example".parse().unwrap()),
        )
        .await;
        assert!(abandoned.is_err(), "the first caller gave up");
        assert!(
            resolver
                .resolve("api.provider.example".parse().unwrap())
                .await
                .is_ok()
        );
        assert_eq!(
            lookups() - before,
            1,
            "the second caller joined the first lookup"
        );
        assert!(resolver.in_flight.lock().unwrap().is_empty());
        assert!(
            resolver
                .resolve("api.provider.example".parse().unwrap())
                .await
                .is_ok()
        );
        assert_eq!(lookups() - before, 2);
    }

    #[tokio::test]
    async fn every_caller_of_a_shared_lookup_gets_the_policy_check() {
        let resolver = GuardedResolver::with_lookup(STRICT, |_| {
            Box::pin(async { Ok(vec![SocketAddr::new("10.0.0.5".parse().unwrap(), 0)]) })
        });
        let answers = futures::future::join_all(
            (0..4).map(|_| resolver.resolve("internal.example".parse().unwrap())),
        )
        .await;
        for answer in answers {
            let err = answer.err().unwrap();
            let refused = err.downcast_ref::<DestinationRefused>().unwrap();
            assert_eq!(refused.range, AddressRange::Private);
        }
    }
}
