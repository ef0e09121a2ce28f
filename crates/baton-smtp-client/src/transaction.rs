//! One mail transaction: MAIL, RCPT, DATA or BDAT, with RFC 2920 pipelining when offered.

use std::fmt::Write as _;

use tracing::debug;

use crate::body::{self, MAX_CHUNK};
use baton_smtp::params::{DsnRet, Notify};

use crate::{ClientError, Connection, Reply};

/// One message to send over an established [`Connection`].
#[derive(Debug, Clone)]
pub struct OutgoingMessage<'a> {
    /// Reverse path without angle brackets; `""` is the null sender (bounces).
    pub reverse_path: &'a str,
    /// Recipients, in the order their replies come back in [`SendResult::rcpt_replies`].
    pub recipients: Vec<OutgoingRecipient<'a>>,
    /// Message content with CRLF line endings, *not* dot-stuffed. Bare CR or LF is normalised
    /// to CRLF and a missing final CRLF is added (see the `body` module docs).
    pub body: &'a [u8],
    /// Request SMTPUTF8 (RFC 6531). Also implied by a non-ASCII address.
    pub smtputf8: bool,
    /// The content is 8-bit: `BODY=8BITMIME` is declared when the server offers 8BITMIME. When
    /// it does not, the message is still sent as is (as Postfix does), since converting it to
    /// 7-bit would break DKIM signatures.
    pub eight_bit: bool,
    /// DSN `RET` (`FULL` or `HDRS`), sent only when the server offers DSN.
    pub ret: Option<DsnRet>,
    /// DSN `ENVID`, already xtext-encoded; sent only when the server offers DSN.
    pub envid: Option<&'a str>,
}

/// One recipient of an [`OutgoingMessage`].
#[derive(Debug, Clone)]
pub struct OutgoingRecipient<'a> {
    /// Forward path without angle brackets.
    pub address: &'a str,
    /// DSN `NOTIFY` as the client gave it (`SUCCESS,FAILURE`, `NEVER`, ...); sent only with
    /// DSN, and not at all when unset.
    pub notify: Option<Notify>,
    /// DSN `ORCPT` value (`rfc822;user@example.com`, xtext-encoded); sent only with DSN.
    pub orcpt: Option<&'a str>,
}

/// The server's replies for one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    /// Reply to MAIL FROM.
    pub mail_reply: Reply,
    /// One reply per recipient, in order. When MAIL was refused, each entry is a copy of the
    /// MAIL reply; when the server announced it is closing (421), later entries copy that 421.
    pub rcpt_replies: Vec<Reply>,
    /// Final reply to the message content (or the refusal of DATA/BDAT itself). `None` when
    /// MAIL failed or no recipient was accepted.
    pub data_reply: Option<Reply>,
    /// The server offered DSN (RFC 3461), so the message's NOTIFY, ORCPT, RET and ENVID were
    /// passed on: a recipient it accepted with NOTIFY is now its responsibility to report on.
    pub dsn: bool,
}

impl SendResult {
    /// Whether the message was accepted for the recipients whose RCPT succeeded.
    pub fn delivered(&self) -> bool {
        self.data_reply.as_ref().is_some_and(Reply::is_positive)
    }
}

/// Replies already read; once the server said 421 the rest are synthesised from it.
struct Replies {
    closing: Option<Reply>,
}

impl Replies {
    async fn next(
        &mut self,
        conn: &mut Connection,
        stage: &'static str,
        limit: std::time::Duration,
    ) -> Result<Reply, ClientError> {
        if let Some(reply) = &self.closing {
            return Ok(reply.clone());
        }
        let reply = conn.read_reply(stage, limit).await?;
        if reply.code == 421 {
            self.closing = Some(reply.clone());
        }
        Ok(reply)
    }
}

/// What [`Connection::envelope_pipelined`] sends in its one write.
struct Envelope<'a> {
    /// The MAIL command line.
    mail: &'a str,
    /// One RCPT command line per recipient.
    rcpts: &'a [String],
    /// Open with RSET (a reused connection).
    rset: bool,
    /// The server offers CHUNKING: no DATA.
    bdat: bool,
    /// The whole normalised content, sent as `BDAT <n> LAST` in the same write.
    chunk: Option<&'a [u8]>,
}

