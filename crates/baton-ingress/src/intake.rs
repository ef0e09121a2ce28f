//! Mail *to* Baton: the reports that come back to a RelayDomain's return-path domain (whose MX
//! is the ingress). Recipients there are signed VERP addresses (`baton_core::verp`, made by
//! the worker) or the feedback addresses `fbl@`, `abuse@` and `postmaster@`; anything else is
//! refused at RCPT, a forged VERP address included. After the final dot the message must be a
//! delivery report (RFC 3464) or a complaint (ARF, RFC 5965): it is matched to the message and
//! recipient it is about, classified, fed to the suppression list, logged and counted — and
//! never queued, relayed onward or bounced back. A message that is not a report is refused
//! with `550 5.7.1`.

use std::collections::HashMap;

use baton_core::bounce::{BounceClass, Classifier};
use baton_core::report::{self, Report};
use baton_core::suppression::{Entry, Source, normalize};
use baton_core::verp::{Verp, VerpKeys};
use baton_proto::v1::RelayConfig;
use baton_smtp::{Reply, catalogue};

use crate::policy::Snapshot;

/// Local parts accepted at a return-path domain besides VERP addresses: where feedback loops
/// and postmasters write.
const FEEDBACK_LOCAL_PARTS: [&str; 3] = ["fbl", "abuse", "postmaster"];

/// The return-path domains of one snapshot.
#[derive(Default)]
pub struct ReturnPaths {
    /// Return-path domain → (RelayDomain name, its VERP keys).
    by_domain: HashMap<String, Vec<(String, VerpKeys)>>,
}

/// A recipient at a return-path domain.
#[derive(Debug, Clone)]
pub enum Recipient {
    /// A verified VERP address of a RelayDomain.
    Verp {
        /// The RelayDomain (`namespace/name`).
        relay_domain: String,
        /// What the address says.
        verp: Verp,
    },
    /// `fbl@`, `abuse@` or `postmaster@` of the domain.
    Feedback {
        /// The return-path domain.
        domain: String,
    },
}

impl ReturnPaths {
    /// Index the return paths of a snapshot.
    pub fn new(config: &RelayConfig) -> ReturnPaths {
        let mut by_domain: HashMap<String, Vec<(String, VerpKeys)>> = HashMap::new();
        for d in &config.domains {
            if let Some(rp) = &d.return_path {
                let keys = VerpKeys::new(rp.keys.iter().map(|k| (k.id, k.secret.clone())));
                by_domain
                    .entry(rp.domain.to_ascii_lowercase())
                    .or_default()
                    .push((d.name.clone(), keys));
            }
        }
        ReturnPaths { by_domain }
    }

    /// Whether any RelayDomain has a return path.
    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    /// Whether `domain` is a return-path domain.
    pub fn owns(&self, domain: &str) -> bool {
        self.by_domain
            .contains_key(&domain.trim_end_matches('.').to_ascii_lowercase())
    }

    /// What `local@domain` is, when `domain` is a return-path domain: `None` for an address
    /// that is neither a valid VERP address nor a feedback address.
    pub fn recipient(&self, local: &str, domain: &str) -> Option<Recipient> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let owners = self.by_domain.get(&domain)?;
        if FEEDBACK_LOCAL_PARTS
            .iter()
            .any(|f| f.eq_ignore_ascii_case(local))
        {
            return Some(Recipient::Feedback { domain });
        }
        owners.iter().find_map(|(rd, keys)| {
            keys.verify(local).map(|verp| Recipient::Verp {
                relay_domain: rd.clone(),
                verp,
            })
        })
    }

    /// Verify a whole VERP address (from a complaint's `Original-Mail-From` or `Return-Path`).
    fn verify_address(&self, address: &str) -> Option<(String, Verp)> {
        let (local, domain) = address.rsplit_once('@')?;
        match self.recipient(local, domain)? {
            Recipient::Verp { relay_domain, verp } => Some((relay_domain, verp)),
            Recipient::Feedback { .. } => None,
        }
    }
}

