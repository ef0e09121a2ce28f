//! The catalogue of Baton's own replies: every reply Baton itself makes up — the session's
//! answers and refusals, the ingress's hand-off refusals, the worker's local deferrals — is
//! built here, once, with its code, enhanced status (RFC 3463) and text. Policy refusals live
//! in `baton_core::refusal` (their reason labels belong to policy); replies of a next hop are
//! parsed, never made up.
//!
//! Call sites name a reply (`catalogue::need_mail()`) instead of spelling a code, a status and
//! a text, so the same situation always gets the same reply, and the test below checks that
//! every status agrees with its code.

use crate::reply::{EnhancedStatus, Reply};

fn reply(code: u16, class: u8, subject: u16, detail: u16, text: impl Into<String>) -> Reply {
    Reply::with_status(code, EnhancedStatus::new(class, subject, detail), text)
}

// ---- Positive replies of the session -------------------------------------------------------

/// `220` banner (no enhanced status before EHLO, RFC 2034 §3).
pub fn greeting(host: &str) -> Reply {
    Reply::new(220, "", format!("{host} ESMTP Baton ready"))
}

/// `250 2.0.0 Ok` (RSET, NOOP).
pub fn ok() -> Reply {
    reply(250, 2, 0, 0, "Ok")
}

/// `250 2.1.0 Ok` to MAIL.
pub fn sender_ok() -> Reply {
    reply(250, 2, 1, 0, "Ok")
}

/// `250 2.1.5 Ok` to RCPT.
pub fn recipient_ok() -> Reply {
    reply(250, 2, 1, 5, "Ok")
}

/// `354` go-ahead for DATA.
pub fn start_data() -> Reply {
    Reply::new(354, "", "End data with <CR><LF>.<CR><LF>")
}

/// `250 2.0.0` for a message queued under `id`.
pub fn queued(id: &str) -> Reply {
    reply(250, 2, 0, 0, format!("Ok: queued as {id}"))
}

/// `250 2.0.0` for a BDAT chunk that is not the last.
pub fn chunk_received(size: u64) -> Reply {
    reply(250, 2, 0, 0, format!("{size} octets received"))
}

/// `221 2.0.0 Bye` to QUIT.
pub fn bye() -> Reply {
    reply(221, 2, 0, 0, "Bye")
}

/// `252 2.5.0` to VRFY: never reveals anything (RFC 5321 §3.5.3).
pub fn cannot_vrfy() -> Reply {
    reply(252, 2, 5, 0, "Cannot VRFY user, but will accept message")
}

/// `214 2.0.0` to HELP.
pub fn help() -> Reply {
    reply(214, 2, 0, 0, "See https://www.rfc-editor.org/rfc/rfc5321")
}

/// `220 2.0.0` to STARTTLS.
pub fn ready_for_tls() -> Reply {
    reply(220, 2, 0, 0, "Ready to start TLS")
}

/// `334` AUTH challenge (base64 text).
pub fn auth_challenge(text: impl Into<String>) -> Reply {
    Reply::new(334, "", text)
}

/// `235 2.7.0` after a successful AUTH.
pub fn authenticated() -> Reply {
    reply(235, 2, 7, 0, "Authentication successful")
}

// ---- Command sequence and syntax -----------------------------------------------------------

/// `503 5.5.1`: MAIL must come first.
pub fn need_mail() -> Reply {
    reply(503, 5, 5, 1, "Error: need MAIL command")
}

/// `503 5.5.1`: RCPT must come first.
pub fn need_rcpt() -> Reply {
    reply(503, 5, 5, 1, "Error: need RCPT command")
}

/// `503 5.5.1`: MAIL inside a transaction.
pub fn nested_mail() -> Reply {
    reply(503, 5, 5, 1, "Error: nested MAIL command")
}

/// `503 5.5.1`: MAIL before HELO/EHLO.
pub fn need_helo() -> Reply {
    reply(503, 5, 5, 1, "Error: send HELO/EHLO first")
}

/// `503 5.5.1`: AUTH before EHLO.
pub fn need_ehlo() -> Reply {
    reply(503, 5, 5, 1, "Error: send EHLO first")
}

