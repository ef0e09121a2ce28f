//! `baton-delivery` owns the delivery worker: pulling from a SendingPool's lanes (fresh mail
//! and retry tiers), routing (MX or smarthosts), the outbound connection cache and limits
//! (a message waiting for a busy destination frees its place in the fetch window; one that
//! would wait longer than the first retry delay is deferred),
//! per-recipient outcomes, retries, expiry and DSNs. Workers are identical and stateless: any
//! number may join or die; a message leaves the queue only after its follow-ups are durable.
//!
//! The map: [`worker`] runs the lanes; `process` takes one message through its destination
//! groups (`group`: admit, resolve, attempt, record) to its follow-ups; [`plan`] decides the
//! pool's settings once per snapshot; [`route`] and [`resolve`] find targets (DNS behind the
//! [`resolve::Resolve`] seam); `deliver` runs the SMTP transaction (connecting behind the
//! [`Connector`] seam) and keeps connections; `slots` limits connections per destination
//! per worker; `shaping` (with `leases`) applies the limits shared by every worker of the pool
//! per destination site (connections, messages per minute, throttling back-off, warm-up);
//! `bounces` and `notice` own suppression, VERP and DSNs; `ctx` is the shared context and
//! [`error`] the errors. `docs/architecture.md` shows where the worker sits.

mod bounces;
mod ctx;
mod deliver;
pub mod error;
mod group;
mod held;
mod leases;
mod notice;
pub mod plan;
mod process;
pub mod resolve;
pub mod route;
mod shaping;
mod slots;
pub mod worker;

pub(crate) use baton_core::clock::now_ms;
pub(crate) use ctx::{Ctx, WindowPlace};
pub use deliver::{Connections, Connector, SmtpConnector, SmtpSession};
pub use error::DeliveryError;
pub use plan::{PlanError, PoolPlan};
pub use worker::{Queue, WorkerConfig, run};
