//! Envelope-sender patterns (`*@example.com`, `app@example.com`, `*@*.example.com`) and the
//! domain normalisation they are matched against.

/// Local-part side of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LocalPat {
    /// `*`: any local part.
    Any,
    /// A literal local part, compared exactly (case-sensitive, quotes included).
    Exact(String),
}

/// Domain side of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DomainPat {
    /// `example.com`: exactly this domain.
    Exact(String),
    /// `*.example.com`: any strict subdomain of this domain (not the domain itself).
    Subdomains(String),
}

/// A parsed `allowed_senders` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SenderPattern {
    local: LocalPat,
    domain: DomainPat,
}

impl SenderPattern {
    /// Parse a pattern; `None` when it is not of a supported form.
    pub(crate) fn parse(pattern: &str) -> Option<Self> {
        let (local, domain) = pattern.trim().rsplit_once('@')?;
        let local = match local {
            "" => return None,
            "*" => LocalPat::Any,
            l if l.contains('*') => return None,
            l => LocalPat::Exact(l.to_string()),
        };
        let domain = match domain.strip_prefix("*.") {
            Some(base) => DomainPat::Subdomains(normalize_domain(base)?),
            None => DomainPat::Exact(normalize_domain(domain)?),
        };
        Some(SenderPattern { local, domain })
    }

    /// Whether `local@domain` matches; `domain` must come from [`normalize_domain`].
    pub(crate) fn matches(&self, local: &str, domain: &str) -> bool {
        let local_ok = match &self.local {
            LocalPat::Any => true,
            LocalPat::Exact(l) => l == local,
        };
        local_ok
            && match &self.domain {
                DomainPat::Exact(d) => d == domain,
                DomainPat::Subdomains(base) => is_strict_subdomain(domain, base),
            }
    }
}

/// Lower-case a domain and check that it is a plain DNS name that patterns can match:
/// `None` for empty names, address literals (`[1.2.3.4]`), a trailing dot, empty labels,
/// and any character other than letters, digits, `-` and `_` in labels.
pub(crate) fn normalize_domain(domain: &str) -> Option<String> {
    let d = domain.to_lowercase();
    let labels_ok = d.split('.').all(|label| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    });
    (!d.is_empty() && labels_ok).then_some(d)
}

/// `domain` is `parent` or a subdomain of it (both normalised).
pub(crate) fn is_within(domain: &str, parent: &str) -> bool {
    domain == parent || is_strict_subdomain(domain, parent)
}

/// `domain` is a strict subdomain of `parent` (both normalised).
fn is_strict_subdomain(domain: &str, parent: &str) -> bool {
    !parent.is_empty()
        && domain.len() > parent.len() + 1
        && domain.ends_with(parent)
        && domain.as_bytes()[domain.len() - parent.len() - 1] == b'.'
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        assert!(SenderPattern::parse("*@example.com").is_some());
        assert!(SenderPattern::parse("app@example.com").is_some());
        assert!(SenderPattern::parse("*@*.example.com").is_some());
        assert!(SenderPattern::parse("*@Example.COM").is_some());
        for bad in [
            "",
            "example.com",
            "@example.com",
            "a*@example.com",
            "*@",
            "*@*",
            "*@*.",
            "*@ex*ample.com",
            "*@[1.2.3.4]",
            "*@example..com",
        ] {
            assert!(SenderPattern::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn matching() {
        let exact = SenderPattern::parse("*@Example.com").unwrap();
        assert!(exact.matches("x", "example.com"));
        assert!(!exact.matches("x", "a.example.com"));
        assert!(!exact.matches("x", "evilexample.com"));
        let sub = SenderPattern::parse("*@*.example.com").unwrap();
        assert!(sub.matches("x", "a.example.com"));
        assert!(sub.matches("x", "b.a.example.com"));
        assert!(!sub.matches("x", "example.com"));
        assert!(!sub.matches("x", "aexample.com"));
        assert!(!sub.matches("x", "example.com.evil.com"));
        let user = SenderPattern::parse("app@example.com").unwrap();
        assert!(user.matches("app", "example.com"));
        assert!(!user.matches("App", "example.com"));
        assert!(!user.matches("\"app\"", "example.com"));
    }

    #[test]
    fn normalization() {
        assert_eq!(
            normalize_domain("ExAmple.COM").as_deref(),
            Some("example.com")
        );
        assert_eq!(normalize_domain("example.com."), None);
        assert_eq!(normalize_domain("[1.2.3.4]"), None);
        assert_eq!(normalize_domain("a b.com"), None);
        assert_eq!(normalize_domain(""), None);
        assert!(is_within("example.com", "example.com"));
        assert!(is_within("a.example.com", "example.com"));
        assert!(!is_within("aexample.com", "example.com"));
        assert!(!is_within("com", "example.com"));
    }
}
