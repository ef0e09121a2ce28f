//! RSET, NOOP, QUIT, VRFY and HELP (RFC 5321 4.1.1.5 - 4.1.1.10).

use super::Session;
use crate::catalogue;

impl Session {
    /// RSET: abort the transaction.
    pub(super) fn handle_rset(&mut self) {
        self.reset_transaction();
        self.send(catalogue::ok());
    }

    /// NOOP.
    pub(super) fn handle_noop(&mut self) {
        self.send(catalogue::ok());
    }

    /// QUIT: 221 and close.
    pub(super) fn handle_quit(&mut self) {
        self.close_with(catalogue::bye());
    }

    /// VRFY: never reveals anything (RFC 5321 3.5.3).
    pub(super) fn handle_vrfy(&mut self) {
        self.send(catalogue::cannot_vrfy());
    }

    /// HELP.
    pub(super) fn handle_help(&mut self) {
        self.send(catalogue::help());
    }
}
