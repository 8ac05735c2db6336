//! Destination policy (S2): which addresses a provider call may reach, enforced where names
//! become addresses so that a DNS answer cannot smuggle a call into the private network.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

/// A resolver that asks the system (through tokio) and then applies the [`AddressPolicy`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuardedResolver {
    pub(crate) policy: AddressPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let kept = policy.filter(&host, found)?;
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
        let strict = GuardedResolver { policy: STRICT };
        let err = strict
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .unwrap();
        let refused = err.downcast_ref::<DestinationRefused>().unwrap();
        assert_eq!(refused.range, AddressRange::Loopback);

        let loose = GuardedResolver { policy: LOOPBACK };
        let addrs: Vec<_> = loose
            .resolve("localhost".parse().unwrap())
            .await
            .ok()
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        assert!(!addrs.is_empty());
    }
}
