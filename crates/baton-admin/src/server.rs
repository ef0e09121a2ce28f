//! Serving the operations API: the authenticated `baton.v1.Admin` service, the standard gRPC
//! health service (`grpc.health.v1.Health`, SERVING while the NATS connection is up) and
//! server reflection (v1 and v1alpha), on one listener, with TLS when a certificate is given.
//!
//! Health and reflection answer without a token: they reveal the schema and liveness, never
//! mail. Every `Admin` call must carry `authorization: Bearer <token>`; the service checks it
//! with its [`crate::auth::Authenticator`].

use std::path::PathBuf;
use std::time::Duration;

use baton_proto::v1::admin_server::AdminServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Interceptor;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};

use crate::service::AdminService;

/// How often the health service follows the NATS connection.
const HEALTH_EVERY: Duration = Duration::from_secs(2);
/// How often held mail that no hold covers any more is released
/// ([`AdminService::release_unheld`]).
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Why the API could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS certificate or key could not be read.
    #[error("admin TLS {path}: {source}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("admin API: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection descriptors did not load.
    #[error("admin API reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// TLS files of the listener.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The bearer token of a call, taken from its metadata by [`RequireBearer`].
#[derive(Clone)]
pub struct Bearer(pub String);

/// Refuses every Admin call without `authorization: Bearer <token>` and hands the token to
/// the service, which authenticates it ([`crate::auth::Authenticator`]).
#[derive(Clone, Copy, Default)]
pub struct RequireBearer;

impl Interceptor for RequireBearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                tracing::warn!("operations API: call without a bearer token refused");
                Status::unauthenticated("send `authorization: Bearer <token>`")
            })?;
        req.extensions_mut().insert(Bearer(token));
        Ok(req)
    }
}

/// Serve the API on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    service: AdminService,
    tls: Option<TlsFiles>,
    client: async_nats::Client,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let follow = shutdown.clone();
    tokio::spawn(async move {
        loop {
            if baton_queue::is_connected(&client) {
                reporter.set_serving::<AdminServer<AdminService>>().await;
            } else {
                reporter
                    .set_not_serving::<AdminServer<AdminService>>()
                    .await;
            }
            tokio::select! {
                _ = follow.cancelled() => return,
                _ = tokio::time::sleep(HEALTH_EVERY) => {}
            }
        }
    });
    let sweeper = service.clone();
    let sweeping = shutdown.clone();
    tokio::spawn(async move {
        let system = crate::auth::Caller {
            name: "held-sweeper".into(),
            permission: crate::auth::Permission::Admin,
            namespaces: Vec::new(),
        };
        loop {
            tokio::select! {
                _ = sweeping.cancelled() => return,
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
            }
            if let Err(e) = sweeper.release_unheld(&system).await {
                tracing::debug!(error = %e, "held-mail sweep failed; trying again");
            }
        }
    });
    // Reflection lists what this listener serves, not every service in baton-proto's
    // descriptors (`baton.v1.Filter` is served by filter services, not here).
    const SERVED: [&str; 2] = ["baton.v1.Admin", "grpc.health.v1.Health"];
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(baton_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(SERVED[0])
        .with_service_name(SERVED[1])
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(baton_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(SERVED[0])
        .with_service_name(SERVED[1])
        .build_v1alpha()?;
    let mut builder = Server::builder();
    if let Some(files) = tls {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| ServeError::Tls {
                path: path.clone(),
                source,
            })
        };
        let identity = Identity::from_pem(read(&files.cert)?, read(&files.key)?);
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    builder
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(AdminServer::with_interceptor(service, RequireBearer))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.cancelled(),
        )
        .await?;
    Ok(())
}
