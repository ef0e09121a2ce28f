//! Host names Baton announces: a fully qualified domain name is what EHLO and a DSN's
//! `Reporting-MTA` must carry (RFC 5321 §4.1.1.1: "the fully-qualified domain name of the SMTP
//! client"); a Kubernetes pod name (`baton-worker-bulk-7d9c…`) is not one.

/// Whether `name` is a fully qualified domain name: at most 253 octets, at least two labels of
/// 1–63 letters, digits and hyphens (not at either end of a label), and a top label that is not
/// all digits (so an IPv4 address is not one). A trailing dot is allowed.
pub fn is_fqdn(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    labels.len() >= 2
        && labels.iter().all(|l| label_ok(l))
        && labels
            .last()
            .is_some_and(|top| !top.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdns_and_what_is_not_one() {
        for ok in [
            "mail.example.com",
            "mx1.example.co.uk.",
            "a.b",
            "xn--bcher-kva.example",
        ] {
            assert!(is_fqdn(ok), "{ok}");
        }
        let long_label = format!("{}.example", "a".repeat(64));
        let too_long = format!("{}.example", vec!["a".repeat(60); 5].join("."));
        for bad in [
            "",
            "localhost",
            "baton-worker-bulk-7d9c5b8f4-x2x9q",
            "192.0.2.1",
            "-a.example",
            "a-.example",
            "a..example",
            "a_b.example",
            ".example",
            long_label.as_str(),
            too_long.as_str(),
        ] {
            assert!(!is_fqdn(bad), "{bad}");
        }
    }
}
