//! DATA (RFC 5321 4.1.1.4): the 354 go-ahead and the end-of-data verdict.

use super::{Mode, Session};
use crate::data::{BodyOutcome, DataReceiver};
use crate::reply::Reply;

/// 552 for content over the cap.
pub(super) fn too_big() -> Reply {
    Reply::new(
        552,
        "5.3.4",
        "Error: message size exceeds fixed maximum message size",
    )
}

/// 550 for bare CR / LF (SMTP smuggling protection).
pub(super) fn bare_eol() -> Reply {
    Reply::new(
        550,
        "5.6.0",
        "Error: bare CR or LF in message content not allowed (SMTP smuggling protection)",
    )
}

impl Session {
    /// DATA: needs MAIL and at least one recipient, and no BDAT chunk in this transaction.
    pub(super) fn handle_data(&mut self) {
        let Some(txn) = &self.txn else {
            return self.reject(
                "bad_sequence",
                Reply::new(503, "5.5.1", "Error: need MAIL command"),
            );
        };
        if txn.bdat.is_some() {
            return self.reject(
                "bad_sequence",
                Reply::new(503, "5.5.1", "Error: DATA cannot be mixed with BDAT"),
            );
        }
        if txn.recipients.is_empty() {
            return self.reject(
                "no_recipients",
                Reply::new(554, "5.5.1", "Error: no valid recipients"),
            );
        }
        let cap = usize::try_from(self.message_cap()).unwrap_or(usize::MAX);
        self.send(Reply::new(354, "", "End data with <CR><LF>.<CR><LF>"));
        let mut rx = DataReceiver::new(cap);
        if self.failed.is_some() {
            // fail_transaction() came before DATA: scan for the end, keep nothing.
            rx.discard();
        }
        self.mode = Mode::Data(rx);
    }

    /// Feeds buffered input to the DATA decoder.
    pub(super) fn step_data(&mut self) -> bool {
        let Mode::Data(rx) = &mut self.mode else {
            return false;
        };
        if self.pos >= self.input.len() {
            return false;
        }
        let used = rx.feed(&self.input[self.pos..]);
        self.pos += used;
        if !rx.is_done() {
            return true;
        }
        if let Mode::Data(rx) = std::mem::replace(&mut self.mode, Mode::Command) {
            self.finish_body(rx.finish());
        }
        true
    }

    /// End of a DATA body or of the LAST BDAT chunk: enqueue or refuse.
    pub(super) fn finish_body(&mut self, outcome: BodyOutcome) {
        let envelope = self.txn.take();
        if let Some(reply) = self.failed.take() {
            self.stats.reject("transaction_failed");
            return self.send(reply);
        }
        if outcome.bare_eol {
            return self.reject("bare_eol", bare_eol());
        }
        if outcome.overflow {
            return self.reject("message_too_big", too_big());
        }
        match envelope {
            Some(envelope) => self.enqueue(envelope, outcome.body),
            None => self.reject(
                "bad_sequence",
                Reply::new(503, "5.5.1", "Error: need MAIL command"),
            ),
        }
    }
}
