//! `baton-admin` owns the operations API (`proto/baton/v1/admin.proto`, served with tonic):
//! - [`auth`]: bearer tokens from a token file (digests only), viewer/admin permissions and
//!   namespace scopes;
//! - [`view`]: pure logic — how a stored message is shown, filters, the `qshape` summary;
//! - [`service`]: the `baton.v1.Admin` implementation over `baton_queue::Inspector`;
//! - [`server`]: the listener with authentication, gRPC health and server reflection;
//! - [`client`]: the connection `baton queue` uses.
//!
//! The API is served by `baton admin` and `baton dev`; it connects to NATS as the admin role
//! (`baton_queue::permissions`).

pub mod auth;
pub mod client;
pub mod server;
pub mod service;
pub mod view;

pub use auth::{AuthError, Authenticator, Caller, Permission, TokenFile};
pub use server::{ServeError, TlsFiles, serve};
pub use service::AdminService;