impl Connection {
    /// Sends one message. Refusals by the server come back in the [`SendResult`]; errors mean
    /// the session failed (and, except for the checks made before anything is sent, that the
    /// connection should be dropped).
    ///
    /// Checked before anything is written: SMTPUTF8 support, the SIZE limit, and that
    /// addresses and parameters cannot smuggle extra commands.
    pub async fn send(&mut self, msg: &OutgoingMessage<'_>) -> Result<SendResult, ClientError> {
        if self.poisoned {
            return Err(ClientError::Unusable);
        }
        validate(msg)?;
        let smtputf8 = msg.smtputf8
            || !msg.reverse_path.is_ascii()
            || msg.recipients.iter().any(|r| !r.address.is_ascii());
        if smtputf8 && !self.caps.smtputf8 {
            return Err(ClientError::Smtputf8NotSupported);
        }
        let shape = body::Shape::of(msg.body);
        let size = shape.message_size(msg.body);
        if let Some(limit) = self.caps.size_limit().filter(|&limit| size > limit) {
            return Err(ClientError::MessageTooLarge { size, limit });
        }
        // A reused connection, or one whose last transaction did not finish, opens with RSET;
        // its failure means nothing of this message reached the server.
        let rset = self.needs_reset || std::mem::take(&mut self.reused);
        if rset && !self.caps.pipelining {
            self.reset().await.map_err(|e| self.stale(e))?;
        }
        let rset_pipelined = rset && self.caps.pipelining;
        let mail = self.mail_command(msg, size, smtputf8);
        let rcpts: Vec<String> = msg
            .recipients
            .iter()
            .map(|r| self.rcpt_command(r))
            .collect();
        let bdat = self.caps.chunking;
        // RFC 3030 4.2 (its example 4.4): with PIPELINING, a message that fits one chunk goes
        // as `BDAT <n> LAST` and its content in the same write as MAIL and RCPT — one round
        // trip per message on a reused connection. A server that refuses every recipient
        // still reads the chunk and refuses it.
        let content = bdat.then(|| shape.normalise(msg.body));
        let chunk = content
            .as_deref()
            .filter(|c| self.caps.pipelining && c.len() <= MAX_CHUNK);
        let mut replies = Replies { closing: None };
        let (mail_reply, rcpt_replies, data_init) = if self.caps.pipelining {
            let envelope = Envelope {
                mail: &mail,
                rcpts: &rcpts,
                rset: rset_pipelined,
                bdat,
                chunk,
            };
            self.envelope_pipelined(envelope, &mut replies).await?
        } else {
            self.envelope_lockstep(&mail, &rcpts, bdat, &mut replies)
                .await?
        };
        let accepted = rcpt_replies.iter().any(Reply::is_positive);
        let data_reply = if !mail_reply.is_positive() || !accepted {
            // A pipelined chunk was refused with them; only a 354 to DATA needs finishing.
            if chunk.is_none() {
                self.finish_refused(data_init).await?;
            }
            None
        } else if replies.closing.is_some() {
            replies.closing.clone()
        } else if chunk.is_some() {
            // The pipelined chunk's reply; a refusal leaves the transaction to the next RSET.
            let reply =
                data_init.ok_or_else(|| ClientError::Protocol("no reply to BDAT".into()))?;
            self.needs_reset = !reply.is_positive();
            Some(reply)
        } else if let Some(content) = &content {
            Some(self.send_bdat(content).await?)
        } else {
            match data_init {
                Some(init) if init.code == 354 => Some(self.send_data(msg.body, shape).await?),
                Some(refused) => Some(refused),
                None => return Err(ClientError::Protocol("no reply to DATA".into())),
            }
        };
        self.poisoned |= replies.closing.is_some();
        let rcpt_replies = if mail_reply.is_positive() {
            rcpt_replies
        } else {
            vec![mail_reply.clone(); msg.recipients.len()]
        };
        let result = SendResult {
            mail_reply,
            rcpt_replies,
            data_reply,
            dsn: self.caps.dsn,
        };
        if result.delivered() {
            self.messages_sent += 1;
        }
        debug!(remote = %self.remote(), delivered = result.delivered(), "smtp transaction done");
        Ok(result)
    }

    fn mail_command(&self, msg: &OutgoingMessage<'_>, size: u64, smtputf8: bool) -> String {
        let mut line = format!("MAIL FROM:<{}>", msg.reverse_path);
        if self.caps.size.is_some() {
            let _ = write!(line, " SIZE={size}");
        }
        if (msg.eight_bit || smtputf8) && self.caps.eight_bit_mime {
            line.push_str(" BODY=8BITMIME");
        }
        if smtputf8 {
            line.push_str(" SMTPUTF8");
        }
        if self.caps.dsn {
            if let Some(ret) = msg.ret {
                let _ = write!(line, " RET={ret}");
            }
            if let Some(envid) = msg.envid {
                let _ = write!(line, " ENVID={envid}");
            }
        }
        line.push_str("\r\n");
        line
    }

