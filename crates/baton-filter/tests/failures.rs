//! Failures of every kind of filter, without a scanner: an unreachable one (nothing listens)
//! and a silent one (a listener that accepts and never answers, so only the timeout ends the
//! call) give the failure mode's verdict — fail open accepts and is reported for counting,
//! fail closed answers `451 4.7.1` — and a filter whose concurrency bound is reached answers
//! busy (`451 4.7.1`) at once instead of queueing.

mod support;

use std::time::Duration;

use baton_filter::clamd::ClamdConfig;
use baton_filter::grpc::GrpcConfig;
use baton_filter::rspamd::{RspamdConfig, RspamdPolicy};
use baton_filter::{FailureMode, Filter, FilterError, ReportResult, Settings, Verdict, run};
use support::{Silent, closed_address, eventually, message, reply_line, request, settings};

fn filters(address: &str, settings: &Settings) -> Vec<Filter> {
    let rspamd = Filter::rspamd(
        settings,
        &RspamdConfig {
            url: format!("http://{address}"),
            settings_id: Some("outbound".into()),
            policy: RspamdPolicy::default(),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let clamd = Filter::clamd(
        settings,
        ClamdConfig {
            address: address.to_owned(),
            quarantine: false,
        },
    );
    let grpc = Filter::grpc(
        settings,
        &GrpcConfig {
            endpoint: format!("http://{address}"),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    vec![rspamd, clamd, grpc]
}

#[tokio::test]
async fn unreachable_filters_fail_open_or_closed() {
    let address = closed_address().to_string();
    let req = request(message("hi", "hello"));
    for mode in [FailureMode::Open, FailureMode::Closed] {
        for filter in filters(
            &address,
            &settings("down", Duration::from_secs(10), 2, mode),
        ) {
            let decision = run(std::slice::from_ref(&filter), &req).await;
            let kind = filter.kind().as_str();
            assert!(
                matches!(&decision.reports[0].result, ReportResult::Failed { mode: m, .. } if *m == mode),
                "{kind}: {decision:?}"
            );
            assert_eq!(decision.reports[0].label(), "failed");
            match mode {
                FailureMode::Open => {
                    assert_eq!(decision.verdict, Verdict::accept(), "{kind}");
                    assert_eq!(decision.failed_open().count(), 1, "{kind}");
                }
                FailureMode::Closed => assert_eq!(
                    reply_line(&decision).as_deref(),
                    Some("451 4.7.1 Content filter unavailable, try again later"),
                    "{kind}"
                ),
            }
        }
    }
}

#[tokio::test]
async fn silent_filters_end_at_their_timeout() {
    let silent = Silent::start().await;
    let req = request(message("hi", "hello"));
    for mode in [FailureMode::Open, FailureMode::Closed] {
        let s = settings("silent", Duration::from_millis(500), 2, mode);
        for filter in filters(&silent.address.to_string(), &s) {
            let decision = run(std::slice::from_ref(&filter), &req).await;
            let kind = filter.kind().as_str();
            assert!(
                matches!(
                    &decision.reports[0].result,
                    ReportResult::Failed { error: FilterError::Timeout(d), mode: m }
                        if *d == Duration::from_millis(500) && *m == mode
                ),
                "{kind}: {decision:?}"
            );
            let expected = match mode {
                FailureMode::Open => Verdict::accept(),
                FailureMode::Closed => FailureMode::Closed.verdict(),
            };
            assert_eq!(decision.verdict, expected, "{kind}");
        }
    }
    assert!(silent.accepted() >= 6, "every filter reached the listener");
}

#[tokio::test]
async fn a_full_filter_answers_busy_at_once() {
    let req = request(message("hi", "hello"));
    for index in 0..3 {
        let silent = Silent::start().await;
        // One call at a time, a timeout no test waits for.
        let s = settings("bounded", Duration::from_secs(3600), 1, FailureMode::Open);
        let filter = filters(&silent.address.to_string(), &s).swap_remove(index);
        let kind = filter.kind().as_str();
        let first = {
            let (filter, req) = (filter.clone(), req.clone());
            tokio::spawn(async move { run(std::slice::from_ref(&filter), &req).await })
        };
        // The first call holds the only permit once the scanner has its connection.
        assert!(
            eventually(Duration::from_secs(60), || async { silent.accepted() >= 1 }).await,
            "{kind}: first call never connected"
        );
        assert_eq!(filter.gate().in_flight(), 1, "{kind}");
        let decision = run(std::slice::from_ref(&filter), &req).await;
        assert!(
            matches!(decision.reports[0].result, ReportResult::Busy),
            "{kind}: {decision:?}"
        );
        assert_eq!(decision.reports[0].label(), "busy");
        // Busy is 451 whatever the failure mode (open here): load is no way around a filter.
        assert_eq!(
            reply_line(&decision).as_deref(),
            Some("451 4.7.1 Content filter busy, try again later"),
            "{kind}"
        );
        first.abort();
        let _ = first.await;
        assert!(
            eventually(Duration::from_secs(60), || async {
                filter.gate().in_flight() == 0
            })
            .await,
            "{kind}: the permit is returned when the call is dropped"
        );
    }
}