/// `503 5.5.1`: a second AUTH.
pub fn already_authenticated() -> Reply {
    reply(503, 5, 5, 1, "Error: already authenticated")
}

/// `503 5.5.1`: AUTH inside a transaction.
pub fn auth_in_transaction() -> Reply {
    reply(
        503,
        5,
        5,
        1,
        "Error: AUTH not allowed during a mail transaction",
    )
}

/// `503 5.5.1`: STARTTLS inside TLS.
pub fn tls_already_active() -> Reply {
    reply(503, 5, 5, 1, "Error: TLS already active")
}

/// `503 5.5.1`: DATA after a BDAT chunk.
pub fn data_after_bdat() -> Reply {
    reply(503, 5, 5, 1, "Error: DATA cannot be mixed with BDAT")
}

/// `554 5.5.1`: DATA without an accepted recipient.
pub fn no_valid_recipients() -> Reply {
    reply(554, 5, 5, 1, "Error: no valid recipients")
}

/// `502 5.5.1`: STARTTLS not offered here.
pub fn starttls_unavailable() -> Reply {
    reply(502, 5, 5, 1, "Error: STARTTLS not available")
}

/// `502 5.5.1`: a known command Baton does not implement (TURN, ETRN...).
pub fn not_implemented() -> Reply {
    reply(502, 5, 5, 1, "Error: command not implemented")
}

/// `500 5.5.2`: a command line that does not parse.
pub fn syntax_error(text: &str) -> Reply {
    reply(500, 5, 5, 2, text)
}

/// `501 5.5.4`: bad arguments.
pub fn bad_arguments(text: &str) -> Reply {
    reply(501, 5, 5, 4, text)
}

/// `555 5.5.4`: a MAIL/RCPT parameter that is not recognised or not valid (RFC 5321 §4.1.1.11).
pub fn bad_parameter(error: impl std::fmt::Display) -> Reply {
    reply(555, 5, 5, 4, format!("Error: {error}"))
}

/// `501` with the address status (`5.1.7` sender, `5.1.3` recipient): bad address syntax.
pub fn bad_address(status: EnhancedStatus, what: &str, error: impl std::fmt::Display) -> Reply {
    Reply::with_status(
        501,
        status,
        format!("Error: bad {what} address syntax ({error})"),
    )
}

/// `500 5.5.6`: a command line over the limit.
pub fn line_too_long() -> Reply {
    reply(500, 5, 5, 6, "Error: line too long")
}

/// `553 5.6.7`: a UTF-8 address without SMTPUTF8 (RFC 6531).
pub fn smtputf8_required() -> Reply {
    reply(553, 5, 6, 7, "Error: non-ASCII address requires SMTPUTF8")
}

// ---- Limits and content --------------------------------------------------------------------

/// `452 4.5.3`: the transaction's recipient limit (the client sends the rest later).
pub fn too_many_recipients() -> Reply {
    reply(452, 4, 5, 3, "Error: too many recipients")
}

/// `552 5.3.4`: a message over the size limit (declared or received).
pub fn message_too_big() -> Reply {
    reply(
        552,
        5,
        3,
        4,
        "Error: message size exceeds fixed maximum message size",
    )
}

/// `550 5.6.0`: bare CR or LF in the content (SMTP smuggling protection).
pub fn bare_line_ending() -> Reply {
    reply(
        550,
        5,
        6,
        0,
        "Error: bare CR or LF in message content not allowed (SMTP smuggling protection)",
    )
}

/// `452 4.3.1`: the ingress's memory budget is spent.
pub fn insufficient_resources() -> Reply {
    reply(
        452,
        4,
        3,
        1,
        "Insufficient system resources, try again later",
    )
}

// ---- Authentication ------------------------------------------------------------------------

/// `530 5.7.0`: submission needs AUTH (`starttls_first`: and TLS comes before it).
pub fn auth_required(starttls_first: bool) -> Reply {
    let text = if starttls_first {
        "Must issue a STARTTLS command first"
    } else {
        "Authentication required"
    };
    reply(530, 5, 7, 0, text)
}

/// `538 5.7.11`: AUTH over a plaintext connection.
pub fn encryption_required() -> Reply {
    reply(
        538,
        5,
        7,
        11,
        "Error: encryption required for requested authentication mechanism",
    )
}

