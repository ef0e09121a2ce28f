//! A configured filter — one of rspamd, clamd or a gRPC filter service, with its name, bounds
//! ([`crate::Gate`]) and [`FailureMode`] — and [`run`], which runs an ordered list of them on
//! one message.
//!
//! The filters run one after the other, in order; the first that does not accept decides and
//! the rest are not called (they would only spend scanner capacity). Each filter sees the
//! message as received, not the header edits of the filters before it. A failed filter counts
//! as its failure mode says; a busy one as `451 4.7.1` whatever its mode. Every filter called
//! (or found busy) gets a [`Report`] for the ingress's logs and metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clamd::{ClamdClient, ClamdConfig};
use crate::gate::{Gate, Outcome};
use crate::grpc::{GrpcClient, GrpcConfig};
use crate::rspamd::{RspamdClient, RspamdConfig};
use crate::verdict::{self, FailureMode, HeaderEdits, Verdict, VerdictKind};
use crate::{FilterError, ScanRequest};

/// What every filter is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The filter's name (logs, metrics labels).
    pub name: String,
    /// Bound of one call (connecting included).
    pub timeout: Duration,
    /// Calls in flight at most (at least 1); one more is answered busy.
    pub max_concurrent: usize,
    /// What a failure means for the message.
    pub failure_mode: FailureMode,
}

/// Which kind of filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FilterKind {
    /// rspamd (`/checkv2`).
    Rspamd,
    /// ClamAV `clamd` (`zINSTREAM`).
    Clamd,
    /// A `baton.v1.Filter` service.
    Grpc,
}

impl FilterKind {
    /// `rspamd`, `clamd`, `grpc`.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterKind::Rspamd => "rspamd",
            FilterKind::Clamd => "clamd",
            FilterKind::Grpc => "grpc",
        }
    }
}

#[derive(Clone, Debug)]
enum Client {
    Rspamd(Box<RspamdClient>),
    Clamd(ClamdClient),
    Grpc(GrpcClient),
}

/// One configured filter. Cloning shares its connections and concurrency bound.
#[derive(Clone, Debug)]
pub struct Filter {
    name: Arc<str>,
    failure_mode: FailureMode,
    gate: Gate,
    client: Client,
}

impl Filter {
    fn with(settings: &Settings, client: Client) -> Filter {
        Filter {
            name: Arc::from(settings.name.as_str()),
            failure_mode: settings.failure_mode,
            gate: Gate::new(settings.max_concurrent, settings.timeout),
            client,
        }
    }

    /// An rspamd filter.
    pub fn rspamd(settings: &Settings, config: &RspamdConfig) -> Result<Filter, FilterError> {
        let client = RspamdClient::new(config, settings.timeout)?;
        Ok(Filter::with(settings, Client::Rspamd(Box::new(client))))
    }

    /// A clamd filter.
    pub fn clamd(settings: &Settings, config: ClamdConfig) -> Filter {
        Filter::with(settings, Client::Clamd(ClamdClient::new(config)))
    }

