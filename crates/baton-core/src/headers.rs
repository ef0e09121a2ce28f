//! Header handling: trace fields (`Received:`), `Date:` and `Message-ID:` values, splitting
//! the header block from the body (the author fields are [`crate::authors`]'s).
//!
//! Messages are CRLF-terminated (as queued); bare LF is tolerated when scanning.

use std::net::IpAddr;

use time::OffsetDateTime;

/// Longest value of one element (name, address, id) placed in a generated header line, so a
/// folded line can never exceed 998 octets.
const MAX_ELEMENT: usize = 255;

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// An RFC 5322 `date-time`, e.g. `Tue, 03 Mar 2026 14:05:09 +0000`, in `at`'s offset.
pub fn rfc5322_date(at: OffsetDateTime) -> String {
    let day = DAYS[usize::from(at.weekday().number_days_from_monday())];
    let month = MONTHS[usize::from(u8::from(at.month()) - 1)];
    let offset = at.offset();
    let total_min = offset.whole_minutes();
    let sign = if total_min < 0 { '-' } else { '+' };
    let abs = total_min.unsigned_abs();
    format!(
        "{day}, {:02} {month} {:04} {:02}:{:02}:{:02} {sign}{:02}{:02}",
        at.day(),
        at.year(),
        at.hour(),
        at.minute(),
        at.second(),
        abs / 60,
        abs % 60
    )
}

/// Keep only characters that are safe inside a trace token: printable ASCII except the
/// characters that would change the field's structure (`(`, `)`, `;`, `<`, `>`, `\`, `"`);
/// anything else becomes `_`. Bounded to [`MAX_ELEMENT`] characters; empty becomes `unknown`.
fn token(s: &str) -> String {
    let t: String = s
        .chars()
        .take(MAX_ELEMENT)
        .map(|c| {
            if c.is_ascii_graphic() && !"();<>\\\"".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() { "unknown".into() } else { t }
}

/// RFC 5321 address literal of an IP address: `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
pub fn address_literal(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    }
}

/// An RFC 5321 §4.4 `Received:` trace field, folded (one clause per line), CRLF-terminated.
///
/// ```text
/// Received: from <helo> (<address literal>)
///     (using <tls_cipher>)
///     by <by_host> with <with_proto> id <queue_id>
///     for <rcpt>; <date>
/// ```
/// `with_proto` is `ESMTP`, `ESMTPS`, `ESMTPA` or `ESMTPSA` (RFC 3848). Every element is
/// sanitized and bounded, so no line exceeds 998 octets and no element can inject structure.
#[allow(clippy::too_many_arguments)]
pub fn received_header(
    from_helo: &str,
    client_ip: IpAddr,
    by_host: &str,
    with_proto: &str,
    queue_id: &str,
    for_rcpt: Option<&str>,
    tls_cipher: Option<&str>,
    at: OffsetDateTime,
) -> String {
    let mut h = format!(
        "Received: from {} ({})\r\n",
        token(from_helo),
        address_literal(client_ip)
    );
    if let Some(cipher) = tls_cipher {
        h.push_str(&format!("\t(using {})\r\n", token(cipher)));
    }
    h.push_str(&format!(
        "\tby {} with {} id {}\r\n",
        token(by_host),
        token(with_proto),
        token(queue_id)
    ));
    match for_rcpt {
        Some(rcpt) => h.push_str(&format!(
            "\tfor <{}>; {}\r\n",
            token(rcpt),
            rfc5322_date(at)
        )),
        None => h.push_str(&format!("\t; {}\r\n", rfc5322_date(at))),
    }
    h
}

/// A `Message-ID:` value, `<queue_id@host>` (angle brackets included). Unique because the
/// queue id is.
pub fn message_id(queue_id: &str, host: &str) -> String {
    format!("<{}@{}>", token(queue_id), token(host))
}

/// Split a message into its header block and body.
///
/// `headers` ends with the line break of its last field (the empty separator line is in
/// neither slice); `rest` starts after the separator. Without a separator the whole input is
/// the header block. To insert fields at the end of the header block, write
/// `headers + fields + "\r\n" + rest`.
pub fn split_headers(body: &[u8]) -> (&[u8], &[u8]) {
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| pos + i + 1);
        let line = &body[pos..end];
        if line == b"\r\n" || line == b"\n" {
            return (&body[..pos], &body[end..]);
        }
        pos = end;
    }
    (body, &[])
}