/// `504 5.5.4`: an AUTH mechanism Baton does not offer.
pub fn unsupported_mechanism() -> Reply {
    reply(504, 5, 5, 4, "Error: unsupported authentication mechanism")
}

/// `501 5.0.0`: the client cancelled AUTH with `*`.
pub fn auth_cancelled() -> Reply {
    reply(501, 5, 0, 0, "Authentication cancelled")
}

/// `501 5.5.2`: AUTH data that is not base64 or not well-formed.
pub fn bad_auth_data() -> Reply {
    reply(
        501,
        5,
        5,
        2,
        "Error: invalid base64 or malformed authentication data",
    )
}

/// `535 5.7.8`: wrong credentials (never says whether the user exists).
pub fn credentials_invalid() -> Reply {
    reply(535, 5, 7, 8, "Error: authentication credentials invalid")
}

/// `454 4.7.0`: credentials could not be checked now.
pub fn auth_unavailable() -> Reply {
    reply(454, 4, 7, 0, "Temporary authentication failure")
}

// ---- Closing the session -------------------------------------------------------------------

/// `421 4.4.2`: the client was idle too long.
pub fn timeout(host: &str) -> Reply {
    reply(421, 4, 4, 2, format!("{host} Error: timeout exceeded"))
}

/// `421 4.3.2`: the ingress is shutting down.
pub fn shutting_down(host: &str) -> Reply {
    reply(421, 4, 3, 2, format!("{host} Service shutting down"))
}

/// `421 4.7.0`: a connection refused at accept (over the ingress's or the address's limit).
pub fn too_many_connections(host: &str) -> Reply {
    reply(
        421,
        4,
        7,
        0,
        format!("{host} Too many connections, try again later"),
    )
}

/// `421 4.7.0`: too many errors in one session.
pub fn too_many_errors(host: &str) -> Reply {
    reply(421, 4, 7, 0, format!("{host} Error: too many errors"))
}

/// `421 4.7.0`: too many failed AUTH attempts in one session.
pub fn too_many_auth_failures(host: &str) -> Reply {
    reply(
        421,
        4,
        7,
        0,
        format!("{host} Error: too many authentication failures"),
    )
}

// ---- Hand-off to the queue -----------------------------------------------------------------

/// `451 4.3.0`: a local failure; nothing was queued.
pub fn local_error() -> Reply {
    reply(451, 4, 3, 0, "Local error in processing, try again later")
}

/// `451 4.3.0`: no configuration snapshot yet.
pub fn config_not_loaded() -> Reply {
    reply(
        451,
        4,
        3,
        0,
        "Relay configuration not loaded yet, try again later",
    )
}

/// `451 4.3.0`: the publish to the queue failed; nothing was accepted.
pub fn queue_unavailable() -> Reply {
    reply(
        451,
        4,
        3,
        0,
        "Queue temporarily unavailable, message not accepted; try again later",
    )
}

/// `451 4.7.5`: the RelayDomain's DKIM key cannot sign; nothing is sent unsigned by surprise.
pub fn dkim_unusable(domain: &str, selector: &str, reason: &str) -> Reply {
    reply(
        451,
        4,
        7,
        5,
        format!("{domain}: DKIM key {selector} unusable ({reason}), mail deferred"),
    )
}

/// `450 4.7.1`: the RelayDomain's sending rate is exceeded.
pub fn domain_rate_exceeded() -> Reply {
    reply(
        450,
        4,
        7,
        1,
        "Sending rate limit for this domain exceeded, try again later",
    )
}

/// `450 4.7.1`: a cluster-wide message budget is spent, e.g. `Message rate limit of
/// example.com exceeded (600 per minute); try again later`. `of` names the budget (the domain,
/// `user alice at example.com`, `client network 192.0.2.0/24`), `period` is `minute`, `hour`
/// or `day`.
pub fn message_rate_exceeded(of: &str, limit: u64, period: &str) -> Reply {
    reply(
        450,
        4,
        7,
        1,
        format!("Message rate limit of {of} exceeded ({limit} per {period}); try again later"),
    )
}

