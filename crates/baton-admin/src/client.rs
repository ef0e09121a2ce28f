//! Connecting to the operations API as a client (`baton queue`): the address, the bearer
//! token from a file, and TLS verified against a CA file when one is given.

use std::path::{Path, PathBuf};

use baton_proto::v1::admin_client::AdminClient;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

/// A connected client whose calls carry the bearer token.
pub type Client = AdminClient<InterceptedService<Channel, Bearer>>;

/// Why the client could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The token file is empty or holds something that is not a token.
    #[error("{0}: no token in the file")]
    NoToken(PathBuf),
    /// The address is not a URI.
    #[error("admin address {0:?}: {1}")]
    Address(String, String),
    /// The connection failed.
    #[error("cannot reach the operations API at {0}: {1}")]
    Connect(String, String),
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The token in `token_file` (trimmed; one word).
pub fn read_token(token_file: &Path) -> Result<String, ClientError> {
    let token = String::from_utf8_lossy(&read(token_file)?)
        .trim()
        .to_owned();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(ClientError::NoToken(token_file.to_owned()));
    }
    Ok(token)
}

/// Connect to `addr` (`host:port`, or a `http://`/`https://` URI) presenting `token`; with
/// `ca_file` the connection is TLS, verified against that CA, for the name `server_name`
/// when given (e.g. the Service's name through `kubectl port-forward`), else the address's
/// host.
pub async fn connect(
    addr: &str,
    token: &str,
    ca_file: Option<&Path>,
    server_name: Option<&str>,
) -> Result<Client, ClientError> {
    let bearer: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| ClientError::NoToken(PathBuf::from("(token)")))?;
    let scheme = if ca_file.is_some() { "https" } else { "http" };
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("{scheme}://{addr}")
    };
    let bad = |e: &dyn std::fmt::Display| ClientError::Address(addr.to_owned(), e.to_string());
    let mut endpoint = Endpoint::from_shared(uri.clone()).map_err(|e| bad(&e))?;
    if let Some(ca) = ca_file {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let Some(name) = server_name {
            tls = tls.domain_name(name);
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| bad(&e))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| ClientError::Connect(uri, source_chain(&e)))?;
    Ok(AdminClient::with_interceptor(channel, Bearer(bearer)))
}

/// An error with its sources, on one line.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
