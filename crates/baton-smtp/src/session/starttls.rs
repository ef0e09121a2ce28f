//! STARTTLS (RFC 3207). Plaintext pipelined after the command is discarded, never executed.

use super::{Action, Mode, Session};
use crate::catalogue;

impl Session {
    /// STARTTLS: 220, then [`Action::StartTls`]; the session waits for `tls_established`.
    pub(super) fn handle_starttls(&mut self) {
        if self.peer.tls {
            return self.reject("bad_sequence", catalogue::tls_already_active());
        }
        if !self.starttls_offered() {
            return self.reject("not_implemented", catalogue::starttls_unavailable());
        }
        self.send(catalogue::ready_for_tls());
        self.pending.push_back(Action::StartTls);
        self.mode = Mode::WaitTls;
        // RFC 3207 section 5 / CVE-2011-0411: anything the client sent after STARTTLS in
        // plaintext must not be processed after the handshake.
        let leftover = self.input.len() - self.pos;
        self.stats.plaintext_after_starttls += leftover as u64;
        self.input = Vec::new();
        self.pos = 0;
        self.discarding_line = false;
    }
}
