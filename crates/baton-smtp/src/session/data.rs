//! DATA (RFC 5321 4.1.1.4): the 354 go-ahead and the end-of-data verdict.

use super::{Mode, Session};
use crate::catalogue;
use crate::data::{BodyOutcome, DataReceiver};

impl Session {
    /// DATA: needs MAIL and at least one recipient, and no BDAT chunk in this transaction.
    pub(super) fn handle_data(&mut self) {
        let Some(txn) = &self.txn else {
            return self.reject("bad_sequence", catalogue::need_mail());
        };
        if txn.bdat.is_some() {
            return self.reject("bad_sequence", catalogue::data_after_bdat());
        }
        if txn.recipients.is_empty() {
            return self.reject("no_recipients", catalogue::no_valid_recipients());
        }
        let cap = usize::try_from(self.message_cap()).unwrap_or(usize::MAX);
        self.send(catalogue::start_data());
        let mut rx = DataReceiver::new(cap);
        if self.failed.is_some() {
            // fail_transaction() came before DATA: scan for the end, keep nothing.
            rx.discard();
        }
        self.mode = Mode::Data(rx);
    }

    /// Feeds buffered input to the DATA decoder (which [`Session::feed`] may have fed
    /// directly), and gives the verdict once the final dot is in.
    pub(super) fn step_data(&mut self) -> bool {
        let Mode::Data(rx) = &mut self.mode else {
            return false;
        };
        if !rx.is_done() {
            if self.pos >= self.input.len() {
                return false;
            }
            let used = rx.feed(&self.input[self.pos..]);
            self.pos += used;
            if !rx.is_done() {
                return true;
            }
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
            return self.reject("bare_eol", catalogue::bare_line_ending());
        }
        if outcome.overflow {
            return self.reject("message_too_big", catalogue::message_too_big());
        }
        match envelope {
            Some(envelope) => self.enqueue(envelope, outcome.body),
            None => self.reject("bad_sequence", catalogue::need_mail()),
        }
    }
}