    /// A gRPC filter service (inside a tokio runtime: the channel is created lazily).
    pub fn grpc(settings: &Settings, config: &GrpcConfig) -> Result<Filter, FilterError> {
        let client = GrpcClient::new(config, settings.timeout)?;
        Ok(Filter::with(settings, Client::Grpc(client)))
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its kind.
    pub fn kind(&self) -> FilterKind {
        match self.client {
            Client::Rspamd(_) => FilterKind::Rspamd,
            Client::Clamd(_) => FilterKind::Clamd,
            Client::Grpc(_) => FilterKind::Grpc,
        }
    }

    /// Its failure mode.
    pub fn failure_mode(&self) -> FailureMode {
        self.failure_mode
    }

    /// Its bounds.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// One call, bounded: the filter's answer, [`Outcome::Busy`] or [`Outcome::Failed`].
    pub async fn check(&self, request: &ScanRequest) -> Outcome {
        match &self.client {
            Client::Rspamd(c) => self.gate.run(|| c.check(request)).await,
            Client::Clamd(c) => self.gate.run(|| c.check(request)).await,
            Client::Grpc(c) => self.gate.run(|| c.check(request)).await,
        }
    }

    /// One call with its failure mode applied: the verdict and the report.
    pub async fn judge(&self, request: &ScanRequest) -> (Verdict, Report) {
        let started = Instant::now();
        let outcome = self.check(request).await;
        let elapsed = started.elapsed();
        let (verdict, result) = match outcome {
            Outcome::Answered { verdict, detail } => {
                let kind = verdict.kind();
                (
                    verdict,
                    ReportResult::Answered {
                        verdict: kind,
                        detail,
                    },
                )
            }
            Outcome::Busy => (verdict::busy_verdict(), ReportResult::Busy),
            Outcome::Failed(error) => (
                self.failure_mode.verdict(),
                ReportResult::Failed {
                    error,
                    mode: self.failure_mode,
                },
            ),
        };
        let report = Report {
            filter: self.name.clone(),
            kind: self.kind(),
            result,
            verdict: verdict.kind(),
            elapsed,
        };
        (verdict, report)
    }
}

/// What one filter did with one message.
#[derive(Debug)]
pub struct Report {
    /// The filter's name.
    pub filter: Arc<str>,
    /// Its kind.
    pub kind: FilterKind,
    /// What happened.
    pub result: ReportResult,
    /// The verdict it contributed (after its failure mode; busy is a temporary failure).
    pub verdict: VerdictKind,
    /// How long the call took (zero-ish when busy).
    pub elapsed: Duration,
}

impl Report {
    /// What happened, as a metrics label: the verdict's kind when the filter answered
    /// (`accept`, `reject`, `tempfail`, `quarantine`), else `busy` or `failed`.
    pub fn label(&self) -> &'static str {
        match &self.result {
            ReportResult::Answered { verdict, .. } => verdict.as_str(),
            ReportResult::Busy => "busy",
            ReportResult::Failed { .. } => "failed",
        }
    }
}

/// What happened to one filter call.
#[derive(Debug)]
pub enum ReportResult {
    /// It answered.
    Answered {
        /// Its verdict's kind.
        verdict: VerdictKind,
        /// What it said (logs only).
        detail: String,
    },
    /// Its concurrency bound was reached: `451 4.7.1`, not called.
    Busy,
    /// It failed or timed out; its failure mode gave the verdict (open: accept, counted).
    Failed {
        /// Why.
        error: FilterError,
        /// The mode applied.
        mode: FailureMode,
    },
}

/// The combined verdict of an ordered list of filters and what each did.
#[derive(Debug)]
pub struct Decision {
    /// The message's verdict (see [`crate::verdict::combine`]); [`Verdict::reply`] gives the
    /// DATA reply when the message does not go on.
    pub verdict: Verdict,
    /// One report per filter called, in order.
    pub reports: Vec<Report>,
}

impl Decision {
    /// The report of the filter that decided a non-accepting verdict, if any.
    pub fn decided_by(&self) -> Option<&Report> {
        self.reports
            .last()
            .filter(|r| r.verdict != VerdictKind::Accept)
    }

    /// Filters that failed open (accepted without scanning): count these.
    pub fn failed_open(&self) -> impl Iterator<Item = &Report> {
        self.reports.iter().filter(|r| {
            matches!(
                r.result,
                ReportResult::Failed {
                    mode: FailureMode::Open,
                    ..
                }
            )
        })
    }
}

/// Runs `filters` in order on `request` (see the module doc): the first non-accepting verdict
/// wins, accepting verdicts' header edits accumulate.
pub async fn run(filters: &[Filter], request: &ScanRequest) -> Decision {
    let mut edits = HeaderEdits::default();
    let mut reports = Vec::with_capacity(filters.len());
    for filter in filters {
        let (verdict, report) = filter.judge(request).await;
        reports.push(report);
        match verdict {
            Verdict::Accept {
                add_headers,
                remove_headers,
            } => edits.extend(HeaderEdits {
                add: add_headers,
                remove: remove_headers,
            }),
            other => {
                return Decision {
                    verdict: other,
                    reports,
                };
            }
        }
    }
    Decision {
        verdict: Verdict::accept_with(edits),
        reports,
    }
}
