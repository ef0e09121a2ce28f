//! MAIL and RCPT parameters (RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8,
//! RFC 3461 DSN: RET, ENVID, NOTIFY, ORCPT, RFC 4954 AUTH) and xtext decoding.

/// Maximum decoded length of ENVID (RFC 3461 4.4).
pub const MAX_ENVID: usize = 100;
/// Maximum decoded length of ORCPT's address (RFC 3461 4.2: 500 characters).
pub const MAX_ORCPT: usize = 500;

/// Why a parameter list was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// The keyword is not one this server supports.
    #[error("unsupported parameter {0}")]
    Unknown(String),
    /// The keyword is known but its value is invalid.
    #[error("invalid value for {0}")]
    InvalidValue(&'static str),
    /// The same keyword appears twice.
    #[error("duplicate parameter {0}")]
    Duplicate(&'static str),
    /// NOTIFY=NEVER combined with other values (RFC 3461 4.1).
    #[error("NOTIFY=NEVER cannot be combined with other values")]
    NotifyNeverCombined,
    /// BODY=BINARYMIME is not offered.
    #[error("BINARYMIME is not supported")]
    BinaryMime,
}

/// Declared body type (RFC 6152).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyType {
    /// `BODY=7BIT`.
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// DSN `RET=` (RFC 3461 4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DsnRet {
    /// Return the full message.
    Full,
    /// Return headers only.
    Headers,
}

impl std::fmt::Display for DsnRet {
    /// The wire value: `FULL` or `HDRS`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DsnRet::Full => "FULL",
            DsnRet::Headers => "HDRS",
        })
    }
}

/// Parameters of a MAIL FROM command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailParams {
    /// Declared message size (`SIZE=`).
    pub size: Option<u64>,
    /// Declared body type (`BODY=`).
    pub body: Option<BodyType>,
    /// `SMTPUTF8` was given.
    pub smtputf8: bool,
    /// DSN `RET=`.
    pub ret: Option<DsnRet>,
    /// DSN `ENVID=`, xtext-decoded.
    pub envid: Option<String>,
    /// `AUTH=` submitter, xtext-decoded (`<>` when unknown).
    pub auth: Option<String>,
}

/// DSN `NOTIFY=` (RFC 3461 4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    /// `NEVER`: no DSN at all.
    pub never: bool,
    /// Notify on successful delivery.
    pub success: bool,
    /// Notify on failure.
    pub failure: bool,
    /// Notify on delay.
    pub delay: bool,
}

impl Notify {
    /// Whether nothing was asked (no `NOTIFY=` at all: the receiver's default applies).
    pub fn is_unset(&self) -> bool {
        !(self.never || self.success || self.failure || self.delay)
    }
}

impl std::fmt::Display for Notify {
    /// The wire value: `NEVER`, or the asked conditions in RFC 3461 order
    /// (`SUCCESS,FAILURE,DELAY`); empty when unset.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.never {
            return f.write_str("NEVER");
        }
        let asked = [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ];
        let mut first = true;
        for (on, word) in asked {
            if on {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(word)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Parameters of a RCPT TO command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// DSN `NOTIFY=`.
    pub notify: Option<Notify>,
    /// DSN `ORCPT=` as `"addr-type;decoded-address"`.
    pub orcpt: Option<String>,
}

/// Splits `KEY[=VALUE]` tokens separated by spaces.
fn tokens(s: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    s.split(' ')
        .filter(|t| !t.is_empty())
        .map(|t| match t.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (t, None),
        })
}

fn set_once<T>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), ParamError> {
    if slot.is_some() {
        return Err(ParamError::Duplicate(name));
    }
    *slot = Some(value);
    Ok(())
}

fn value<'a>(v: Option<&'a str>, name: &'static str) -> Result<&'a str, ParamError> {
    match v {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ParamError::InvalidValue(name)),
    }
}

