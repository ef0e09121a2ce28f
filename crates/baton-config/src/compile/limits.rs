//! Limits (issue 18) → their snapshot messages: RelayDomain budgets and spike policy,
//! SendingPool inbound budgets, deny lists, destination shaping, throttle back-off and
//! egress warm-up. Pure; an invalid entry is reported with its field path.

use std::net::IpAddr;

use baton_proto::v1 as pb;

use crate::crd::{
    ClientRateSpec, DenySpec, DestinationLimitsSpec, DomainLimits, InboundLimitsSpec, RateSpec,
    SpikeAction, SpikeSpec, ThrottleSpec, WarmupSpec,
};
use crate::units::parse_duration;

/// `(field, message)` of an invalid entry.
pub(crate) type Problem = (String, String);

/// A RelayDomain's own budgets (`spec.limits`): the domain-wide ones.
pub(crate) fn domain_rates(l: &DomainLimits) -> Option<pb::RateLimits> {
    let r = pb::RateLimits {
        messages_per_minute: l.messages_per_minute,
        messages_per_hour: l.messages_per_hour,
        messages_per_day: l.messages_per_day,
        recipients_per_minute: l.recipients_per_minute,
        recipients_per_hour: l.recipients_per_hour,
        recipients_per_day: l.recipients_per_day,
    };
    (r != pb::RateLimits::default()).then_some(r)
}

/// `RateSpec` → `RateLimits` (`None` when every budget is 0).
pub(crate) fn rates(r: Option<&RateSpec>) -> Option<pb::RateLimits> {
    let r = r?;
    let out = pb::RateLimits {
        messages_per_minute: r.messages_per_minute,
        messages_per_hour: r.messages_per_hour,
        messages_per_day: r.messages_per_day,
        recipients_per_minute: r.recipients_per_minute,
        recipients_per_hour: r.recipients_per_hour,
        recipients_per_day: r.recipients_per_day,
    };
    (out != pb::RateLimits::default()).then_some(out)
}

/// `ClientRateSpec` → `ClientRateLimits`, prefix lengths defaulted (32, 64) and checked.
pub(crate) fn client_rates(
    c: Option<&ClientRateSpec>,
    field: &str,
) -> Result<Option<pb::ClientRateLimits>, Problem> {
    let Some(c) = c else { return Ok(None) };
    let v4 = c.ipv4_prefix_length.unwrap_or(32);
    let v6 = c.ipv6_prefix_length.unwrap_or(64);
    if !(8..=32).contains(&v4) {
        return Err((
            format!("{field}.ipv4PrefixLength"),
            format!("{v4} is not between 8 and 32"),
        ));
    }
    if !(16..=128).contains(&v6) {
        return Err((
            format!("{field}.ipv6PrefixLength"),
            format!("{v6} is not between 16 and 128"),
        ));
    }
    if c.messages_per_minute == 0 && c.messages_per_hour == 0 && c.messages_per_day == 0 {
        return Ok(None);
    }
    Ok(Some(pb::ClientRateLimits {
        messages_per_minute: c.messages_per_minute,
        messages_per_hour: c.messages_per_hour,
        messages_per_day: c.messages_per_day,
        ipv4_prefix_length: u32::from(v4),
        ipv6_prefix_length: u32::from(v6),
    }))
}

/// The spike policy of a RelayDomain.
pub(crate) fn spike(s: Option<&SpikeSpec>) -> Result<Option<pb::SpikePolicy>, Problem> {
    let Some(s) = s else { return Ok(None) };
    if !(2..=1000).contains(&s.factor) {
        return Err((
            "spec.limits.spike.factor".into(),
            format!("{} is not between 2 and 1000", s.factor),
        ));
    }
    if s.minimum_per_hour == 0 {
        return Err((
            "spec.limits.spike.minimumPerHour".into(),
            "must be at least 1".into(),
        ));
    }
    let action = match s.action {
        SpikeAction::Alert => pb::SpikeAction::Alert,
        SpikeAction::Throttle => pb::SpikeAction::Throttle,
        SpikeAction::Hold => pb::SpikeAction::Hold,
    };
    Ok(Some(pb::SpikePolicy {
        action: action as i32,
        factor: s.factor,
        minimum_per_hour: s.minimum_per_hour,
    }))
}