/// `452 4.5.3`: a cluster-wide recipient budget is spent, e.g. `Recipient rate limit of
/// example.com exceeded (1000 per hour); try again later`.
pub fn recipient_rate_exceeded(of: &str, limit: u64, period: &str) -> Reply {
    reply(
        452,
        4,
        5,
        3,
        format!("Recipient rate limit of {of} exceeded ({limit} per {period}); try again later"),
    )
}

/// `450 4.7.1`: a credential's sending spiked far above its usual hourly rate and its
/// RelayDomain throttles spikes: no more messages of it this hour.
pub fn spike_throttled(of: &str) -> Reply {
    reply(
        450,
        4,
        7,
        1,
        format!("Sending rate of {of} is far above its usual rate; try again later"),
    )
}

/// `550 5.7.1`: the client network is on the pool's deny list (at MAIL FROM).
pub fn client_denied() -> Reply {
    reply(550, 5, 7, 1, "Mail from your network is not accepted")
}

/// `550 5.7.1`: the sender is on the pool's deny list.
pub fn sender_denied() -> Reply {
    reply(550, 5, 7, 1, "Sender address denied by policy")
}

/// `550 5.7.1`: the recipient's domain is on the pool's deny list.
pub fn recipient_domain_denied() -> Reply {
    reply(550, 5, 7, 1, "Recipient domain denied by policy")
}

/// `554 5.7.1`: the client's network is refused at connect (`--deny-network`); the
/// connection is closed.
pub fn connection_denied(host: &str) -> Reply {
    reply(
        554,
        5,
        7,
        1,
        format!("{host} Connections from your network are not accepted"),
    )
}

/// `454 4.7.0`: AUTH while the user name or the client is locked out after too many failed
/// attempts. The same text either way, and whether or not the user exists.
pub fn auth_locked_out() -> Reply {
    reply(
        454,
        4,
        7,
        0,
        "Too many failed authentication attempts; try again later",
    )
}

/// `421 4.7.0`: a client locked out after too many failed AUTH attempts, at connect; the
/// connection is closed.
pub fn client_locked_out(host: &str) -> Reply {
    reply(
        421,
        4,
        7,
        0,
        format!("{host} Too many failed authentication attempts; try again later"),
    )
}

/// `550 5.1.1`: `<postmaster>` without a domain, which an outbound relay cannot route.
pub fn postmaster_needs_domain() -> Reply {
    reply(
        550,
        5,
        1,
        1,
        "<postmaster> needs a domain on an outbound relay",
    )
}

/// `550 5.1.1`: an address at a return-path domain that is no VERP address of ours.
pub fn unknown_return_path_recipient() -> Reply {
    reply(550, 5, 1, 1, "No such recipient at this return-path domain")
}

/// `550 5.1.2`: an address-literal recipient on a pool that does not accept them.
pub fn address_literal_refused() -> Reply {
    reply(
        550,
        5,
        1,
        2,
        "Address literals are not accepted as recipients here",
    )
}

/// `550 5.7.1`: a return-path domain only takes reports.
pub fn reports_only(domain: &str) -> Reply {
    reply(
        550,
        5,
        7,
        1,
        format!("{domain} accepts only delivery status and feedback reports"),
    )
}

/// `250 2.6.0`: a report taken at a return-path domain.
pub fn report_received() -> Reply {
    reply(250, 2, 6, 0, "Report received, thank you")
}

// ---- The delivery worker's own outcomes ----------------------------------------------------

/// `451 4.3.0`: the worker shut down while the message waited for a connection slot (nothing
/// was attempted; the message is given back, not retried).
pub fn worker_shutting_down() -> Reply {
    reply(451, 4, 3, 0, "worker shutting down")
}

/// `451 4.4.5`: a destination suspended after repeated failures, until `until_ms`.
pub fn destination_suspended(destination: &str, until_ms: i64) -> Reply {
    reply(
        451,
        4,
        4,
        5,
        format!("destination {destination} suspended after repeated failures until {until_ms} ms"),
    )
}

/// `451 4.4.5`: a destination whose connections are all busy for longer than the first retry.
pub fn destination_busy(
    destination: &str,
    waiting: usize,
    connections: usize,
    estimated_secs: u64,
) -> Reply {
    reply(
        451,
        4,
        4,
        5,
        format!(
            "destination {destination} busy: {waiting} messages wait for {connections} connections, about {estimated_secs}s"
        ),
    )
}

