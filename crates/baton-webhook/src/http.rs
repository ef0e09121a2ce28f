//! One sink's HTTPS client: certificates verified against the sink's CA bundle or the system
//! roots, connections kept alive and reused, each POST bounded by the sink's timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use crate::WebhookError;
use crate::policy::{Answer, SinkNetworks, classify};

/// The system resolver, keeping only the addresses a sink may reach.
#[derive(Clone)]
struct CheckedResolver {
    inner: GaiResolver,
    networks: Arc<SinkNetworks>,
}

type ResolveFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<
                    std::vec::IntoIter<std::net::SocketAddr>,
                    Box<dyn std::error::Error + Send + Sync>,
                >,
            > + Send,
    >,
>;

impl tower::Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = ResolveFuture;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx).map_err(Into::into)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().to_owned();
        let resolving = tower::Service::call(&mut self.inner, name);
        let networks = self.networks.clone();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = resolving
                .await?
                .filter(|a| networks.allows(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves to no address a sink may reach (denied networks)"
                )
                .into());
            }
            Ok(addrs.into_iter())
        })
    }
}

/// Content type of a CloudEvent in structured mode.
pub const CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";
/// Most bytes of a response body read (and thrown away) so the connection can be reused.
const MAX_RESPONSE: usize = 64 * 1024;

/// Posts to one endpoint.
#[derive(Clone)]
pub struct Poster {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector<CheckedResolver>>, Full<Bytes>>,
    networks: Arc<SinkNetworks>,
    uri: http::Uri,
    timeout: Duration,
    user_agent: String,
}

impl std::fmt::Debug for Poster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a token in its path or query: show the host only.
        f.debug_struct("Poster")
            .field("host", &self.uri.host())
            .finish()
    }
}

/// The roots a sink's endpoint must chain to.
fn roots(ca_bundle_pem: &str) -> Result<rustls::RootCertStore, WebhookError> {
    let mut roots = rustls::RootCertStore::empty();
    if ca_bundle_pem.is_empty() {
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
    } else {
        for cert in CertificateDer::pem_slice_iter(ca_bundle_pem.as_bytes()) {
            let cert = cert.map_err(|e| WebhookError::Tls(format!("CA bundle: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| WebhookError::Tls(format!("CA bundle: {e}")))?;
        }
    }
    if roots.is_empty() {
        return Err(WebhookError::Tls("no trusted root certificate".into()));
    }
    Ok(roots)
}

impl Poster {
    /// A client for `url` (`https://` only) that connects only to addresses `networks`
    /// allows.
    pub fn new(
        url: &str,
        ca_bundle_pem: &str,
        timeout: Duration,
        user_agent: &str,
        networks: Arc<SinkNetworks>,
    ) -> Result<Self, WebhookError> {
        let uri: http::Uri = url.parse().map_err(|e| WebhookError::Url(format!("{e}")))?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            return Err(WebhookError::Url("not an https:// URL".into()));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| WebhookError::Tls(e.to_string()))?
            .with_root_certificates(roots(ca_bundle_pem)?)
            .with_no_client_auth();
        let mut http = HttpConnector::new_with_resolver(CheckedResolver {
            inner: GaiResolver::new(),
            networks: networks.clone(),
        });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .build(https);
        Ok(Poster {
            client,
            networks,
            uri,
            timeout,
            user_agent: user_agent.to_owned(),
        })
    }

    /// POST `body` with `headers`; the endpoint's answer, or the transport failure as text.
    pub async fn post(&self, headers: &[(&str, String)], body: Bytes) -> Answer {
        // An address in the URL is not resolved: check it here.
        let host = self.uri.host().unwrap_or_default();
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>()
            && !self.networks.allows(ip)
        {
            return Answer::Failed(format!("{ip} is in a network sinks may not reach"));
        }
        let mut request = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(http::header::USER_AGENT, &self.user_agent);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = match request.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return Answer::Failed(format!("request: {e}")),
        };
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                // The source chain carries the cause (refused, TLS, DNS); never the URL.
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text = format!("{text}: {s}");
                    source = s.source();
                }
                text
            })?;
            let status = response.status();
            // Read a bounded part of the body so the connection can be reused.
            let mut body = response.into_body();
            let mut read = 0usize;
            while read < MAX_RESPONSE {
                match body.frame().await {
                    Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
                    _ => break,
                }
            }
            Ok::<_, String>(status)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(status)) => classify(
                status.as_u16(),
                status.canonical_reason().unwrap_or_default(),
            ),
            Ok(Err(e)) => Answer::Failed(e),
            Err(_) => Answer::Failed(format!("no answer within {:?}", self.timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poster(url: &str, networks: SinkNetworks) -> Poster {
        Poster::new(url, "", Duration::from_secs(2), "test", Arc::new(networks))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn denied_networks_are_never_connected_to() {
        // Names resolve first, then are filtered; addresses are checked as written.
        for url in [
            "https://localhost:9/",
            "https://127.0.0.1:9/",
            "https://[::1]:9/",
            "https://169.254.169.254/latest/meta-data",
        ] {
            match poster(url, SinkNetworks::new(vec![], vec![]))
                .post(&[], Bytes::new())
                .await
            {
                Answer::Failed(e) => assert!(
                    e.contains("denied networks") || e.contains("may not reach"),
                    "{url}: {e}"
                ),
                Answer::Accepted => panic!("{url} accepted"),
            }
        }
    }

    #[test]
    fn only_https_urls_make_a_client() {
        let n = || Arc::new(SinkNetworks::default());
        let t = Duration::from_secs(1);
        assert!(Poster::new("http://h.example/", "", t, "x", n()).is_err());
        assert!(Poster::new("https:///nohost", "", t, "x", n()).is_err());
        assert!(Poster::new("https://h.example/", "not pem", t, "x", n()).is_err());
    }
}
