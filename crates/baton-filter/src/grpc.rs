//! The generic filter: a `baton.v1.Filter` gRPC service (`proto/baton/v1/filter.proto`) a
//! team runs itself. One `Check` per message with the envelope, the SMTP context and the
//! message; [`response_verdict`] (pure) maps its answer to a [`Verdict`] — the text cleaned for
//! the client, header edits validated, `FILTER_ACTION_UNSPECIFIED` (or an unknown action) a
//! filter failure.
//!
//! Plaintext HTTP/2 (`http://host:port`); the channel connects lazily and reconnects by itself.

use std::time::Duration;

use baton_proto::v1::filter_client::FilterClient;
use baton_proto::v1::{FilterAction, FilterRequest, FilterResponse};
use tonic::transport::{Channel, Endpoint};

use crate::verdict::{HeaderEdits, Verdict};
use crate::{FilterError, ScanRequest};

/// Longest `reason` kept for logs and the quarantine record.
const MAX_REASON: usize = 512;

/// Where the filter service listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcConfig {
    /// `http://host:port` of the service.
    pub endpoint: String,
}

/// A client of one filter service.
#[derive(Clone, Debug)]
pub struct GrpcClient {
    client: FilterClient<Channel>,
}

impl GrpcClient {
    /// A lazily connecting client for `config`; `connect_timeout` bounds connecting. Must be
    /// called inside a tokio runtime.
    pub fn new(config: &GrpcConfig, connect_timeout: Duration) -> Result<Self, FilterError> {
        if !config.endpoint.starts_with("http://") {
            return Err(FilterError::Config(format!(
                "filter endpoint {:?}: not an http:// URL",
                config.endpoint
            )));
        }
        let endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| {
                FilterError::Config(format!("filter endpoint {:?}: {e}", config.endpoint))
            })?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true);
        let client = FilterClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(1024 * 1024)
            .max_encoding_message_size(usize::MAX);
        Ok(GrpcClient { client })
    }

    /// The request for `request`.
    pub fn request(request: &ScanRequest) -> FilterRequest {
        FilterRequest {
            sender: request.sender.clone(),
            recipients: request.recipients.clone(),
            client_address: request
                .client_ip
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            helo: request.helo.clone().unwrap_or_default(),
            authenticated_user: request.user.clone().unwrap_or_default(),
            relay_domain: request.relay_domain.clone(),
            queue_id: request.queue_id.clone(),
            message: request.message.clone(),
        }
    }

    /// Calls `Check` (unbounded: the caller's [`crate::Gate`] bounds it): `(verdict, detail)`.
    pub async fn check(&self, request: &ScanRequest) -> Result<(Verdict, String), FilterError> {
        let mut client = self.client.clone();
        let response = client.check(GrpcClient::request(request)).await?;
        response_verdict(response.get_ref())
    }
}

/// The verdict for a filter service's answer, and the detail for logs (action and reason).
pub fn response_verdict(response: &FilterResponse) -> Result<(Verdict, String), FilterError> {
    let reason: String = response
        .reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect();
    let action = FilterAction::try_from(response.action)
        .map_err(|_| FilterError::Protocol(format!("unknown filter action {}", response.action)))?;
    let verdict = match action {
        FilterAction::Unspecified => {
            return Err(FilterError::Protocol(
                "filter answered FILTER_ACTION_UNSPECIFIED".into(),
            ));
        }
        FilterAction::Accept => {
            let mut edits = HeaderEdits::default();
            for name in &response.remove_headers {
                edits.push_remove(name);
            }
            for header in &response.add_headers {
                edits.push_add(&header.name, &header.value);
            }
            Verdict::accept_with(edits)
        }
        FilterAction::Reject => Verdict::reject(&response.text),
        FilterAction::Tempfail => Verdict::tempfail(&response.text),
        FilterAction::Quarantine => Verdict::Quarantine {
            reason: if reason.trim().is_empty() {
                "grpc filter".into()
            } else {
                reason.clone()
            },
        },
    };
    Ok((
        verdict,
        format!("action={} reason={reason}", action.as_str_name()),
    ))
}

#[cfg(test)]
mod tests {
    use baton_proto::v1::FilterHeader;

    use super::*;
    use crate::VerdictKind;

    fn answer(action: FilterAction) -> FilterResponse {
        FilterResponse {
            action: action as i32,
            add_headers: vec![
                FilterHeader {
                    name: "X-Checked".into(),
                    value: "yes\r\n\tfolded".into(),
                },
                FilterHeader {
                    name: "bad name".into(),
                    value: "x".into(),
                },
            ],
            remove_headers: vec!["X-Internal".into(), "".into()],
            text: "Policy\r\nviolation".into(),
            reason: "matched rule 7\n".into(),
        }
    }

    #[test]
    fn maps_each_action() {
        let ok = |a| response_verdict(&answer(a)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ok(FilterAction::Accept).0,
            Verdict::Accept {
                add_headers: vec![("X-Checked".into(), "yes folded".into())],
                remove_headers: vec!["X-Internal".into()],
            }
        );
        assert_eq!(
            ok(FilterAction::Reject).0,
            Verdict::reject("Policy violation")
        );
        assert_eq!(
            ok(FilterAction::Tempfail).0,
            Verdict::tempfail("Policy violation")
        );
        let (q, detail) = ok(FilterAction::Quarantine);
        assert_eq!(q.kind(), VerdictKind::Quarantine);
        assert_eq!(
            detail,
            "action=FILTER_ACTION_QUARANTINE reason=matched rule 7 "
        );
        assert!(matches!(
            response_verdict(&answer(FilterAction::Unspecified)),
            Err(FilterError::Protocol(_))
        ));
        let mut unknown = answer(FilterAction::Accept);
        unknown.action = 99;
        assert!(matches!(
            response_verdict(&unknown),
            Err(FilterError::Protocol(_))
        ));
        let mut silent = answer(FilterAction::Reject);
        silent.text.clear();
        assert_eq!(
            response_verdict(&silent).ok().map(|v| v.0),
            Some(Verdict::reject(""))
        );
    }

    #[tokio::test]
    async fn only_http_endpoints() {
        let config = |e: &str| GrpcConfig { endpoint: e.into() };
        assert!(GrpcClient::new(&config("http://127.0.0.1:50051"), Duration::from_secs(1)).is_ok());
        for bad in ["https://f:1", "f:1", "http://bad host"] {
            assert!(
                matches!(
                    GrpcClient::new(&config(bad), Duration::from_secs(1)),
                    Err(FilterError::Config(_))
                ),
                "{bad}"
            );
        }
    }
}
