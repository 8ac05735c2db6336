//! Ports for servers that another process (or a later step) binds.
//!
//! The bench and the tests must write a server's port into configuration before the server
//! runs. A port found free by binding port 0 comes from the kernel's ephemeral range, from
//! which outgoing connections take their local ports: in the time between the probe and the
//! server's bind, one of a worker's connections (one per call in flight) can be handed that
//! very port, and the server then fails to start. So the port is picked outside that range,
//! at random, checked free by binding it, and never given twice by one process.

use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::sync::Mutex;

/// How many random ports are tried before giving up.
const TRIES: usize = 1_000;

/// A free port on 127.0.0.1 outside the kernel's ephemeral range, never the same twice in
/// one process. An error only when a thousand random ports were all taken.
pub fn free_port() -> std::io::Result<u16> {
    free_port_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// [`free_port`] on the address `ip`.
pub fn free_port_on(ip: IpAddr) -> std::io::Result<u16> {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let outside = outside_ephemeral(ephemeral_ports());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..TRIES {
        let port = rand::random_range(outside.clone());
        if !given.contains(&port) && std::net::TcpListener::bind((ip, port)).is_ok() {
            given.push(port);
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!(
            "no free port on {ip} between {} and {} ({TRIES} tried)",
            outside.start(),
            outside.end()
        ),
    ))
}

/// The ports above the ephemeral range, or below it when too few are above.
fn outside_ephemeral((low, high): (u16, u16)) -> RangeInclusive<u16> {
    if high < 65_000 {
        high + 1..=65_535
    } else {
        10_000..=low.saturating_sub(1).max(10_000)
    }
}

/// The kernel's ephemeral port range (Linux), or the usual default where it cannot be read.
fn ephemeral_ports() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_outside_the_ephemeral_range_and_never_given_twice() {
        let (low, high) = ephemeral_ports();
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        for p in &ports {
            assert!(!(low..=high).contains(p), "{p} is in {low}..={high}");
        }
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
    }

    #[test]
    fn below_the_range_when_it_reaches_the_top() {
        assert_eq!(outside_ephemeral((32_768, 60_999)), 61_000..=65_535);
        assert_eq!(outside_ephemeral((20_000, 65_535)), 10_000..=19_999);
    }
}