/// What a report did, for the log and `baton_ingress_reports_total{kind,result}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `dsn`, `complaint` or `other`.
    pub kind: &'static str,
    /// `suppressed`, `matched` (about a message of ours, nothing to suppress), `unmatched`
    /// (no recipient could be matched) or `refused` (not a report).
    pub result: &'static str,
    /// The RelayDomain, when matched.
    pub relay_domain: String,
    /// Entries to put on suppression lists.
    pub entries: Vec<Entry>,
}

/// Decide what a message to the return path means (pure: the caller stores the entries).
pub fn handle(
    body: &[u8],
    recipients: &[Recipient],
    snapshot: &Snapshot,
    classifier: &Classifier,
    now: i64,
) -> Outcome {
    let paths = &snapshot.return_paths;
    let mut out = Outcome {
        kind: "other",
        result: "refused",
        relay_domain: String::new(),
        entries: Vec::new(),
    };
    let Some(report) = report::parse(body) else {
        return out;
    };
    out.result = "unmatched";
    match report {
        Report::Dsn(blocks) => {
            out.kind = "dsn";
            for r in recipients {
                let Recipient::Verp { relay_domain, verp } = r else {
                    continue;
                };
                for b in blocks.iter().filter(|b| b.action == "failed") {
                    let candidates = b.original_recipient.iter().chain([&b.final_recipient]);
                    let Some(address) = candidates.into_iter().find(|a| verp.matches(a)) else {
                        continue;
                    };
                    out.relay_domain = relay_domain.clone();
                    out.result = "matched";
                    let class = classify(classifier, &b.status, &b.diagnostic);
                    let Some(policy) = snapshot.suppression.get(relay_domain) else {
                        continue;
                    };
                    if policy.adds(class) {
                        let mut e = policy.entry_for_bounce(
                            relay_domain,
                            address,
                            class,
                            &b.diagnostic,
                            &verp.queue_id,
                            now,
                        );
                        e.source = Source::AsyncBounce;
                        out.entries.push(e);
                        out.result = "suppressed";
                    }
                }
            }
        }
        Report::Complaint(c) => {
            out.kind = "complaint";
            if c.feedback_type == "not-spam" {
                return out;
            }
            let mut verps: Vec<(String, Verp)> = recipients
                .iter()
                .filter_map(|r| match r {
                    Recipient::Verp { relay_domain, verp } => {
                        Some((relay_domain.clone(), verp.clone()))
                    }
                    Recipient::Feedback { .. } => None,
                })
                .collect();
            verps.extend(
                c.original_mail_from
                    .iter()
                    .chain(c.return_path.iter())
                    .filter_map(|a| paths.verify_address(a)),
            );
            let addresses: Vec<&String> = c.original_rcpt_to.iter().chain(&c.original_to).collect();
            for (relay_domain, verp) in &verps {
                let Some(address) = addresses.iter().find(|a| verp.matches(a)) else {
                    continue;
                };
                out.relay_domain = relay_domain.clone();
                out.result = "matched";
                let Some(policy) = snapshot.suppression.get(relay_domain) else {
                    continue;
                };
                if policy.enabled {
                    out.entries.push(Entry {
                        address: normalize(address),
                        relay_domain: relay_domain.clone(),
                        source: Source::Complaint,
                        class: "complaint".into(),
                        reply: format!("feedback report: {}", c.feedback_type),
                        queue_id: verp.queue_id.clone(),
                        created_ms: now,
                        // A complaint is a request to stop: it does not expire by itself.
                        expires_ms: 0,
                    });
                    out.result = "suppressed";
                    break;
                }
            }
        }
    }
    out
}

/// Class of a reported failure: from the diagnostic when it carries a reply code, else from
/// the status.
fn classify(classifier: &Classifier, status: &str, diagnostic: &str) -> BounceClass {
    let has_code = diagnostic
        .get(..3)
        .is_some_and(|c| c.bytes().all(|b| b.is_ascii_digit()));
    if has_code {
        return classifier.classify_line(diagnostic);
    }
    let code = if status.starts_with('4') { 451 } else { 550 };
    classifier.classify(code, status, diagnostic)
}

/// The reply after the final dot.
pub fn reply(outcome: &Outcome, domain: &str) -> Reply {
    if outcome.result == "refused" {
        catalogue::reports_only(domain)
    } else {
        catalogue::report_received()
    }
}
