//! EHLO / HELO (RFC 5321 4.1.1.1) and the extension list.

use super::{ListenerKind, Session};
use crate::reply::Reply;

impl Session {
    /// EHLO (`esmtp`) or HELO: resets the transaction and records the client name.
    pub(super) fn handle_ehlo(&mut self, domain: String, esmtp: bool) {
        self.reset_transaction();
        self.helo = Some(domain);
        let host = self.config.hostname.clone();
        if !esmtp {
            self.send(Reply::new(250, "", host));
            return;
        }
        let reply = Reply::multiline(250, "", self.extensions(host));
        self.send(reply);
    }

    /// The EHLO reply lines: greeting first, then the extensions.
    fn extensions(&self, host: String) -> Vec<String> {
        let mut lines = vec![
            host,
            "PIPELINING".to_string(),
            format!("SIZE {}", self.config.max_message_size),
            "8BITMIME".to_string(),
            "SMTPUTF8".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "CHUNKING".to_string(),
            "DSN".to_string(),
        ];
        if self.starttls_offered() {
            lines.push("STARTTLS".to_string());
        }
        if self.peer.tls {
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        lines
    }

    /// STARTTLS is possible: a certificate exists, TLS is not active, not implicit TLS.
    pub(super) fn starttls_offered(&self) -> bool {
        self.config.tls_available && !self.peer.tls && self.config.listener != ListenerKind::Smtps
    }
}
