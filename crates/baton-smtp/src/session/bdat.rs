//! BDAT (RFC 3030 CHUNKING): exactly `size` raw octets follow the command line.

use super::{BdatChunk, Mode, Session};
use crate::catalogue;
use crate::data::BdatReceiver;

impl Session {
    /// BDAT size [LAST]: the chunk is always consumed; refused chunks are discarded.
    pub(super) fn handle_bdat(&mut self, size: u64, last: bool) {
        let cap = usize::try_from(self.message_cap()).unwrap_or(usize::MAX);
        let reject = match self.txn.as_mut() {
            None => Some(("bad_sequence", catalogue::need_mail())),
            Some(t) if t.recipients.is_empty() => Some(("bad_sequence", catalogue::need_rcpt())),
            Some(t) => {
                t.bdat.get_or_insert_with(|| BdatReceiver::new(cap));
                None
            }
        };
        self.mode = Mode::Bdat(BdatChunk {
            remaining: size,
            size,
            last,
            reject,
        });
    }

    /// Moves buffered input into the current chunk.
    pub(super) fn step_bdat(&mut self) -> bool {
        let Mode::Bdat(chunk) = &mut self.mode else {
            return false;
        };
        let avail = self.input.len() - self.pos;
        if chunk.remaining > 0 {
            if avail == 0 {
                return false;
            }
            let take = usize::try_from(chunk.remaining).map_or(avail, |r| r.min(avail));
            let bytes = &self.input[self.pos..self.pos + take];
            if chunk.reject.is_none()
                && let Some(rx) = self.txn.as_mut().and_then(|t| t.bdat.as_mut())
            {
                rx.push(bytes);
            }
            self.pos += take;
            chunk.remaining -= take as u64;
        }
        if chunk.remaining == 0
            && let Mode::Bdat(chunk) = std::mem::replace(&mut self.mode, Mode::Command)
        {
            self.finish_chunk(chunk);
        }
        true
    }

    fn finish_chunk(&mut self, chunk: BdatChunk) {
        if let Some((reason, reply)) = chunk.reject {
            return self.reject(reason, reply);
        }
        if let Some(reply) = self.failed.take() {
            self.reset_transaction();
            self.stats.reject("transaction_failed");
            return self.send(reply);
        }
        let overflow = self
            .txn
            .as_ref()
            .and_then(|t| t.bdat.as_ref())
            .is_some_and(BdatReceiver::overflowed);
        if overflow {
            self.reset_transaction();
            return self.reject("message_too_big", catalogue::message_too_big());
        }
        if !chunk.last {
            let size = chunk.size;
            return self.send(catalogue::chunk_received(size));
        }
        match self.txn.as_mut().and_then(|t| t.bdat.take()) {
            Some(rx) => self.finish_body(rx.finish()),
            None => self.reject("bad_sequence", catalogue::need_mail()),
        }
    }
}
