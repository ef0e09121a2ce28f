//! rspamd for real (Debian's `rspamd`, a private instance; see `support`): GTUBE is rejected
//! with rspamd's text, a clean message passes with the score headers and rspamd's milter
//! headers, the SMTP context arrives as rspamd's request headers, the policy's quarantine
//! treatments apply, and a stopped rspamd gives the failure mode's verdict.

mod support;

use std::time::Duration;

use baton_filter::rspamd::{RspamdClient, RspamdPolicy, Treatment};
use baton_filter::{FailureMode, Filter, ReportResult, Verdict, VerdictKind, run};
use support::{GTUBE, Rspamd, added, message, removed, reply_line, request, settings};

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rspamd_verdicts_with_the_real_scanner() {
    let mut rspamd = Rspamd::start().await;
    let filter = Filter::rspamd(
        &settings("rspamd", TIMEOUT, 4, FailureMode::Closed),
        &rspamd.config(RspamdPolicy::default()),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // GTUBE: rspamd's `reject` with its SMTP message.
    let gtube = request(message("gtube", &format!("Hello,\r\n{GTUBE}\r\nBye")));
    let decision = run(std::slice::from_ref(&filter), &gtube).await;
    assert_eq!(
        decision.verdict,
        Verdict::reject("Gtube pattern"),
        "{decision:?}"
    );
    assert_eq!(
        reply_line(&decision).as_deref(),
        Some("550 5.7.1 Gtube pattern")
    );
    let report = decision
        .decided_by()
        .unwrap_or_else(|| panic!("{decision:?}"));
    assert!(
        matches!(&report.result, ReportResult::Answered { verdict: VerdictKind::Reject, detail } if detail.contains("GTUBE")),
        "{report:?}"
    );

    // A clean message: accepted, score headers, rspamd's milter headers (its queue id is ours),
    // and the context rspamd saw, echoed by the test rule.
    let clean = request(message("lunch", "Lunch tomorrow at noon?"));
    let decision = run(std::slice::from_ref(&filter), &clean).await;
    let v = &decision.verdict;
    assert!(v.is_accept(), "{decision:?}");
    assert_eq!(reply_line(&decision), None);
    let score = added(v, "X-Spam-Score").unwrap_or_else(|| panic!("{v:?}"));
    assert!(score.parse::<f64>().is_ok(), "{score}");
    let status = added(v, "X-Spam-Status").unwrap_or_else(|| panic!("{v:?}"));
    assert!(status.starts_with("No, score="), "{status}");
    assert!(status.ends_with("required=15.00"), "{status}");
    assert_eq!(added(v, "X-Rspamd-Queue-Id"), Some("QTEST0001"));
    assert_eq!(
        added(v, "X-Baton-Context"),
        Some(
            "from=app@example.com rcpt=b@example.org,c@example.org ip=192.0.2.10 \
             user=app-user helo=app.cluster.local host=app.example.com"
        )
    );
    let removed = removed(v);
    for name in ["X-Spam", "X-Spam-Score", "X-Spam-Status"] {
        assert!(removed.iter().any(|r| r == name), "{name} in {removed:?}");
    }

    // The typed answer itself.
    let client = RspamdClient::new(&rspamd.config(RspamdPolicy::default()), TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let result = client.scan(&gtube).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(result.symbols.iter().any(|s| s == "GTUBE"), "{result:?}");
    assert!(result.score >= result.required_score, "{result:?}");

    // Policy: rspamd's reject quarantined instead; a quarantine score every message reaches.
    let quarantining = Filter::rspamd(
        &settings("rspamd-q", TIMEOUT, 4, FailureMode::Closed),
        &rspamd.config(RspamdPolicy {
            on_reject: Treatment::Quarantine,
            ..RspamdPolicy::default()
        }),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let decision = run(std::slice::from_ref(&quarantining), &gtube).await;
    assert_eq!(
        decision.verdict.kind(),
        VerdictKind::Quarantine,
        "{decision:?}"
    );
    assert_eq!(
        reply_line(&decision),
        None,
        "a quarantined message is accepted"
    );
    let low_threshold = Filter::rspamd(
        &settings("rspamd-t", TIMEOUT, 4, FailureMode::Closed),
        &rspamd.config(RspamdPolicy {
            quarantine_score: Some(-1000.0),
            ..RspamdPolicy::default()
        }),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let decision = run(std::slice::from_ref(&low_threshold), &clean).await;
    assert!(
        matches!(&decision.verdict, Verdict::Quarantine { reason } if reason.contains("score")),
        "{decision:?}"
    );

    // rspamd stopped: fail open accepts (and is reported as a failure to count), fail closed
    // answers 451 4.7.1; each within its timeout (the calls end: nothing waits for rspamd).
    rspamd.stop();
    let open = Filter::rspamd(
        &settings("rspamd-open", TIMEOUT, 4, FailureMode::Open),
        &rspamd.config(RspamdPolicy::default()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let decision = run(std::slice::from_ref(&open), &clean).await;
    assert_eq!(decision.verdict, Verdict::accept(), "{decision:?}");
    assert_eq!(decision.failed_open().count(), 1, "{decision:?}");
    // The filter that had a kept-alive connection fails too, closed.
    let decision = run(std::slice::from_ref(&filter), &clean).await;
    assert_eq!(
        reply_line(&decision).as_deref(),
        Some("451 4.7.1 Content filter unavailable, try again later"),
        "{decision:?}"
    );
    assert!(
        matches!(
            &decision.reports[0].result,
            ReportResult::Failed {
                mode: FailureMode::Closed,
                ..
            }
        ),
        "{decision:?}"
    );
}
