//! The operations endpoint: `/metrics` (Prometheus text), `/healthz` (process alive),
//! `/readyz` (ready to take traffic: NATS connected and a config snapshot loaded) and
//! `/loglevel` (GET the current filter, PUT a new `EnvFilter` directive).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpListener;

use crate::{LogHandle, Metrics};

/// Readiness state shared between a process's tasks and its `/readyz`.
#[derive(Default)]
pub struct Health {
    not_ready: Mutex<Vec<(&'static str, String)>>,
    notes: Mutex<Vec<(&'static str, String)>>,
    started: std::sync::atomic::AtomicBool,
}

impl Health {
    /// A health state that is not ready until [`Health::set`] clears every named condition.
    pub fn new(conditions: &[&'static str]) -> Arc<Self> {
        let h = Health::default();
        h.not_ready
            .lock()
            .extend(conditions.iter().map(|c| (*c, "not yet".to_string())));
        h.started.store(true, std::sync::atomic::Ordering::Relaxed);
        Arc::new(h)
    }

    /// Mark one condition ok (`None`) or failing with a reason.
    pub fn set(&self, condition: &'static str, failing: Option<String>) {
        let mut g = self.not_ready.lock();
        g.retain(|(c, _)| *c != condition);
        if let Some(reason) = failing {
            g.push((condition, reason));
        }
    }

    /// Set (`Some`) or clear a note shown in the `/readyz` body that does not affect
    /// readiness (e.g. queue settings drift: reported, never a reason to stop taking mail).
    pub fn note(&self, key: &'static str, note: Option<String>) {
        let mut g = self.notes.lock();
        g.retain(|(k, _)| *k != key);
        if let Some(n) = note {
            g.push((key, n));
        }
    }

    /// Ready when no condition is failing.
    pub fn is_ready(&self) -> bool {
        self.not_ready.lock().is_empty()
    }

    fn report(&self) -> String {
        let mut out = {
            let g = self.not_ready.lock();
            if g.is_empty() {
                "ready\n".to_string()
            } else {
                g.iter().map(|(c, r)| format!("{c}: {r}\n")).collect()
            }
        };
        for (k, n) in self.notes.lock().iter() {
            out.push_str(&format!("warning {k}: {n}\n"));
        }
        out
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

async fn handle(
    req: Request<Incoming>,
    metrics: Metrics,
    health: Arc<Health>,
    log: Option<LogHandle>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut r = text(StatusCode::OK, metrics.render());
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n".into()),
        (&Method::GET, "/readyz") => {
            let code = if health.is_ready() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(code, health.report())
        }
        (&Method::GET, "/loglevel") => match &log {
            Some(l) => text(StatusCode::OK, format!("{}\n", l.current())),
            None => text(StatusCode::NOT_FOUND, "no log handle\n".into()),
        },
        (&Method::PUT, "/loglevel") => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::new(),
            };
            let directive = String::from_utf8_lossy(&body).trim().to_string();
            match &log {
                Some(l) => match l.set(&directive) {
                    Ok(()) => text(StatusCode::OK, format!("{directive}\n")),
                    Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                },
                None => text(StatusCode::NOT_FOUND, "no log handle\n".into()),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    Ok(resp)
}

/// Serve the operations endpoint on an already bound listener until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    health: Arc<Health>,
    log: Option<LogHandle>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (m, h, l) = (metrics.clone(), health.clone(), log.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, m.clone(), h.clone(), l.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Bind `addr` and serve in a background task; returns the bound address.
pub async fn spawn(
    addr: SocketAddr,
    metrics: Metrics,
    health: Arc<Health>,
    log: Option<LogHandle>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(serve(listener, metrics, health, log));
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::Health;

    #[test]
    fn notes_show_in_the_report_without_changing_readiness() {
        let h = Health::new(&["nats"]);
        h.note("queue", Some("BATON_QUEUE replicas is 1".into()));
        assert!(!h.is_ready());
        assert_eq!(
            h.report(),
            "nats: not yet\nwarning queue: BATON_QUEUE replicas is 1\n"
        );
        h.set("nats", None);
        assert!(h.is_ready());
        assert_eq!(
            h.report(),
            "ready\nwarning queue: BATON_QUEUE replicas is 1\n"
        );
        h.note("queue", None);
        assert_eq!(h.report(), "ready\n");
    }
}
