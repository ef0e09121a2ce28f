//! baton-smtp: the sans-IO SMTP *server* protocol library of Baton.
//!
//! It owns everything about the SMTP conversation that does not need I/O: command and
//! reply syntax ([`command`], [`reply`]), mailbox and parameter parsing ([`address`],
//! [`params`]), DATA/BDAT framing with SMTP-smuggling protection ([`data`]) and the server
//! session state machine ([`session`]) that turns received bytes into [`session::Action`]s.
//! Policy decisions are delegated to a [`session::Policy`] implemented by the ingress; no
//! sockets, no async runtime, no clock.

pub mod address;
pub mod catalogue;
pub mod command;
pub mod data;
pub mod params;
pub mod reply;
pub mod session;

pub use address::{Address, AddressError, ForwardPath, ReversePath};
pub use command::{Command, parse_command};
pub use data::{BdatReceiver, BodyOutcome, DataReceiver};
pub use params::{BodyType, DsnRet, MailParams, Notify, ParamError, RcptParams};
pub use reply::{EnhancedStatus, Reply, ReplyError, ReplyParser};
pub use session::{
    Action, Admission, Grant, ListenerKind, PeerInfo, Policy, Recipient, SenderContext, Session,
    SessionConfig, SessionStats, Transaction,
};