    fn rcpt_command(&self, rcpt: &OutgoingRecipient<'_>) -> String {
        let mut line = format!("RCPT TO:<{}>", rcpt.address);
        if self.caps.dsn {
            if let Some(notify) = rcpt.notify.filter(|n| !n.is_unset()) {
                let _ = write!(line, " NOTIFY={notify}");
            }
            if let Some(orcpt) = rcpt.orcpt {
                let _ = write!(line, " ORCPT={orcpt}");
            }
        }
        line.push_str("\r\n");
        line
    }

    /// The session failed before its transaction began: poisoned, and reported as
    /// [`ClientError::StaleConnection`].
    fn stale(&mut self, e: ClientError) -> ClientError {
        self.poisoned = true;
        ClientError::StaleConnection(Box::new(e))
    }

    /// RFC 2920: (RSET,) MAIL, every RCPT and, without BDAT, DATA in one write — or with the
    /// [`Envelope::chunk`], `BDAT <n> LAST` and the content — then the replies in order; the
    /// third value is the reply to DATA or to the pipelined BDAT. A failed write or an RSET not
    /// answered `250` is [`ClientError::StaleConnection`] (the server took nothing: MAIL needs
    /// a clean state, and a chunk not written whole is no message).
    async fn envelope_pipelined(
        &mut self,
        e: Envelope<'_>,
        replies: &mut Replies,
    ) -> Result<(Reply, Vec<Reply>, Option<Reply>), ClientError> {
        let mut batch = String::with_capacity(e.mail.len() + e.rcpts.len() * 48 + 24);
        if e.rset {
            batch.push_str("RSET\r\n");
        }
        batch.push_str(e.mail);
        e.rcpts.iter().for_each(|r| batch.push_str(r));
        match e.chunk {
            Some(chunk) => {
                let _ = write!(batch, "BDAT {} LAST\r\n", chunk.len());
            }
            None if !e.bdat => batch.push_str("DATA\r\n"),
            None => {}
        }
        let t = self.timeouts;
        self.needs_reset = true;
        let (stage, limit) = match (e.chunk.is_some(), e.rset) {
            (true, _) => ("data_block", t.data_block),
            (false, true) => ("rset", t.rset),
            (false, false) => ("mail", t.mail),
        };
        let chunk = e.chunk.unwrap_or_default();
        let written = self
            .write_framed(batch.as_bytes(), chunk, &[], stage, limit)
            .await;
        if e.rset {
            if let Err(err) = written {
                return Err(self.stale(err));
            }
            match self.read_reply("rset", t.rset).await {
                Ok(r) if r.code == 250 => {}
                Ok(r) => {
                    let refused = ClientError::Protocol(format!("RSET refused: {r}"));
                    return Err(self.stale(refused));
                }
                Err(err) => return Err(self.stale(err)),
            }
        } else {
            written?;
        }
        let mail_reply = replies.next(self, "mail", t.mail).await?;
        let mut rcpt_replies = Vec::with_capacity(e.rcpts.len());
        for _ in e.rcpts {
            rcpt_replies.push(replies.next(self, "rcpt", t.rcpt).await?);
        }
        let data_init = if e.chunk.is_some() {
            Some(replies.next(self, "data_term", t.data_term).await?)
        } else if e.bdat {
            None
        } else {
            Some(replies.next(self, "data_init", t.data_init).await?)
        };
        Ok((mail_reply, rcpt_replies, data_init))
    }

    /// One command, one reply; stops early when MAIL fails or no recipient is accepted.
    async fn envelope_lockstep(
        &mut self,
        mail: &str,
        rcpts: &[String],
        bdat: bool,
        replies: &mut Replies,
    ) -> Result<(Reply, Vec<Reply>, Option<Reply>), ClientError> {
        let t = self.timeouts;
        self.write(mail.as_bytes(), "mail", t.mail).await?;
        let mail_reply = replies.next(self, "mail", t.mail).await?;
        if !mail_reply.is_positive() {
            return Ok((mail_reply, Vec::new(), None));
        }
        self.needs_reset = true;
        let mut rcpt_replies = Vec::with_capacity(rcpts.len());
        for rcpt in rcpts {
            if replies.closing.is_none() {
                self.write(rcpt.as_bytes(), "rcpt", t.rcpt).await?;
            }
            rcpt_replies.push(replies.next(self, "rcpt", t.rcpt).await?);
        }
        if bdat || replies.closing.is_some() || !rcpt_replies.iter().any(Reply::is_positive) {
            return Ok((mail_reply, rcpt_replies, None));
        }
        self.write(b"DATA\r\n", "data_init", t.data_init).await?;
        let init = replies.next(self, "data_init", t.data_init).await?;
        Ok((mail_reply, rcpt_replies, Some(init)))
    }

