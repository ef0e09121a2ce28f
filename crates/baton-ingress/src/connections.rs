//! Counting open connections, in total and per client address, for the connect-time limits
//! (`max_connections`, `max_connections_per_ip`). Admission and release are O(1): the total is
//! kept, not summed over the addresses, so a flood of clients from many addresses does not make
//! every new connection slower.

use std::collections::HashMap;
use std::net::IpAddr;

/// Why a connection is not admitted (the metric's `result` label).
pub type Refusal = &'static str;

/// Open connections: the total and the count per client address (addresses with none are
/// not kept).
#[derive(Debug, Default)]
pub struct Connections {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Connections {
    /// Admit one more connection from `ip` unless `max_total` connections are open
    /// (`over_capacity`) or `max_per_ip` are open from `ip` (`over_per_ip`).
    pub fn admit(
        &mut self,
        ip: IpAddr,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<(), Refusal> {
        if self.total >= max_total {
            return Err("over_capacity");
        }
        let n = self.per_ip.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
            return Err("over_per_ip");
        }
        *n += 1;
        self.total += 1;
        Ok(())
    }

    /// One admitted connection from `ip` closed (nothing when none is counted).
    pub fn release(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Open connections in total.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Addresses with at least one open connection.
    pub fn addresses(&self) -> usize {
        self.per_ip.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn limits_total_and_per_address() {
        let mut c = Connections::default();
        assert_eq!(c.admit(ip(1), 3, 2), Ok(()));
        assert_eq!(c.admit(ip(1), 3, 2), Ok(()));
        assert_eq!(c.admit(ip(1), 3, 2), Err("over_per_ip"));
        assert_eq!(c.admit(ip(2), 3, 2), Ok(()));
        assert_eq!(c.admit(ip(3), 3, 2), Err("over_capacity"));
        assert_eq!((c.total(), c.addresses()), (3, 2));
        c.release(ip(1));
        assert_eq!(c.admit(ip(3), 3, 2), Ok(()));
        assert_eq!((c.total(), c.addresses()), (3, 3));
    }

    #[test]
    fn release_forgets_idle_addresses_and_ignores_unknown_ones() {
        let mut c = Connections::default();
        c.release(ip(9));
        assert_eq!((c.total(), c.addresses()), (0, 0));
        for n in 0..100 {
            assert_eq!(c.admit(ip(n), 1_000, 1), Ok(()));
        }
        assert_eq!((c.total(), c.addresses()), (100, 100));
        for n in 0..100 {
            c.release(ip(n));
            c.release(ip(n));
        }
        assert_eq!((c.total(), c.addresses()), (0, 0));
    }

    #[test]
    fn a_zero_per_address_limit_refuses_without_keeping_the_address() {
        let mut c = Connections::default();
        assert_eq!(c.admit(ip(1), 10, 0), Err("over_per_ip"));
        assert_eq!((c.total(), c.addresses()), (0, 0));
    }

    #[test]
    fn the_total_matches_the_sum_after_any_sequence() {
        // A deterministic pseudo-random walk of admissions and releases.
        let mut c = Connections::default();
        let mut x: u32 = 12345;
        for _ in 0..10_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let a = ip((x >> 16) as u8 % 7);
            if x.is_multiple_of(3) {
                c.release(a);
            } else {
                let _ = c.admit(a, 20, 4);
            }
            assert_eq!(c.total, c.per_ip.values().sum::<usize>());
            assert!(c.total <= 20 && c.per_ip.values().all(|n| (1..=4).contains(n)));
        }
    }
}