// ---- Outbound shaping: mail held back by the pool's shared limits ----------------------------
//
// `451 4.4.5` (mail system congestion, RFC 3463 §3.5): the limits are the pool's own, the
// receiver was not asked. Never a `4.7.x` status, so that these replies are never taken for a
// receiver's throttling reply. `retry_secs`: when the message wants to come back.

/// `451 4.4.5`: the site's pool-wide connection cap (`maxConnections`) is full.
pub fn pool_connections_full(site: &str, retry_secs: i64) -> Reply {
    reply(
        451,
        4,
        4,
        5,
        format!("pool-wide connection limit for {site} reached; retry in {retry_secs} s"),
    )
}

/// `451 4.4.5`: the site's pool-wide messages-per-minute budget is spent.
pub fn pool_rate_spent(site: &str, retry_secs: i64) -> Reply {
    reply(
        451,
        4,
        4,
        5,
        format!("pool-wide messages-per-minute limit for {site} reached; retry in {retry_secs} s"),
    )
}

/// `451 4.4.5`: every egress identity of the pool spent its warm-up budget for the UTC day.
pub fn warmup_spent(retry_secs: i64) -> Reply {
    reply(
        451,
        4,
        4,
        5,
        format!(
            "every egress identity spent its warm-up budget for today; retry in {retry_secs} s"
        ),
    )
}

/// `451 4.4.5`: the site answered with a throttling reply and the pool leaves it alone for a
/// back-off.
pub fn site_backing_off(site: &str, retry_secs: i64) -> Reply {
    reply(
        451,
        4,
        4,
        5,
        format!("{site} is throttling this pool; backing off for {retry_secs} s"),
    )
}

/// A routing verdict (no MX, refused addresses, DNS failure): `550` for a permanent status,
/// `451` for a transient one.
pub fn routing(status: EnhancedStatus, text: &str) -> Reply {
    let code = if status.class == 5 { 550 } else { 451 };
    Reply::with_status(code, status, text)
}

/// `550 5.1.1`: a recipient on the suppression list (`text` says why and since when).
pub fn suppressed(text: impl Into<String>) -> Reply {
    reply(550, 5, 1, 1, text)
}

/// `451 4.4.0`: a pool with no delivery target at all.
pub fn no_delivery_target() -> Reply {
    reply(451, 4, 4, 0, "no delivery target")
}

/// `451 4.4.2`: the next hop gave no reply to a command (`RCPT`, `DATA`).
pub fn no_reply(command: &str) -> Reply {
    reply(451, 4, 4, 2, format!("no reply to {command}"))
}

/// `550 5.0.0`: an operator bounced the message through the operations API, with a reason.
pub fn bounced_by_operator(reason: &str) -> Reply {
    let reason: String = reason
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    reply(550, 5, 0, 0, format!("bounced by the operator: {reason}"))
}