    /// Nothing to deliver. A pipelined DATA should have been refused (RFC 2920 section 3.1);
    /// if a broken server said 354 anyway, end the empty message and ignore the outcome.
    async fn finish_refused(&mut self, data_init: Option<Reply>) -> Result<(), ClientError> {
        if data_init.is_some_and(|r| r.code == 354) {
            let t = self.timeouts;
            self.write(b".\r\n", "data_term", t.data_term).await?;
            self.read_reply("data_term", t.data_term).await?;
            self.needs_reset = false;
        }
        Ok(())
    }

    /// After 354: the dot-stuffed content and its terminator (see [`Connection::write_framed`]),
    /// then the final reply.
    async fn send_data(&mut self, body: &[u8], shape: body::Shape) -> Result<Reply, ClientError> {
        let t = self.timeouts;
        let content = shape.data_content(body);
        self.write_framed(&[], &content, body::DATA_END, "data_block", t.data_block)
            .await?;
        let reply = self.read_reply("data_term", t.data_term).await?;
        self.needs_reset = false;
        Ok(reply)
    }

    /// RFC 3030: the normalised `content` as `BDAT <n>` chunks of at most [`MAX_CHUNK`], the
    /// last one flagged `LAST`, each answered before the next. An intermediate refusal ends the
    /// transaction with that reply.
    async fn send_bdat(&mut self, content: &[u8]) -> Result<Reply, ClientError> {
        let t = self.timeouts;
        let chunks: Vec<&[u8]> = if content.is_empty() {
            vec![&[]]
        } else {
            content.chunks(MAX_CHUNK).collect()
        };
        let count = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let last = i + 1 == count;
            let header = if last {
                format!("BDAT {} LAST\r\n", chunk.len())
            } else {
                format!("BDAT {}\r\n", chunk.len())
            };
            self.write_framed(header.as_bytes(), chunk, &[], "data_block", t.data_block)
                .await?;
            let limit = if last { t.data_term } else { t.data_block };
            let stage = if last { "data_term" } else { "data_block" };
            let reply = self.read_reply(stage, limit).await?;
            if last || !reply.is_positive() {
                self.needs_reset = !last;
                return Ok(reply);
            }
        }
        Err(ClientError::Protocol("BDAT sent no chunk".into()))
    }
}

/// Rejects input that would break the command syntax or smuggle commands.
fn validate(msg: &OutgoingMessage<'_>) -> Result<(), ClientError> {
    if msg.recipients.is_empty() {
        return Err(ClientError::InvalidMessage("no recipients"));
    }
    let bad_address = |s: &str| {
        s.bytes()
            .any(|b| matches!(b, b'\r' | b'\n' | b'\0' | b'<' | b'>'))
    };
    let bad_param = |s: Option<&str>| {
        s.is_some_and(|s| s.is_empty() || s.bytes().any(|b| b <= b' ' || b == 0x7f))
    };
    if bad_address(msg.reverse_path) || msg.recipients.iter().any(|r| bad_address(r.address)) {
        return Err(ClientError::InvalidMessage(
            "control character or bracket in an address",
        ));
    }
    if msg.recipients.iter().any(|r| r.address.is_empty()) {
        return Err(ClientError::InvalidMessage("empty recipient address"));
    }
    // RET and NOTIFY are typed; the free-form values are ENVID and ORCPT.
    let params = std::iter::once(msg.envid).chain(msg.recipients.iter().map(|r| r.orcpt));
    if params.into_iter().any(bad_param) {
        return Err(ClientError::InvalidMessage(
            "space or control character in a DSN parameter",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<'a>(from: &'a str, to: &'a str) -> OutgoingMessage<'a> {
        OutgoingMessage {
            reverse_path: from,
            recipients: vec![OutgoingRecipient {
                address: to,
                notify: None,
                orcpt: None,
            }],
            body: b"",
            smtputf8: false,
            eight_bit: false,
            ret: None,
            envid: None,
        }
    }

    #[test]
    fn validation_blocks_command_injection() {
        assert!(validate(&msg("a@b", "c@d")).is_ok());
        assert!(validate(&msg("", "c@d")).is_ok());
        assert!(validate(&msg("a@b\r\nRCPT TO:<x@y>", "c@d")).is_err());
        assert!(validate(&msg("a@b", "c@d>\nDATA")).is_err());
        assert!(validate(&msg("a@b", "")).is_err());
        let mut m = msg("a@b", "c@d");
        m.envid = Some("x RET=FULL");
        assert!(validate(&m).is_err());
        m.envid = None;
        m.recipients.clear();
        assert!(validate(&m).is_err());
    }
}
