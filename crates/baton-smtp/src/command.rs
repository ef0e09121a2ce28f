//! SMTP command lines (RFC 5321 section 4.1) parsed into [`Command`].
//!
//! [`parse_command`] takes one command line, with or without its CRLF. Anything that is not
//! a well-formed command yields the reply to send: bare LF, bare CR, NUL or invalid UTF-8 are
//! syntax errors (500 5.5.2) and are never executed.

use crate::address::{self, AddressError, ForwardPath, ReversePath};
use crate::catalogue;
use crate::params::{self, MailParams, ParamError, RcptParams};
use crate::reply::{EnhancedStatus, Reply};

/// Maximum command line length in octets, including CRLF (RFC 5321 4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;

/// A parsed SMTP command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain`.
    Ehlo(String),
    /// `HELO domain`.
    Helo(String),
    /// `MAIL FROM:<path> [params]`.
    Mail {
        /// The reverse-path.
        reverse_path: ReversePath,
        /// Parsed parameters.
        params: MailParams,
    },
    /// `RCPT TO:<path> [params]`.
    Rcpt {
        /// The forward-path.
        forward_path: ForwardPath,
        /// Parsed parameters.
        params: RcptParams,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// Chunk size in octets.
        size: u64,
        /// `LAST` was given.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY string`.
    Vrfy,
    /// `HELP [string]`.
    Help,
    /// `STARTTLS`.
    StartTls,
    /// `AUTH mechanism [initial-response]`.
    Auth {
        /// Mechanism name in upper case.
        mechanism: String,
        /// The initial response, still base64-encoded (`=` means empty).
        initial_response: Option<String>,
    },
}

impl Command {
    /// A bounded label naming the command (for metrics).
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Ehlo(_) => "EHLO",
            Command::Helo(_) => "HELO",
            Command::Mail { .. } => "MAIL",
            Command::Rcpt { .. } => "RCPT",
            Command::Data => "DATA",
            Command::Bdat { .. } => "BDAT",
            Command::Rset => "RSET",
            Command::Noop => "NOOP",
            Command::Quit => "QUIT",
            Command::Vrfy => "VRFY",
            Command::Help => "HELP",
            Command::StartTls => "STARTTLS",
            Command::Auth { .. } => "AUTH",
        }
    }
}

fn syntax(text: &str) -> Reply {
    catalogue::syntax_error(text)
}

fn args_error(text: &str) -> Reply {
    catalogue::bad_arguments(text)
}

/// Strips the line terminator and checks the line contains no CR, LF or NUL and is UTF-8.
pub fn clean_line(line: &[u8]) -> Result<&str, Reply> {
    let body = match line.strip_suffix(b"\n") {
        Some(rest) => rest
            .strip_suffix(b"\r")
            .ok_or_else(|| syntax("Error: bare LF in command line"))?,
        None => line,
    };
    if body.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(syntax("Error: bare CR or LF in command line"));
    }
    if body.contains(&0) {
        return Err(syntax("Error: NUL in command line"));
    }
    std::str::from_utf8(body).map_err(|_| syntax("Error: invalid UTF-8 in command line"))
}

/// Returns the command verb in upper case, if the line starts with one (used to spot BDAT).
pub fn verb_of(line: &[u8]) -> String {
    line.iter()
        .take_while(|b| b.is_ascii_alphabetic())
        .take(16)
        .map(|b| b.to_ascii_uppercase() as char)
        .collect()
}