/// A pool's `spec.inboundLimits`.
pub(crate) fn inbound(i: Option<&InboundLimitsSpec>) -> Result<Option<pb::InboundLimits>, Problem> {
    let Some(i) = i else { return Ok(None) };
    let out = pb::InboundLimits {
        per_domain: rates(i.per_domain.as_ref()),
        per_credential: rates(i.per_credential.as_ref()),
        per_client: client_rates(i.per_client.as_ref(), "spec.inboundLimits.perClient")?,
    };
    Ok((out != pb::InboundLimits::default()).then_some(out))
}

/// A pool's `spec.deny`: networks normalised, patterns lower-cased and checked.
pub(crate) fn deny(d: Option<&DenySpec>) -> Result<Option<pb::DenyList>, Problem> {
    let Some(d) = d else { return Ok(None) };
    let client_networks = d
        .client_networks
        .iter()
        .enumerate()
        .map(|(i, n)| {
            network(n).ok_or_else(|| {
                (
                    format!("spec.deny.clientNetworks[{i}]"),
                    format!("{n:?} is not a CIDR or an IP address"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let senders = d
        .senders
        .iter()
        .enumerate()
        .map(|(i, s)| {
            sender_pattern(s).ok_or_else(|| {
                (
                    format!("spec.deny.senders[{i}]"),
                    format!(
                        "{s:?} is not a sender pattern (user@example.com, *@example.com, \
                         *@*.example.com)"
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let recipient_domains = d
        .recipient_domains
        .iter()
        .enumerate()
        .map(|(i, s)| {
            domain_pattern(s).ok_or_else(|| {
                (
                    format!("spec.deny.recipientDomains[{i}]"),
                    format!("{s:?} is not a domain (example.net) or *.example.net"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(pb::DenyList {
        client_networks,
        senders,
        recipient_domains,
    }))
}

/// A pool's `spec.limits.destinations`.
pub(crate) fn destinations(
    d: Option<&DestinationLimitsSpec>,
) -> Result<Option<pb::DestinationLimits>, Problem> {
    let Some(d) = d else { return Ok(None) };
    let overrides = d
        .overrides
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let destination = domain_pattern(&o.destination).ok_or_else(|| {
                (
                    format!("spec.limits.destinations.overrides[{i}].destination"),
                    format!(
                        "{:?} is not a site or domain (google.com, *.example.org)",
                        o.destination
                    ),
                )
            })?;
            Ok(pb::DestinationOverride {
                destination,
                max_connections: o.max_connections,
                messages_per_minute: o.messages_per_minute,
            })
        })
        .collect::<Result<Vec<_>, Problem>>()?;
    Ok(Some(pb::DestinationLimits {
        max_connections: d.max_connections,
        messages_per_minute: d.messages_per_minute,
        overrides,
    }))
}

/// A pool's `spec.limits.throttle`.
pub(crate) fn throttle(t: &ThrottleSpec) -> Result<pb::ThrottleBackoff, Problem> {
    let secs = |field: &str, text: &str| -> Result<u64, Problem> {
        let d = parse_duration(text).map_err(|m| (format!("spec.limits.throttle.{field}"), m))?;
        if d.as_secs() < 1 {
            return Err((
                format!("spec.limits.throttle.{field}"),
                "must be at least 1s".into(),
            ));
        }
        Ok(d.as_secs())
    };
    let initial_secs = secs("backoff", &t.backoff)?;
    let max_secs = secs("maxBackoff", &t.max_backoff)?;
    if max_secs < initial_secs {
        return Err((
            "spec.limits.throttle.maxBackoff".into(),
            format!("{} is shorter than backoff {}", t.max_backoff, t.backoff),
        ));
    }
    Ok(pb::ThrottleBackoff {
        initial_secs,
        max_secs,
    })
}

/// An egress identity's `warmup`.
pub(crate) fn warmup(w: Option<&WarmupSpec>, field: &str) -> Result<Option<pb::Warmup>, Problem> {
    let Some(w) = w else { return Ok(None) };
    let start_day = days_from_date(&w.start).ok_or_else(|| {
        (
            format!("{field}.warmup.start"),
            format!("{:?} is not a date YYYY-MM-DD", w.start),
        )
    })?;
    if w.daily_limits.is_empty() || w.daily_limits.len() > 366 {
        return Err((
            format!("{field}.warmup.dailyLimits"),
            "must have between 1 and 366 entries".into(),
        ));
    }
    if let Some(i) = w.daily_limits.iter().position(|n| *n == 0) {
        return Err((
            format!("{field}.warmup.dailyLimits[{i}]"),
            "must be at least 1".into(),
        ));
    }
    Ok(Some(pb::Warmup {
        start_day,
        daily_limits: w.daily_limits.clone(),
    }))
}

/// A CIDR or single address, normalised (`10.0.0.0/8`, `192.0.2.1/32`).
fn network(text: &str) -> Option<String> {
    let t = text.trim();
    let net = t
        .parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| t.parse::<IpAddr>().ok().map(ipnet::IpNet::from))?;
    Some(net.trunc().to_string())
}

/// `user@example.com`, `*@example.com` or `*@*.example.com`, lower-cased.
fn sender_pattern(text: &str) -> Option<String> {
    let t = text.trim().to_ascii_lowercase();
    let (local, domain) = t.rsplit_once('@')?;
    let local_ok = local == "*"
        || (!local.is_empty()
            && local
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"<>()[]\\,;:\"@*".contains(&b)));
    (local_ok && domain_pattern(domain).is_some()).then_some(t)
}

/// `example.net` or `*.example.net`, lower-cased; labels of letters, digits and `-`.
fn domain_pattern(text: &str) -> Option<String> {
    let t = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let bare = t.strip_prefix("*.").unwrap_or(&t);
    let labels: Vec<&str> = bare.split('.').collect();
    let ok = bare.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then_some(t)
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (proleptic Gregorian), `None` if invalid.
fn days_from_date(text: &str) -> Option<i64> {
    let mut parts = text.trim().splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let in_month = month_days.get(usize::try_from(m - 1).ok()?)?;
    if d < 1 || d > *in_month {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_count_days_since_the_epoch() {
        assert_eq!(days_from_date("1970-01-01"), Some(0));
        assert_eq!(days_from_date("1970-01-02"), Some(1));
        assert_eq!(days_from_date("2000-03-01"), Some(11_017));
        assert_eq!(days_from_date("2026-12-04"), Some(20_791));
        assert_eq!(days_from_date("2024-02-29"), Some(19_782));
        for bad in [
            "2023-02-29",
            "2026-13-01",
            "2026-00-10",
            "1969-12-31",
            "x",
            "2026-1",
        ] {
            assert_eq!(days_from_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn patterns_are_checked_and_lower_cased() {
        assert_eq!(
            sender_pattern("*@Spam.Example").as_deref(),
            Some("*@spam.example")
        );
        assert_eq!(
            sender_pattern("*@*.example.com").as_deref(),
            Some("*@*.example.com")
        );
        assert_eq!(
            sender_pattern("a.b@example.com").as_deref(),
            Some("a.b@example.com")
        );
        for bad in [
            "example.com",
            "@example.com",
            "a*b@example.com",
            "a@b",
            "a@*",
        ] {
            assert_eq!(sender_pattern(bad), None, "{bad}");
        }
        assert_eq!(
            domain_pattern("*.Example.NET.").as_deref(),
            Some("*.example.net")
        );
        for bad in ["net", "*.net", "a..b", "a b.c", "*"] {
            assert_eq!(domain_pattern(bad), None, "{bad}");
        }
        assert_eq!(network("10.1.2.3/8").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(network("2001:db8::1").as_deref(), Some("2001:db8::1/128"));
        assert_eq!(network("10.0.0.0/33"), None);
    }

    #[test]
    fn throttle_back_off_must_not_exceed_its_maximum() {
        let ok = throttle(&ThrottleSpec::default()).map_err(|e| e.1);
        assert_eq!(
            ok,
            Ok(pb::ThrottleBackoff {
                initial_secs: 60,
                max_secs: 900
            })
        );
        let bad = ThrottleSpec {
            backoff: "10m".into(),
            max_backoff: "1m".into(),
        };
        assert_eq!(
            throttle(&bad).map_err(|e| e.0),
            Err("spec.limits.throttle.maxBackoff".to_owned())
        );
    }

    #[test]
    fn empty_budgets_compile_to_nothing() {
        assert_eq!(rates(Some(&RateSpec::default())), None);
        assert_eq!(
            client_rates(Some(&ClientRateSpec::default()), "f"),
            Ok(None)
        );
        let c = ClientRateSpec {
            messages_per_hour: 5,
            ..Default::default()
        };
        let compiled = client_rates(Some(&c), "f").ok().flatten();
        assert_eq!(
            compiled.map(|c| (
                c.messages_per_hour,
                c.ipv4_prefix_length,
                c.ipv6_prefix_length
            )),
            Some((5, 32, 64))
        );
        assert_eq!(domain_rates(&DomainLimits::default()), None);
    }
}
