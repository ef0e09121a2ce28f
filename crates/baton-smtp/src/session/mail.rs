//! MAIL FROM (RFC 5321 4.1.1.2) with SIZE, BODY, SMTPUTF8, DSN and AUTH parameters.

use super::{
    Action, Admission, Envelope, ListenerKind, Mode, Pending, Policy, SenderContext, Session,
};
use crate::address::ReversePath;
use crate::catalogue;
use crate::params::MailParams;

impl Session {
    /// MAIL FROM: sequence and limit checks, then the sender policy.
    pub(super) fn handle_mail(
        &mut self,
        reverse_path: ReversePath,
        params: MailParams,
        policy: &dyn Policy,
    ) {
        if self.helo.is_none() {
            return self.reject("bad_sequence", catalogue::need_helo());
        }
        // Both submission ports (587 and implicit-TLS 465) require AUTH, whatever the network.
        let submission = matches!(
            self.config.listener,
            ListenerKind::Submission | ListenerKind::Smtps
        );
        if submission && self.authenticated.is_none() {
            // AUTH is only offered over TLS: before STARTTLS, say what comes first.
            let starttls_first = !self.peer.tls && self.config.tls_available;
            return self.reject("auth_required", catalogue::auth_required(starttls_first));
        }
        if self.txn.is_some() {
            return self.reject("bad_sequence", catalogue::nested_mail());
        }
        let declared = params.size.unwrap_or(0);
        if declared > self.config.max_message_size {
            return self.reject("message_too_big", catalogue::message_too_big());
        }
        if reverse_path.address().is_some_and(|a| a.is_utf8()) && !params.smtputf8 {
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
                reverse_path: &reverse_path,
                params: &params,
            };
            policy.check_sender(&ctx)
        };
        match verdict {
            Ok(grant) => {
                if grant.max_message_size > 0 && declared > grant.max_message_size {
                    return self.reject("message_too_big", catalogue::message_too_big());
                }
                if self.config.admission && grant.admit {
                    let admission = Admission::Mail {
                        grant: grant.clone(),
                        reverse_path: reverse_path.clone(),
                        authenticated: self.authenticated.clone(),
                        client: self.peer.addr,
                    };
                    self.pending.push_back(Action::Admit(admission));
                    self.mode = Mode::WaitAdmit(Pending::Mail(Box::new(Envelope {
                        reverse_path,
                        params,
                        recipients: Vec::new(),
                        grant,
                        bdat: None,
                    })));
                    return;
                }
                self.txn = Some(Envelope {
                    reverse_path,
                    params,
                    recipients: Vec::new(),
                    grant,
                    bdat: None,
                });
                self.failed = None;
                self.send(catalogue::sender_ok());
            }
            Err(reply) => self.reject("sender_policy", reply),
        }
    }
}
