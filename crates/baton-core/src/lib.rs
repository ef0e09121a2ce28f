//! baton-core: Baton's pure domain logic, with no I/O, no async runtime and no clock reads
//! (every function that needs the time takes it as an argument, in Unix milliseconds or as a
//! [`time::OffsetDateTime`]).
//!
//! It owns:
//! - [`policy`]: who may relay what — AUTH verification, sender authorisation against the
//!   compiled [`baton_proto::v1::RelayConfig`], From: alignment — with typed [`refusal`]s;
//! - [`headers`]: trace (`Received:`), `Date:` and `Message-ID:` handling, header splitting;
//! - [`authors`]: every `From:`/`Sender:` mailbox, strictly (one `From:`, plain addresses);
//! - [`retry`]: the retry schedule (tiers, maximum age) as a pure function;
//! - [`outcome`]: classification of remote replies into per-recipient outcomes, RFC 3461
//!   NOTIFY decisions;
//! - [`dsn`]: RFC 3464 delivery status notifications;
//! - [`routing`]: weighted picking, MX ordering, upstream health, destination suspension and
//!   congestion (wait for a busy destination or defer);
//! - [`ids`]: queue ids and deterministic follow-up message ids;
//! - [`ratelimit`]: token buckets for inbound rate limits.

pub mod authors;
pub mod dsn;
pub mod error;
pub mod headers;
pub mod ids;
pub mod outcome;
pub mod policy;
pub mod ratelimit;
pub mod refusal;
pub mod retry;
pub mod routing;

pub use error::CoreError;
pub use policy::{PolicyIndex, SenderGrant};
pub use refusal::Refusal;
