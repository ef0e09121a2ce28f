//! The dispatcher's decisions, without I/O: whether an event is still worth sending, what an
//! endpoint's answer means, and how long to wait before the next attempt.

use std::time::Duration;

/// The first retry waits this long; each further one twice as long.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// No retry waits longer than this.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// Why an event is not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// More than the sink's `maxBacklog` events wait behind it.
    Backlog,
    /// It is older than the sink's `maxEventAge`.
    Age,
}

impl Drop {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Drop::Backlog => "dropped_backlog",
            Drop::Age => "dropped_age",
        }
    }
}

/// Whether an event handed to the dispatcher is dropped: `pending` events wait behind it, it
/// was published `age_ms` ago. `max_event_age_ms` 0: no age limit.
pub fn drop_reason(
    pending: u64,
    max_backlog: u64,
    age_ms: i64,
    max_event_age_ms: u64,
) -> Option<Drop> {
    if pending >= max_backlog.max(1) {
        return Some(Drop::Backlog);
    }
    if max_event_age_ms > 0 && age_ms > 0 && u64::try_from(age_ms).unwrap_or(0) > max_event_age_ms {
        return Some(Drop::Age);
    }
    None
}

/// Where an arriving event joins its message's lane: `queued` says, per waiting event,
/// whether it is an `accepted`; `sending`: the head is on its way (it stays first). An
/// `accepted` goes before every other event not yet sent (the ingress publishes it in the
/// background, so it can be stored after a fast worker's first events); anything else goes
/// last.
pub fn lane_position(queued: &[bool], sending: bool, accepted: bool) -> usize {
    if !accepted {
        return queued.len();
    }
    let from = usize::from(sending).min(queued.len());
    queued[from..]
        .iter()
        .position(|a| !a)
        .map_or(queued.len(), |i| i + from)
}

/// What became of one POST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A `2xx`: the endpoint has the event.
    Accepted,
    /// Anything else: tried again later. The text names the status or the transport error.
    Failed(String),
}

/// The meaning of an HTTP status. Every non-`2xx` is retried, as the Standard Webhooks
/// specification expects of a sender (a `4xx` is often a receiver's deployment in progress);
/// the sink's status shows the failure meanwhile.
pub fn classify(status: u16, reason: &str) -> Answer {
    if (200..300).contains(&status) {
        Answer::Accepted
    } else if reason.is_empty() {
        Answer::Failed(format!("HTTP {status}"))
    } else {
        Answer::Failed(format!("HTTP {status} {reason}"))
    }
}

/// The wait before attempt `failures + 1` (after `failures` failed ones): 1 s, 2 s, 4 s, …
/// up to [`MAX_RETRY`], shortened by up to a fifth by `jitter` (0.0–1.0) so that many
/// dispatchers do not retry in step.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = FIRST_RETRY.saturating_mul(1 << exp).min(MAX_RETRY);
    let jitter = jitter.clamp(0.0, 1.0);
    base.mul_f64(1.0 - jitter / 5.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_and_age_bounds() {
        assert_eq!(drop_reason(0, 10, 0, 0), None);
        assert_eq!(drop_reason(9, 10, 0, 0), None);
        assert_eq!(drop_reason(10, 10, 0, 0), Some(Drop::Backlog));
        assert_eq!(drop_reason(0, 0, 0, 0), None, "a zero bound means one");
        assert_eq!(drop_reason(1, 0, 0, 0), Some(Drop::Backlog));
        assert_eq!(drop_reason(0, 10, 5_000, 4_000), Some(Drop::Age));
        assert_eq!(drop_reason(0, 10, 4_000, 4_000), None);
        assert_eq!(drop_reason(0, 10, 5_000_000, 0), None, "no age limit");
        assert_eq!(drop_reason(0, 10, -5, 1), None, "a clock behind the server");
    }

    #[test]
    fn an_accepted_overtakes_what_is_not_yet_sent() {
        // [delivered] waiting: accepted goes first.
        assert_eq!(lane_position(&[false], false, true), 0);
        // [delivered] on its way: it stays first.
        assert_eq!(lane_position(&[false], true, true), 1);
        // [deferred (sending), delivered]: before delivered.
        assert_eq!(lane_position(&[false, false], true, true), 1);
        // Nothing waiting, or only accepteds: at the end.
        assert_eq!(lane_position(&[], false, true), 0);
        assert_eq!(lane_position(&[true], false, true), 1);
        assert_eq!(lane_position(&[], true, true), 0);
        // Anything else: last.
        assert_eq!(lane_position(&[false, true], false, false), 2);
    }

    #[test]
    fn only_2xx_is_accepted() {
        assert_eq!(classify(200, "OK"), Answer::Accepted);
        assert_eq!(classify(204, ""), Answer::Accepted);
        assert_eq!(
            classify(503, "Service Unavailable"),
            Answer::Failed("HTTP 503 Service Unavailable".into())
        );
        assert_eq!(classify(400, ""), Answer::Failed("HTTP 400".into()));
        assert_eq!(classify(301, ""), Answer::Failed("HTTP 301".into()));
    }

    #[test]
    fn backoff_doubles_up_to_a_minute_with_bounded_jitter() {
        let secs = |n| backoff(n, 0.0).as_secs();
        assert_eq!(
            [
                secs(1),
                secs(2),
                secs(3),
                secs(4),
                secs(7),
                secs(8),
                secs(40)
            ],
            [1, 2, 4, 8, 60, 60, 60]
        );
        assert_eq!(secs(0), 1);
        assert_eq!(backoff(3, 1.0), Duration::from_millis(3_200));
        assert_eq!(backoff(3, 7.0), Duration::from_millis(3_200));
        assert_eq!(backoff(u32::MAX, 0.5), Duration::from_secs(54));
    }
}

