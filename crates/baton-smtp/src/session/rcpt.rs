//! RCPT TO (RFC 5321 4.1.1.3) with DSN NOTIFY / ORCPT.

use super::{Action, Admission, Mode, Pending, Policy, Recipient, SenderContext, Session};
use crate::address::ForwardPath;
use crate::catalogue;
use crate::params::RcptParams;

impl Session {
    /// RCPT TO: sequence, recipient limit, SMTPUTF8 and the recipient policy.
    pub(super) fn handle_rcpt(
        &mut self,
        forward_path: ForwardPath,
        params: RcptParams,
        policy: &dyn Policy,
    ) {
        let Some(txn) = &self.txn else {
            return self.reject("bad_sequence", catalogue::need_mail());
        };
        if txn.recipients.len() >= self.config.max_recipients {
            // Not an error: RFC 5321 4.5.3.1.10 expects clients to retry the rest later.
            self.stats.reject("too_many_recipients");
            return self.send(catalogue::too_many_recipients());
        }
        if forward_path.address().is_some_and(|a| a.is_utf8()) && !txn.params.smtputf8 {
            return self.reject("smtputf8_required", catalogue::smtputf8_required());
        }
        let verdict = {
            let ctx = SenderContext {
                peer: &self.peer,
                listener: self.config.listener,
                tls: self.peer.tls,
                authenticated: self.authenticated.as_deref(),
                auth_scope: self.auth_scope.as_deref(),
                helo: self.helo.as_deref().unwrap_or(""),
                reverse_path: &txn.reverse_path,
                params: &txn.params,
            };
            policy.check_recipient(&ctx, &txn.grant, &forward_path)
        };
        match verdict {
            Ok(()) if self.config.admission && self.txn.as_ref().is_some_and(|t| t.grant.admit) => {
                let Some(txn) = &self.txn else { return };
                let admission = Admission::Rcpt {
                    grant: txn.grant.clone(),
                    recipient: forward_path.clone(),
                    authenticated: self.authenticated.clone(),
                    client: self.peer.addr,
                };
                self.pending.push_back(Action::Admit(admission));
                self.mode = Mode::WaitAdmit(Pending::Rcpt(Recipient {
                    path: forward_path,
                    params,
                }));
            }
            Ok(()) => {
                if let Some(txn) = self.txn.as_mut() {
                    txn.recipients.push(Recipient {
                        path: forward_path,
                        params,
                    });
                }
                self.send(catalogue::recipient_ok());
            }
            Err(reply) => self.reject("recipient_policy", reply),
        }
    }
}