/// `451 4.3.0`: a recipient that was not attempted in this pass.
pub fn not_attempted() -> Reply {
    reply(451, 4, 3, 0, "not attempted")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn every() -> Vec<Reply> {
        let s = EnhancedStatus::new(5, 1, 7);
        vec![
            greeting("mx"),
            ok(),
            sender_ok(),
            recipient_ok(),
            start_data(),
            queued("X"),
            chunk_received(3),
            bye(),
            cannot_vrfy(),
            help(),
            ready_for_tls(),
            auth_challenge(""),
            authenticated(),
            need_mail(),
            need_rcpt(),
            nested_mail(),
            need_helo(),
            need_ehlo(),
            already_authenticated(),
            auth_in_transaction(),
            tls_already_active(),
            data_after_bdat(),
            no_valid_recipients(),
            starttls_unavailable(),
            not_implemented(),
            syntax_error("x"),
            bad_arguments("x"),
            bad_parameter("x"),
            bad_address(s, "sender", "x"),
            line_too_long(),
            smtputf8_required(),
            too_many_recipients(),
            message_too_big(),
            bare_line_ending(),
            insufficient_resources(),
            auth_required(true),
            auth_required(false),
            encryption_required(),
            unsupported_mechanism(),
            auth_cancelled(),
            bad_auth_data(),
            credentials_invalid(),
            auth_unavailable(),
            timeout("mx"),
            shutting_down("mx"),
            too_many_errors("mx"),
            too_many_connections("mx"),
            too_many_auth_failures("mx"),
            local_error(),
            queue_unavailable(),
            dkim_unusable("d", "s", "r"),
            domain_rate_exceeded(),
            message_rate_exceeded("example.com", 600, "minute"),
            recipient_rate_exceeded("example.com", 600, "minute"),
            spike_throttled("x"),
            client_denied(),
            sender_denied(),
            recipient_domain_denied(),
            connection_denied("mx"),
            auth_locked_out(),
            client_locked_out("mx"),
            postmaster_needs_domain(),
            unknown_return_path_recipient(),
            address_literal_refused(),
            config_not_loaded(),
            reports_only("d"),
            report_received(),
            worker_shutting_down(),
            destination_suspended("d", 1),
            destination_busy("d", 1, 2, 3),
            pool_connections_full("google.com", 61),
            pool_rate_spent("google.com", 61),
            warmup_spent(61),
            site_backing_off("google.com", 61),
            routing(EnhancedStatus::new(5, 1, 2), "x"),
            routing(EnhancedStatus::new(4, 4, 3), "x"),
            suppressed("x"),
            not_attempted(),
            no_delivery_target(),
            no_reply("DATA"),
        ]
    }

    /// Every reply Baton makes up has a status whose class agrees with its code (RFC 3463
    /// §2), except where RFC 2034 says there is none: the banner, 334 and 354.
    #[test]
    fn every_status_agrees_with_its_code() {
        for r in every() {
            match r.code {
                220 if r.status.is_none() => assert_eq!(r.lines[0], "mx ESMTP Baton ready"),
                334 | 354 => assert_eq!(r.status, None, "{r}"),
                _ => {
                    let status = r.status.unwrap_or_else(|| panic!("no status: {r}"));
                    assert!(status.agrees_with(r.code), "{r}");
                }
            }
        }
    }

    #[test]
    fn limit_replies_name_the_limit() {
        assert_eq!(
            message_rate_exceeded("example.com", 600, "minute").to_string(),
            "450 4.7.1 Message rate limit of example.com exceeded (600 per minute); try again later"
        );
        assert_eq!(
            recipient_rate_exceeded("example.com", 1000, "hour").to_string(),
            "452 4.5.3 Recipient rate limit of example.com exceeded (1000 per hour); try again later"
        );
        assert_eq!(auth_locked_out().code, 454);
        assert_eq!(client_locked_out("mx").code, 421);
        assert_eq!(connection_denied("mx").code, 554);
    }

    #[test]
    fn shaping_replies_are_local_congestion_not_throttling() {
        assert_eq!(
            pool_connections_full("google.com", 61).to_string(),
            "451 4.4.5 pool-wide connection limit for google.com reached; retry in 61 s"
        );
        assert_eq!(
            pool_rate_spent("google.com", 61).to_string(),
            "451 4.4.5 pool-wide messages-per-minute limit for google.com reached; retry in 61 s"
        );
        assert_eq!(
            warmup_spent(3600).to_string(),
            "451 4.4.5 every egress identity spent its warm-up budget for today; retry in 3600 s"
        );
        assert_eq!(
            site_backing_off("google.com", 60).to_string(),
            "451 4.4.5 google.com is throttling this pool; backing off for 60 s"
        );
        for r in [
            pool_connections_full("s", 1),
            pool_rate_spent("s", 1),
            warmup_spent(1),
            site_backing_off("s", 1),
        ] {
            // Local congestion (RFC 3463 X.4.5), never a security/policy (X.7.x) status.
            assert_eq!(r.status, Some(EnhancedStatus::new(4, 4, 5)), "{r}");
        }
    }

    #[test]
    fn routing_code_follows_the_status() {
        assert_eq!(
            routing(EnhancedStatus::new(5, 1, 2), "no such domain").to_string(),
            "550 5.1.2 no such domain"
        );
        assert_eq!(routing(EnhancedStatus::new(4, 4, 3), "x").code, 451);
    }
}
