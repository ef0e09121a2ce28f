//! MAIL FROM (RFC 5321 4.1.1.2) with SIZE, BODY, SMTPUTF8, DSN and AUTH parameters.

use super::{Envelope, ListenerKind, Policy, SenderContext, Session};
use crate::address::ReversePath;
use crate::params::MailParams;
use crate::reply::Reply;

fn too_big() -> Reply {
    Reply::new(
        552,
        "5.3.4",
        "Error: message size exceeds fixed maximum message size",
    )
}

impl Session {
    /// MAIL FROM: sequence and limit checks, then the sender policy.
    pub(super) fn handle_mail(
        &mut self,
        reverse_path: ReversePath,
        params: MailParams,
        policy: &dyn Policy,
    ) {
        if self.helo.is_none() {
            return self.reject(
                "bad_sequence",
                Reply::new(503, "5.5.1", "Error: send HELO/EHLO first"),
            );
        }
        // Both submission ports (587 and implicit-TLS 465) require AUTH, whatever the network.
        let submission = matches!(
            self.config.listener,
            ListenerKind::Submission | ListenerKind::Smtps
        );
        if submission && self.authenticated.is_none() {
            // AUTH is only offered over TLS: before STARTTLS, say what comes first.
            let text = if self.peer.tls || !self.config.tls_available {
                "Authentication required"
            } else {
                "Must issue a STARTTLS command first"
            };
            return self.reject("auth_required", Reply::new(530, "5.7.0", text));
        }
        if self.txn.is_some() {
            return self.reject(
                "bad_sequence",
                Reply::new(503, "5.5.1", "Error: nested MAIL command"),
            );
        }
        let declared = params.size.unwrap_or(0);
        if declared > self.config.max_message_size {
            return self.reject("message_too_big", too_big());
        }
        if reverse_path.address().is_some_and(|a| a.is_utf8()) && !params.smtputf8 {
            return self.reject(
                "smtputf8_required",
                Reply::new(553, "5.6.7", "Error: non-ASCII address requires SMTPUTF8"),
            );
        }
        let verdict = {
            let ctx = SenderContext {
                peer: &self.peer,
                listener: self.config.listener,
                tls: self.peer.tls,
                authenticated: self.authenticated.as_deref(),
                helo: self.helo.as_deref().unwrap_or(""),
                reverse_path: &reverse_path,
                params: &params,
            };
            policy.check_sender(&ctx)
        };
        match verdict {
            Ok(grant) => {
                if grant.max_message_size > 0 && declared > grant.max_message_size {
                    return self.reject("message_too_big", too_big());
                }
                self.txn = Some(Envelope {
                    reverse_path,
                    params,
                    recipients: Vec::new(),
                    grant,
                    bdat: None,
                });
                self.failed = None;
                self.send(Reply::new(250, "2.1.0", "Ok"));
            }
            Err(reply) => self.reject("sender_policy", reply),
        }
    }
}