/// Names of the header fields in a header block (continuation lines skipped), as written.
pub(crate) fn field_names(headers: &[u8]) -> impl Iterator<Item = &[u8]> {
    headers
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty() && line[0] != b' ' && line[0] != b'\t')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            Some(line[..colon].trim_ascii_end())
        })
}

/// The values of every field `name` in a header block, unfolded and trimmed, each cut at
/// 998 bytes (a line's limit); lossy UTF-8.
pub fn field_values(headers: &[u8], name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    for line in headers.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            if let Some(v) = current.as_mut() {
                v.push(b' ');
                v.extend_from_slice(line.trim_ascii());
            }
            continue;
        }
        if let Some(v) = current.take() {
            out.push(v);
        }
        if let Some(colon) = line.iter().position(|&b| b == b':')
            && line[..colon]
                .trim_ascii_end()
                .eq_ignore_ascii_case(name.as_bytes())
        {
            current = Some(line[colon + 1..].trim_ascii().to_vec());
        }
    }
    out.extend(current);
    out.into_iter()
        .map(|mut v| {
            v.truncate(998);
            String::from_utf8_lossy(&v).trim().to_owned()
        })
        .collect()
}

/// The value of tag `tag` in a tag list (`v=1; a=rsa-sha256; d=example.com; s=s1; ...`).
pub fn tag_value<'a>(list: &'a str, tag: &str) -> Option<&'a str> {
    list.split(';').find_map(|t| {
        let (k, v) = t.split_once('=')?;
        (k.trim() == tag).then(|| v.trim())
    })
}