/// Where sinks may send: every address except the built-in denied ranges (loopback,
/// link-local — cloud metadata services —, unspecified, multicast, broadcast) and the
/// operator's extra denied networks; the operator's allowed networks override both. Sink URLs
/// are chosen by namespace owners, so this keeps them from making the dispatcher reach what
/// only the cluster should (requests are HTTPS with verified certificates in any case).
#[derive(Clone, Debug, Default)]
pub struct SinkNetworks {
    allowed: Vec<ipnet::IpNet>,
    denied: Vec<ipnet::IpNet>,
}

/// Networks no sink may reach unless explicitly allowed.
pub const BUILTIN_DENIED: [&str; 12] = [
    "127.0.0.0/8",
    "::1/128",
    "0.0.0.0/8",
    "::/128",
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::254/128",
    "224.0.0.0/4",
    "ff00::/8",
    "255.255.255.255/32",
    "192.0.0.0/24",
    "240.0.0.0/4",
];

impl SinkNetworks {
    /// The built-in policy with `allowed` (overriding any deny) and extra `denied` networks.
    pub fn new(allowed: Vec<ipnet::IpNet>, mut denied: Vec<ipnet::IpNet>) -> Self {
        denied.extend(
            BUILTIN_DENIED
                .iter()
                .filter_map(|n| n.parse::<ipnet::IpNet>().ok()),
        );
        SinkNetworks { allowed, denied }
    }

    /// Whether a sink may connect to `ip` (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        };
        if self.allowed.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        !self.denied.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod network_tests {
    use super::*;

    fn net(s: &str) -> ipnet::IpNet {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn loopback_link_local_and_metadata_are_denied_unless_allowed() {
        let p = SinkNetworks::new(vec![], vec![net("10.96.0.0/12")]);
        for denied in [
            "127.0.0.1",
            "::1",
            "169.254.169.254",
            "fd00:ec2::254",
            "0.0.0.0",
            "::ffff:127.0.0.1",
            "10.96.0.1",
            "239.1.2.3",
        ] {
            assert!(
                !p.allows(denied.parse().unwrap_or_else(|_| unreachable!())),
                "{denied}"
            );
        }
        for allowed in ["203.0.113.7", "10.0.0.5", "2001:db8::1", "192.168.1.1"] {
            assert!(
                p.allows(allowed.parse().unwrap_or_else(|_| unreachable!())),
                "{allowed}"
            );
        }
        let dev = SinkNetworks::new(vec![net("127.0.0.0/8")], vec![]);
        assert!(dev.allows("127.0.0.1".parse().unwrap_or_else(|_| unreachable!())));
        assert!(!dev.allows("::1".parse().unwrap_or_else(|_| unreachable!())));
    }
}