/// A `SIZE=` value: digits only. A number too large for `u64` (a 23-digit value) is still a
/// size, just larger than any limit: it saturates, so the client gets `552 5.3.4` (too big)
/// rather than `555` (syntax).
fn size_value(v: &str) -> Result<u64, ParamError> {
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParamError::InvalidValue("SIZE"));
    }
    Ok(v.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// Parses the parameter text after the reverse-path.
pub fn parse_mail_params(s: &str) -> Result<MailParams, ParamError> {
    let mut p = MailParams::default();
    for (key, v) in tokens(s) {
        match key.to_ascii_uppercase().as_str() {
            "SIZE" => {
                let n = size_value(value(v, "SIZE")?)?;
                set_once(&mut p.size, n, "SIZE")?;
            }
            "BODY" => {
                let body = match value(v, "BODY")?.to_ascii_uppercase().as_str() {
                    "7BIT" => BodyType::SevenBit,
                    "8BITMIME" => BodyType::EightBitMime,
                    "BINARYMIME" => return Err(ParamError::BinaryMime),
                    _ => return Err(ParamError::InvalidValue("BODY")),
                };
                set_once(&mut p.body, body, "BODY")?;
            }
            "SMTPUTF8" => {
                if v.is_some() {
                    return Err(ParamError::InvalidValue("SMTPUTF8"));
                }
                if p.smtputf8 {
                    return Err(ParamError::Duplicate("SMTPUTF8"));
                }
                p.smtputf8 = true;
            }
            "RET" => {
                let ret = match value(v, "RET")?.to_ascii_uppercase().as_str() {
                    "FULL" => DsnRet::Full,
                    "HDRS" => DsnRet::Headers,
                    _ => return Err(ParamError::InvalidValue("RET")),
                };
                set_once(&mut p.ret, ret, "RET")?;
            }
            "ENVID" => {
                let id = decode_xtext(value(v, "ENVID")?)
                    .filter(|d| d.len() <= MAX_ENVID)
                    .ok_or(ParamError::InvalidValue("ENVID"))?;
                set_once(&mut p.envid, id, "ENVID")?;
            }
            "AUTH" => {
                let auth =
                    decode_xtext(value(v, "AUTH")?).ok_or(ParamError::InvalidValue("AUTH"))?;
                set_once(&mut p.auth, auth, "AUTH")?;
            }
            _ => return Err(ParamError::Unknown(truncate(key))),
        }
    }
    Ok(p)
}

/// Parses the parameter text after the forward-path.
pub fn parse_rcpt_params(s: &str) -> Result<RcptParams, ParamError> {
    let mut p = RcptParams::default();
    for (key, v) in tokens(s) {
        match key.to_ascii_uppercase().as_str() {
            "NOTIFY" => {
                let notify = parse_notify(value(v, "NOTIFY")?)?;
                set_once(&mut p.notify, notify, "NOTIFY")?;
            }
            "ORCPT" => {
                let v = value(v, "ORCPT")?;
                let (kind, addr) = v.split_once(';').ok_or(ParamError::InvalidValue("ORCPT"))?;
                let atom_ok = !kind.is_empty()
                    && kind
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                let decoded = decode_xtext(addr)
                    .filter(|d| atom_ok && !d.is_empty() && d.len() <= MAX_ORCPT)
                    .ok_or(ParamError::InvalidValue("ORCPT"))?;
                set_once(&mut p.orcpt, format!("{kind};{decoded}"), "ORCPT")?;
            }
            _ => return Err(ParamError::Unknown(truncate(key))),
        }
    }
    Ok(p)
}

fn parse_notify(v: &str) -> Result<Notify, ParamError> {
    let mut n = Notify::default();
    let mut count = 0;
    for item in v.split(',') {
        let flag = match item.to_ascii_uppercase().as_str() {
            "NEVER" => &mut n.never,
            "SUCCESS" => &mut n.success,
            "FAILURE" => &mut n.failure,
            "DELAY" => &mut n.delay,
            _ => return Err(ParamError::InvalidValue("NOTIFY")),
        };
        if *flag {
            return Err(ParamError::InvalidValue("NOTIFY"));
        }
        *flag = true;
        count += 1;
    }
    if n.never && count > 1 {
        return Err(ParamError::NotifyNeverCombined);
    }
    Ok(n)
}

fn truncate(key: &str) -> String {
    key.chars().take(32).collect()
}

/// Decodes RFC 3461 xtext: printable ASCII except `+` and `=`, with `+HH` hex escapes.
/// Returns `None` if the input is not valid xtext or does not decode to UTF-8.
pub fn decode_xtext(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hi = hex_val(hex[0])?;
                let lo = hex_val(hex[1])?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'=' => return None,
            c @ 33..=126 => {
                out.push(c);
                i += 1;
            }
            // RFC 6533 allows UTF-8 in utf-8-addr-xtext; accept non-ASCII as is.
            c if c >= 0x80 => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mail_params() {
        let p = parse_mail_params("size=100 BODY=8bitmime SMTPUTF8 RET=HDRS ENVID=a+2Bb AUTH=<>")
            .unwrap();
        assert_eq!(p.size, Some(100));
        assert_eq!(p.body, Some(BodyType::EightBitMime));
        assert!(p.smtputf8);
        assert_eq!(p.ret, Some(DsnRet::Headers));
        assert_eq!(p.envid.as_deref(), Some("a+b"));
        assert_eq!(p.auth.as_deref(), Some("<>"));
        assert_eq!(parse_mail_params("").unwrap(), MailParams::default());
        assert_eq!(
            parse_mail_params("BODY=BINARYMIME"),
            Err(ParamError::BinaryMime)
        );
        assert!(matches!(
            parse_mail_params("FOO=1"),
            Err(ParamError::Unknown(_))
        ));
        assert!(parse_mail_params("SIZE=abc").is_err());
        assert!(parse_mail_params("SIZE=").is_err());
        assert_eq!(
            parse_mail_params("SIZE=99999999999999999999999")
                .unwrap()
                .size,
            Some(u64::MAX)
        );
        assert_eq!(
            parse_mail_params("SIZE=18446744073709551616").unwrap().size,
            Some(u64::MAX)
        );
        assert_eq!(
            parse_mail_params("SIZE=0000000000000000000000012")
                .unwrap()
                .size,
            Some(12)
        );
        assert!(parse_mail_params("SIZE=-1").is_err());
        assert!(parse_mail_params("SIZE=1e9").is_err());
        assert!(parse_mail_params("SIZE=1 SIZE=2").is_err());
        assert!(parse_mail_params("SMTPUTF8=yes").is_err());
        assert!(parse_mail_params("ENVID=a=b").is_err());
    }

    #[test]
    fn rcpt_params() {
        let p = parse_rcpt_params("NOTIFY=SUCCESS,delay ORCPT=rfc822;a+40b.c").unwrap();
        assert_eq!(
            p.notify,
            Some(Notify {
                success: true,
                delay: true,
                ..Notify::default()
            })
        );
        assert_eq!(p.orcpt.as_deref(), Some("rfc822;a@b.c"));
        assert_eq!(
            parse_rcpt_params("NOTIFY=NEVER,SUCCESS"),
            Err(ParamError::NotifyNeverCombined)
        );
        assert!(
            parse_rcpt_params("NOTIFY=NEVER")
                .unwrap()
                .notify
                .unwrap()
                .never
        );
        assert!(parse_rcpt_params("NOTIFY=SOMETIMES").is_err());
        assert!(parse_rcpt_params("ORCPT=nosemicolon").is_err());
        assert!(parse_rcpt_params("SIZE=1").is_err());
    }

    #[test]
    fn xtext() {
        assert_eq!(decode_xtext("abc+20+3D").as_deref(), Some("abc ="));
        assert_eq!(decode_xtext("+2"), None);
        assert_eq!(decode_xtext("+GG"), None);
        assert_eq!(decode_xtext("a b"), None);
        assert_eq!(decode_xtext("+FF"), None);
    }
}
