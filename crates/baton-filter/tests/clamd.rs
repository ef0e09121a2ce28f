//! ClamAV for real (Debian's `clamd`, a private instance with a local EICAR signature
//! database; see `support`): EICAR is rejected (in the body and as a base64 attachment), a
//! clean message passes untouched, quarantine is configurable, clamd's size limit is a filter
//! failure, and a stopped clamd gives the failure mode's verdict.

mod support;

use std::time::Duration;

use baton_filter::clamd::{ClamdClient, ClamdConfig, ClamdReply};
use baton_filter::{FailureMode, Filter, FilterError, ReportResult, Verdict, VerdictKind, run};
use support::{Clamd, EICAR, message, reply_line, request, settings};

const TIMEOUT: Duration = Duration::from_secs(30);

fn attachment_message() -> Vec<u8> {
    // EICAR base64-encoded as an attachment (clamd decodes MIME).
    let b64 = "WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNULUZJTEUhJEgrSCo=";
    format!(
        "From: <app@example.com>\r\nTo: <b@example.org>\r\nSubject: report\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\n\
         Content-Type: text/plain\r\n\r\nsee attached\r\n--XX\r\n\
         Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"report.com\"\r\n\r\n{b64}\r\n--XX--\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clamd_verdicts_with_the_real_scanner() {
    let mut clamd = Clamd::start().await;
    let config = |quarantine| ClamdConfig {
        address: clamd.address.clone(),
        quarantine,
    };
    let closed = Filter::clamd(
        &settings("clamav", TIMEOUT, 4, FailureMode::Closed),
        config(false),
    );

    // EICAR in the body, and as a base64 attachment: 550 5.7.1, no signature name to the client.
    let mut body = message("test", "Here it is:").to_vec();
    body.extend_from_slice(EICAR);
    body.extend_from_slice(b"\r\n");
    for infected in [body.clone(), attachment_message()] {
        let decision = run(std::slice::from_ref(&closed), &request(infected)).await;
        assert_eq!(
            decision.verdict,
            Verdict::reject("Virus found in message"),
            "{decision:?}"
        );
        assert_eq!(
            reply_line(&decision).as_deref(),
            Some("550 5.7.1 Virus found in message")
        );
        assert!(
            matches!(&decision.reports[0].result, ReportResult::Answered { detail, .. } if detail.contains("Baton.Test.EICAR")),
            "{decision:?}"
        );
    }
    let raw = ClamdClient::new(config(false))
        .scan(EICAR)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(raw, ClamdReply::Found(ref n) if n.starts_with("Baton.Test.EICAR")),
        "{raw:?}"
    );

    // Clean: accepted, no edits.
    let clean = request(message("lunch", "Lunch tomorrow at noon?"));
    let decision = run(std::slice::from_ref(&closed), &clean).await;
    assert_eq!(decision.verdict, Verdict::accept(), "{decision:?}");

    // Quarantine instead of reject.
    let quarantining = Filter::clamd(
        &settings("clamav-q", TIMEOUT, 4, FailureMode::Closed),
        config(true),
    );
    let decision = run(std::slice::from_ref(&quarantining), &request(body.clone())).await;
    assert!(
        matches!(&decision.verdict, Verdict::Quarantine { reason } if reason.contains("Baton.Test.EICAR")),
        "{decision:?}"
    );

    // Past clamd's StreamMaxLength (1 MiB here): clamd's error is a filter failure.
    let big = request(message(
        "big",
        &format!("{}\r\n", "x".repeat(76)).repeat(30_000),
    ));
    assert!(big.message.len() > 2 * 1024 * 1024);
    let decision = run(std::slice::from_ref(&closed), &big).await;
    assert_eq!(
        reply_line(&decision).as_deref(),
        Some("451 4.7.1 Content filter unavailable, try again later"),
        "{decision:?}"
    );
    assert!(
        matches!(
            &decision.reports[0].result,
            ReportResult::Failed {
                error: FilterError::Scanner(_) | FilterError::Io(_),
                mode: FailureMode::Closed
            }
        ),
        "{decision:?}"
    );
    let open = Filter::clamd(
        &settings("clamav-open", TIMEOUT, 4, FailureMode::Open),
        config(false),
    );
    let decision = run(std::slice::from_ref(&open), &big).await;
    assert_eq!(decision.verdict, Verdict::accept(), "{decision:?}");
    assert_eq!(decision.failed_open().count(), 1);

    // clamd stopped: open accepts (counted), closed answers 451 4.7.1.
    clamd.stop();
    let decision = run(std::slice::from_ref(&open), &request(body.clone())).await;
    assert_eq!(decision.verdict, Verdict::accept(), "{decision:?}");
    assert!(
        matches!(
            &decision.reports[0].result,
            ReportResult::Failed {
                error: FilterError::Connect { .. },
                mode: FailureMode::Open
            }
        ),
        "{decision:?}"
    );
    let decision = run(std::slice::from_ref(&closed), &request(body)).await;
    assert_eq!(
        decision.verdict.kind(),
        VerdictKind::TempFail,
        "{decision:?}"
    );
}