/// `(missing Message-ID, missing Date)`, looking only at the header block.
pub fn needs_message_id_and_date(body: &[u8]) -> (bool, bool) {
    let (headers, _) = split_headers(body);
    let (mut has_id, mut has_date) = (false, false);
    for name in field_names(headers) {
        has_id |= name.eq_ignore_ascii_case(b"message-id");
        has_date |= name.eq_ignore_ascii_case(b"date");
    }
    (!has_id, !has_date)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;
    use time::UtcOffset;

    /// 2026-03-03 14:05:09 UTC.
    pub(crate) fn at() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_772_546_709).unwrap()
    }

    #[test]
    fn field_values_unfold_and_find_every_occurrence() {
        let h = b"DKIM-Signature: v=1; d=a.example;\r\n\ts=s1; b=xyz\r\nSubject: x\r\n\
                  Message-ID:\r\n <id@host>\r\ndkim-signature: d=b.example; s=s2\r\n";
        let sigs = field_values(h, "DKIM-Signature");
        assert_eq!(sigs, ["v=1; d=a.example; s=s1; b=xyz", "d=b.example; s=s2"]);
        assert_eq!(tag_value(&sigs[0], "s"), Some("s1"));
        assert_eq!(tag_value(&sigs[1], "d"), Some("b.example"));
        assert_eq!(tag_value(&sigs[1], "x"), None);
        assert_eq!(field_values(h, "message-id"), ["<id@host>"]);
        assert!(field_values(h, "From").is_empty());
        let long = format!("X: {}\r\n", "a".repeat(5000));
        assert_eq!(field_values(long.as_bytes(), "x")[0].len(), 998);
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(at()), "Tue, 03 Mar 2026 14:05:09 +0000");
        assert_eq!(
            rfc5322_date(
                OffsetDateTime::from_unix_timestamp(946_704_599)
                    .unwrap()
                    .to_offset(UtcOffset::from_hms(-5, -30, 0).unwrap())
            ),
            "Fri, 31 Dec 1999 23:59:59 -0530"
        );
        let parsed = MessageParser::new()
            .parse(b"Date: Tue, 03 Mar 2026 14:05:09 +0100\r\n\r\n")
            .unwrap();
        assert_eq!(parsed.date().unwrap().to_timestamp(), 1_772_543_109);
    }

    #[test]
    fn received() {
        let at = at();
        let h = received_header(
            "client.example",
            "192.0.2.1".parse().unwrap(),
            "mx.baton.dev",
            "ESMTPS",
            "Q123",
            Some("bob@example.org"),
            Some("TLS_AES_128_GCM_SHA256"),
            at,
        );
        assert_eq!(
            h,
            "Received: from client.example ([192.0.2.1])\r\n\t(using TLS_AES_128_GCM_SHA256)\r\n\
             \tby mx.baton.dev with ESMTPS id Q123\r\n\tfor <bob@example.org>; \
             Tue, 03 Mar 2026 14:05:09 +0000\r\n"
        );
        let h = received_header(
            "evil)\r\nX-Injected: 1",
            "2001:db8::1".parse().unwrap(),
            "mx",
            "ESMTP",
            "Q",
            None,
            None,
            at,
        );
        assert!(h.starts_with("Received: from evil___X-Injected:_1 ([IPv6:2001:db8::1])\r\n"));
        assert!(h.ends_with("\t; Tue, 03 Mar 2026 14:05:09 +0000\r\n"));
        let long = "a".repeat(5000);
        let h = received_header(
            &long,
            "::ffff:10.0.0.1".parse().unwrap(),
            &long,
            &long,
            &long,
            Some(&long),
            Some(&long),
            at,
        );
        assert!(h.contains("([10.0.0.1])"));
        for line in h.split("\r\n") {
            assert!(line.len() <= 998 && !line.contains('\n') && !line.contains('\r'));
        }
        let msg = format!("{h}Subject: x\r\n\r\nbody\r\n");
        let parsed = MessageParser::new().parse(msg.as_bytes()).unwrap();
        assert_eq!(parsed.subject(), Some("x"));
    }

    #[test]
    fn message_ids() {
        assert_eq!(message_id("Q1", "mx.example"), "<Q1@mx.example>");
        let m = format!("Message-ID: {}\r\n\r\n", message_id("Q1", "mx.example"));
        let parsed = MessageParser::new().parse(m.as_bytes()).unwrap();
        assert_eq!(parsed.message_id(), Some("Q1@mx.example"));
    }

    #[test]
    fn split() {
        let m = b"A: 1\r\n folded\r\nB: 2\r\n\r\nbody\r\n\r\nmore";
        let (h, r) = split_headers(m);
        assert_eq!(h, b"A: 1\r\n folded\r\nB: 2\r\n");
        assert_eq!(r, b"body\r\n\r\nmore");
        assert_eq!(split_headers(b"A: 1\r\n"), (&b"A: 1\r\n"[..], &b""[..]));
        assert_eq!(split_headers(b"\r\nbody"), (&b""[..], &b"body"[..]));
        assert_eq!(
            split_headers(b"A: 1\n\nbody"),
            (&b"A: 1\n"[..], &b"body"[..])
        );
        assert_eq!(split_headers(b""), (&b""[..], &b""[..]));
    }

    #[test]
    fn missing_fields() {
        assert_eq!(
            needs_message_id_and_date(b"Subject: x\r\n\r\n"),
            (true, true)
        );
        assert_eq!(
            needs_message_id_and_date(b"message-id: <a@b>\r\nDATE : x\r\n\r\n"),
            (false, false)
        );
        // Only the header block counts, and continuation lines are not fields.
        assert_eq!(
            needs_message_id_and_date(b"Subject: x\r\n Date: y\r\n\r\nMessage-ID: <a@b>\r\n"),
            (true, true)
        );
        assert_eq!(
            needs_message_id_and_date(b"X-Date: 1\r\n\r\n"),
            (true, true)
        );
    }
}
