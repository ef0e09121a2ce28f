//! baton-core: Baton's pure domain logic, with no I/O, no async runtime and no clock reads
//! (every function that needs the time takes it as an argument, in Unix milliseconds or as a
//! [`time::OffsetDateTime`]) — except [`clock`], the one helper the async shells read the wall
//! clock through.
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
//! - [`bounce`]: bounce classes of failed and deferred replies, from data-driven rules;
//! - [`routing`]: weighted picking, MX ordering, upstream health, destination suspension and
//!   congestion (wait for a busy destination or defer);
//! - [`destination`]: which addresses direct delivery may connect to (no loopback, private,
//!   link-local... unless a pool allows a network), address-literal recipients;
//! - [`event`]: delivery events (CloudEvents JSON, subjects per tenant and message);
//! - [`hold`]: operator holds (pool, RelayDomain, recipient domain, message) and which
//!   recipients they cover;
//! - [`ids`]: queue ids and deterministic follow-up message ids;
//! - [`names`]: what counts as a fully qualified host name (EHLO, `Reporting-MTA`);
//! - [`ratelimit`]: token buckets for inbound rate limits;
//! - [`suppression`]: suppression-list entries, keys and policy decisions;
//! - [`verp`]: signed VERP return paths;
//! - [`report`]: parsing delivery reports (RFC 3464) and complaints (RFC 5965) that come back.

pub mod authors;
pub mod bounce;
pub mod clock;
pub mod destination;
pub mod dsn;
pub mod error;
pub mod event;
pub mod headers;
pub mod hold;
pub mod ids;
pub mod names;
pub mod outcome;
pub mod policy;
pub mod ratelimit;
pub mod refusal;
pub mod report;
pub mod retry;
pub mod routing;
pub mod suppression;
pub mod verp;

pub use error::CoreError;
pub use policy::{Auth, PolicyIndex, SenderGrant};
pub use refusal::Refusal;
