//! The generic gRPC filter against a real server in another language: Python grpcio
//! (`tests/tools/filter_server.py`, its code generated from `proto/baton/v1/filter.proto` by
//! grpcio-tools). A marker gets a reject with the server's (cleaned) text; otherwise the
//! server's header edits are applied and its echo shows every request field arrived; the other
//! actions, an answer without action and a server that does not answer in time.

mod support;

use std::time::Duration;

use baton_filter::clamd::ClamdConfig;
use baton_filter::grpc::GrpcConfig;
use baton_filter::{FailureMode, Filter, FilterError, ReportResult, Verdict, VerdictKind, run};
use support::{PyFilter, added, closed_address, message, removed, reply_line, request, settings};

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_filter_in_python() {
    let server = PyFilter::start().await;
    let config = GrpcConfig {
        endpoint: server.endpoint.clone(),
    };
    let filter = Filter::grpc(
        &settings("policy", TIMEOUT, 8, FailureMode::Closed),
        &config,
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // Accepted with the server's header edits; its echo shows the request's fields.
    let clean = request(message("hello", "Nothing special here."));
    let size = clean.message.len();
    let decision = run(std::slice::from_ref(&filter), &clean).await;
    let v = &decision.verdict;
    assert!(v.is_accept(), "{decision:?}");
    assert_eq!(
        added(v, "X-Filter-Checked").map(str::to_owned),
        Some(format!(
            "sender=app@example.com rcpts=b@example.org,c@example.org ip=192.0.2.10 \
             helo=app.cluster.local user=app-user domain=mail/example-com qid=QTEST0001 size={size}"
        ))
    );
    assert_eq!(removed(v), ["X-Internal-Route"]);

    // The marker: rejected with the server's text, cleaned to one line.
    let marked = request(message("hello", "BATON-TEST-REJECT please"));
    let decision = run(std::slice::from_ref(&filter), &marked).await;
    assert_eq!(
        reply_line(&decision).as_deref(),
        Some("550 5.7.1 Message refused by policy (marker found)"),
        "{decision:?}"
    );
    assert!(
        matches!(&decision.reports[0].result, ReportResult::Answered { verdict: VerdictKind::Reject, detail } if detail.contains("marker BATON-TEST-REJECT")),
        "{decision:?}"
    );

    // Temporary failure and quarantine.
    let decision = run(
        std::slice::from_ref(&filter),
        &request(message("t", "BATON-TEST-TEMPFAIL")),
    )
    .await;
    assert_eq!(
        reply_line(&decision).as_deref(),
        Some("451 4.7.1 Policy check pending")
    );
    let decision = run(
        std::slice::from_ref(&filter),
        &request(message("q", "BATON-TEST-QUARANTINE")),
    )
    .await;
    assert_eq!(
        decision.verdict,
        Verdict::Quarantine {
            reason: "held for review".into()
        }
    );

    // No action in the answer: a failure of the filter (closed: 451).
    let decision = run(
        std::slice::from_ref(&filter),
        &request(message("u", "BATON-TEST-UNSPECIFIED")),
    )
    .await;
    assert!(
        matches!(
            &decision.reports[0].result,
            ReportResult::Failed {
                error: FilterError::Protocol(_),
                ..
            }
        ),
        "{decision:?}"
    );
    assert_eq!(decision.verdict.kind(), VerdictKind::TempFail);

    // A server that does not answer within the filter's timeout: fail open accepts.
    let impatient = Filter::grpc(
        &settings("policy-open", Duration::from_secs(2), 8, FailureMode::Open),
        &config,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let decision = run(
        std::slice::from_ref(&impatient),
        &request(message("s", "BATON-TEST-SLOW")),
    )
    .await;
    assert_eq!(decision.verdict, Verdict::accept(), "{decision:?}");
    assert!(
        matches!(
            &decision.reports[0].result,
            ReportResult::Failed {
                error: FilterError::Timeout(_),
                mode: FailureMode::Open
            }
        ),
        "{decision:?}"
    );

    // In a list: an unreachable clamd that fails open, then this filter: accepted with the
    // filter's edits, the clamd failure reported to be counted.
    let clamd_open = Filter::clamd(
        &settings("clamav", TIMEOUT, 4, FailureMode::Open),
        ClamdConfig {
            address: closed_address().to_string(),
            quarantine: false,
        },
    );
    let decision = run(&[clamd_open.clone(), filter.clone()], &clean).await;
    assert!(
        added(&decision.verdict, "X-Filter-Checked").is_some(),
        "{decision:?}"
    );
    assert_eq!(decision.failed_open().count(), 1);
    assert_eq!(decision.reports.len(), 2);
    // The first refusal ends the list: the filter after it is not called.
    let decision = run(&[filter.clone(), clamd_open], &marked).await;
    assert_eq!(decision.verdict.kind(), VerdictKind::Reject);
    assert_eq!(decision.reports.len(), 1);
}