/// Parses one command line (with or without CRLF).
pub fn parse_command(line: &[u8]) -> Result<Command, Reply> {
    if line.len() > MAX_COMMAND_LINE {
        return Err(catalogue::line_too_long());
    }
    let text = clean_line(line)?;
    let (verb, arg) = match text.split_once(' ') {
        Some((v, a)) => (v, Some(a)),
        None => (text, None),
    };
    let arg_text = arg.map(str::trim).filter(|a| !a.is_empty());
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => hello(arg_text, "EHLO").map(Command::Ehlo),
        "HELO" => hello(arg_text, "HELO").map(Command::Helo),
        "MAIL" => parse_mail(arg.unwrap_or("")),
        "RCPT" => parse_rcpt(arg.unwrap_or("")),
        "DATA" => no_args(arg_text, Command::Data, "DATA"),
        "BDAT" => parse_bdat(arg.unwrap_or("")),
        "RSET" => no_args(arg_text, Command::Rset, "RSET"),
        "QUIT" => no_args(arg_text, Command::Quit, "QUIT"),
        "STARTTLS" => no_args(arg_text, Command::StartTls, "STARTTLS"),
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" => match arg_text {
            Some(_) => Ok(Command::Vrfy),
            None => Err(args_error("Syntax: VRFY address")),
        },
        "AUTH" => parse_auth(arg_text),
        "EXPN" | "TURN" | "ETRN" | "ATRN" | "SEND" | "SOML" | "SAML" => {
            Err(catalogue::not_implemented())
        }
        _ => Err(syntax("Error: command not recognized")),
    }
}

fn hello(arg: Option<&str>, verb: &str) -> Result<String, Reply> {
    match arg {
        Some(a) => Ok(a.to_string()),
        None => Err(args_error(&format!("Syntax: {verb} hostname"))),
    }
}

fn no_args(arg: Option<&str>, cmd: Command, verb: &str) -> Result<Command, Reply> {
    match arg {
        None => Ok(cmd),
        Some(_) => Err(args_error(&format!("Syntax: {verb} takes no arguments"))),
    }
}

/// Strips `keyword` (case-insensitive, e.g. `FROM:`) and one optional space before the path.
fn path_arg<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = &arg[keyword.len()..];
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

fn param_reply(e: &ParamError) -> Reply {
    match e {
        ParamError::NotifyNeverCombined => args_error("NOTIFY=NEVER cannot be combined"),
        _ => catalogue::bad_parameter(e),
    }
}

fn address_reply(status: EnhancedStatus, what: &str, e: &AddressError) -> Reply {
    catalogue::bad_address(status, what, e)
}

fn parse_mail(arg: &str) -> Result<Command, Reply> {
    let path = path_arg(arg, "FROM:").ok_or_else(|| args_error("Syntax: MAIL FROM:<address>"))?;
    let (reverse_path, rest) = address::parse_reverse_path(path)
        .map_err(|e| address_reply(EnhancedStatus::new(5, 1, 7), "sender", &e))?;
    let params = params::parse_mail_params(rest).map_err(|e| param_reply(&e))?;
    Ok(Command::Mail {
        reverse_path,
        params,
    })
}

fn parse_rcpt(arg: &str) -> Result<Command, Reply> {
    let path = path_arg(arg, "TO:").ok_or_else(|| args_error("Syntax: RCPT TO:<address>"))?;
    let (forward_path, rest) = address::parse_forward_path(path)
        .map_err(|e| address_reply(EnhancedStatus::new(5, 1, 3), "recipient", &e))?;
    let params = params::parse_rcpt_params(rest).map_err(|e| param_reply(&e))?;
    Ok(Command::Rcpt {
        forward_path,
        params,
    })
}

