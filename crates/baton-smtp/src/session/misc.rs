//! RSET, NOOP, QUIT, VRFY and HELP (RFC 5321 4.1.1.5 - 4.1.1.10).

use super::Session;
use crate::reply::Reply;

impl Session {
    /// RSET: abort the transaction.
    pub(super) fn handle_rset(&mut self) {
        self.reset_transaction();
        self.send(Reply::new(250, "2.0.0", "Ok"));
    }

    /// NOOP.
    pub(super) fn handle_noop(&mut self) {
        self.send(Reply::new(250, "2.0.0", "Ok"));
    }

    /// QUIT: 221 and close.
    pub(super) fn handle_quit(&mut self) {
        self.close_with(Reply::new(221, "2.0.0", "Bye"));
    }

    /// VRFY: never reveals anything (RFC 5321 3.5.3).
    pub(super) fn handle_vrfy(&mut self) {
        self.send(Reply::new(
            252,
            "2.5.0",
            "Cannot VRFY user, but will accept message",
        ));
    }

    /// HELP.
    pub(super) fn handle_help(&mut self) {
        self.send(Reply::new(
            214,
            "2.0.0",
            "See https://www.rfc-editor.org/rfc/rfc5321",
        ));
    }
}
