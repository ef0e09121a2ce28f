//! AUTH PLAIN / LOGIN (RFC 4954, RFC 4616), only over TLS.
//!
//! Passwords live only for the policy call and are overwritten afterwards.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{
    Action, Admission, AuthStep, LineRead, MAX_AUTH_LINE, Mode, Password, Pending, Policy, Session,
    auth_failure_delay,
};
use crate::catalogue;
use crate::command::clean_line;
use crate::reply::Reply;

const USERNAME_PROMPT: &str = "VXNlcm5hbWU6";
const PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// Overwrites secret bytes before they are freed.
fn wipe(mut bytes: Vec<u8>) {
    bytes.fill(0);
    std::hint::black_box(&bytes);
}

/// Decodes a client response; `=` is the empty response.
fn decode(text: &str) -> Result<Vec<u8>, Reply> {
    if text == "=" {
        return Ok(Vec::new());
    }
    STANDARD
        .decode(text)
        .map_err(|_| catalogue::bad_auth_data())
}

impl Session {
    /// AUTH mechanism [initial-response].
    pub(super) fn handle_auth(
        &mut self,
        mechanism: &str,
        initial: Option<String>,
        policy: &dyn Policy,
    ) {
        if !self.peer.tls {
            return self.reject("tls_required", catalogue::encryption_required());
        }
        if self.authenticated.is_some() {
            return self.reject("bad_sequence", catalogue::already_authenticated());
        }
        if self.txn.is_some() {
            return self.reject("bad_sequence", catalogue::auth_in_transaction());
        }
        if self.helo.is_none() {
            return self.reject("bad_sequence", catalogue::need_ehlo());
        }
        match (mechanism, initial) {
            ("PLAIN", None) => self.prompt(AuthStep::Plain, ""),
            ("PLAIN", Some(response)) => self.auth_plain(&response, policy),
            ("LOGIN", None) => self.prompt(AuthStep::LoginUser, USERNAME_PROMPT),
            ("LOGIN", Some(response)) => self.auth_login_user(&response),
            _ => self.reject("bad_mechanism", catalogue::unsupported_mechanism()),
        }
    }

    fn prompt(&mut self, step: AuthStep, text: &str) {
        self.send(catalogue::auth_challenge(text));
        self.mode = Mode::Auth(step);
    }

    /// Reads one continuation line of the AUTH exchange.
    pub(super) fn step_auth(&mut self, policy: &dyn Policy) -> bool {
        let line = match self.next_line(MAX_AUTH_LINE) {
            LineRead::NeedMore => return false,
            LineRead::TooLong => {
                self.mode = Mode::Command;
                self.line_too_long();
                return true;
            }
            LineRead::Line(line) => line,
        };
        let Mode::Auth(step) = std::mem::replace(&mut self.mode, Mode::Command) else {
            return true;
        };
        let text = match clean_line(&line) {
            Ok(text) => text,
            Err(_) => {
                self.reject("auth_syntax", catalogue::bad_auth_data());
                wipe(line);
                return true;
            }
        };
        if text == "*" {
            let reply = catalogue::auth_cancelled();
            self.reject("auth_cancelled", reply);
        } else {
            match step {
                AuthStep::Plain => self.auth_plain(text, policy),
                AuthStep::LoginUser => self.auth_login_user(text),
                AuthStep::LoginPass { user } => match decode(text) {
                    Ok(password) => self.verify(user, password, policy),
                    Err(reply) => self.reject("auth_syntax", reply),
                },
            }
        }
        wipe(line);
        true
    }

    /// PLAIN: `authzid NUL authcid NUL passwd`.
    fn auth_plain(&mut self, response: &str, policy: &dyn Policy) {
        let decoded = match decode(response) {
            Ok(d) => d,
            Err(reply) => return self.reject("auth_syntax", reply),
        };
        let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
        let [authzid, authcid, password] = parts.as_slice() else {
            wipe(decoded);
            return self.reject("auth_syntax", catalogue::bad_auth_data());
        };
        let (Ok(authzid), Ok(authcid)) =
            (std::str::from_utf8(authzid), std::str::from_utf8(authcid))
        else {
            wipe(decoded);
            return self.reject("auth_syntax", catalogue::bad_auth_data());
        };
        let (authzid, user, password) =
            (authzid.to_string(), authcid.to_string(), password.to_vec());
        wipe(decoded);
        if !authzid.is_empty() && authzid != user {
            wipe(password);
            let reply = catalogue::credentials_invalid();
            return self.auth_failed(&user, reply, policy);
        }
        self.verify(user, password, policy);
    }

    /// LOGIN: the user name arrived; ask for the password.
    fn auth_login_user(&mut self, response: &str) {
        let user = match decode(response).map(String::from_utf8) {
            Ok(Ok(user)) => user,
            _ => return self.reject("auth_syntax", catalogue::bad_auth_data()),
        };
        self.prompt(AuthStep::LoginPass { user }, PASSWORD_PROMPT);
    }

    /// With admission, ask the driver first (a locked-out user or client is refused before
    /// any verification); else verify now.
    fn verify(&mut self, user: String, password: Vec<u8>, policy: &dyn Policy) {
        if self.config.admission {
            let admission = Admission::Auth {
                user: user.clone(),
                client: self.peer.addr,
            };
            self.pending.push_back(Action::Admit(admission));
            let password = Password(password);
            self.mode = Mode::WaitAdmit(Pending::Auth { user, password });
            return;
        }
        self.verify_now(user, password, policy);
    }

    pub(super) fn verify_now(&mut self, user: String, password: Vec<u8>, policy: &dyn Policy) {
        let result = match std::str::from_utf8(&password) {
            Ok(pw) if !user.is_empty() => policy.authenticate(&self.peer, &user, pw),
            _ => Err(catalogue::credentials_invalid()),
        };
        wipe(password);
        match result {
            Ok(scope) => {
                self.stats.auth_successes += 1;
                self.authenticated = Some(user);
                self.auth_scope = Some(scope);
                self.send(catalogue::authenticated());
            }
            Err(reply) => self.auth_failed(&user, reply, policy),
        }
    }

    /// A failed AUTH: the policy is told (it logs and counts), and the reply is held back by
    /// a delay that grows with each failure of the session.
    fn auth_failed(&mut self, username: &str, reply: Reply, policy: &dyn Policy) {
        self.stats.auth_failures += 1;
        self.auth_failures = self.auth_failures.saturating_add(1);
        policy.auth_failed(&self.peer, self.config.listener, username);
        if self.config.admission {
            self.pending.push_back(Action::AuthFailed {
                user: username.to_string(),
                client: self.peer.addr,
            });
        }
        let delay = auth_failure_delay(
            self.auth_failures,
            self.config.auth_failure_delay,
            self.config.auth_failure_delay_max,
        );
        if !delay.is_zero() {
            self.pending.push_back(Action::Delay(delay));
        }
        if self.auth_failures >= self.config.max_auth_failures {
            self.stats.reject("too_many_auth_failures");
            let reply = catalogue::too_many_auth_failures(&self.config.hostname);
            return self.close_with(reply);
        }
        self.reject("auth_failed", reply);
    }
}