fn parse_bdat(arg: &str) -> Result<Command, Reply> {
    let bad = || args_error("Syntax: BDAT size [LAST]");
    let mut parts = arg.split(' ');
    let size = parts.next().ok_or_else(bad)?;
    if size.is_empty() || size.len() > 20 || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let size = size.parse::<u64>().map_err(|_| bad())?;
    let last = match parts.next() {
        None => false,
        Some(l) if l.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(bad()),
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(Command::Bdat { size, last })
}

fn parse_auth(arg: Option<&str>) -> Result<Command, Reply> {
    let arg = arg.ok_or_else(|| args_error("Syntax: AUTH mechanism"))?;
    let mut parts = arg.split(' ').filter(|p| !p.is_empty());
    let mechanism = parts.next().unwrap_or("").to_ascii_uppercase();
    let initial_response = parts.next().map(str::to_string);
    if parts.next().is_some() {
        return Err(args_error("Syntax: AUTH mechanism [initial-response]"));
    }
    Ok(Command::Auth {
        mechanism,
        initial_response,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn code(line: &[u8]) -> (u16, String) {
        let r = parse_command(line).unwrap_err();
        (r.code, r.status.map(|s| s.to_string()).unwrap_or_default())
    }

    #[test]
    fn parses_commands() {
        assert_eq!(
            parse_command(b"ehlo x.org\r\n").unwrap(),
            Command::Ehlo("x.org".into())
        );
        assert_eq!(parse_command(b"QUIT\r\n").unwrap(), Command::Quit);
        assert_eq!(parse_command(b"NOOP hi").unwrap(), Command::Noop);
        assert_eq!(
            parse_command(b"BDAT 10 last\r\n").unwrap(),
            Command::Bdat {
                size: 10,
                last: true
            }
        );
        assert!(matches!(
            parse_command(b"MAIL FROM: <a@b.c> SIZE=5\r\n").unwrap(),
            Command::Mail {
                params: MailParams { size: Some(5), .. },
                ..
            }
        ));
        assert!(matches!(
            parse_command(b"rcpt to:<postmaster>\r\n").unwrap(),
            Command::Rcpt {
                forward_path: ForwardPath::Postmaster,
                ..
            }
        ));
        assert_eq!(
            parse_command(b"AUTH plain dGVzdA==\r\n").unwrap(),
            Command::Auth {
                mechanism: "PLAIN".into(),
                initial_response: Some("dGVzdA==".into())
            }
        );
    }

    #[test]
    fn rejects_bad_lines() {
        assert_eq!(code(b"NOOP\n"), (500, "5.5.2".into()));
        assert_eq!(code(b"NO\rOP\r\n"), (500, "5.5.2".into()));
        assert_eq!(code(b"NOOP \0\r\n"), (500, "5.5.2".into()));
        assert_eq!(code(b"NOOP \xff\r\n"), (500, "5.5.2".into()));
        assert_eq!(code(b"FOO\r\n"), (500, "5.5.2".into()));
        assert_eq!(code(b"EXPN x\r\n"), (502, "5.5.1".into()));
        assert_eq!(code(b"EHLO\r\n"), (501, "5.5.4".into()));
        assert_eq!(code(b"EHLO  \r\n"), (501, "5.5.4".into()));
        assert_eq!(code(b"STARTTLS now\r\n"), (501, "5.5.4".into()));
        assert_eq!(code(b"MAIL FROM:a@b\r\n"), (501, "5.1.7".into()));
        assert_eq!(code(b"MAIL FROM:<a@b@c>\r\n"), (501, "5.1.7".into()));
        assert_eq!(code(b"RCPT TO:<>\r\n"), (501, "5.1.3".into()));
        assert_eq!(code(b"MAIL TO:<a@b>\r\n"), (501, "5.5.4".into()));
        assert_eq!(code(b"MAIL FROM:<a@b> FOO=1\r\n"), (555, "5.5.4".into()));
        assert_eq!(
            code(b"RCPT TO:<a@b> NOTIFY=NEVER,DELAY\r\n"),
            (501, "5.5.4".into())
        );
        assert_eq!(code(b"BDAT x\r\n"), (501, "5.5.4".into()));
        assert_eq!(code(b"BDAT 1 LAST x\r\n"), (501, "5.5.4".into()));
        assert_eq!(
            code(b"BDAT 99999999999999999999\r\n"),
            (501, "5.5.4".into())
        );
        let long = [b"NOOP ".as_slice(), &[b'a'; 600], b"\r\n"].concat();
        assert_eq!(code(&long), (500, "5.5.6".into()));
        assert_eq!(verb_of(b"bdat 5x"), "BDAT");
    }
}
