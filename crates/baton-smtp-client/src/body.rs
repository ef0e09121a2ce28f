//! Message body framing: line-ending normalisation, DATA dot-stuffing (RFC 5321 4.5.2) and
//! BDAT chunking (RFC 3030).
//!
//! Callers hand over CRLF content. A bare CR or bare LF is not legal on the wire, so any that
//! slips through is normalised to CRLF rather than emitted; a non-empty body that does not end
//! with CRLF gets one. The same normalisation applies to both DATA and BDAT, so a receiver sees
//! identical bytes whichever path was used.

use std::borrow::Cow;

/// Largest BDAT chunk sent.
pub const MAX_CHUNK: usize = 1024 * 1024;

/// What one pass over a body found, so a message is looked at once however it is sent: its
/// SIZE, its BDAT content and its DATA content all follow from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    /// No normalisation needed: every CR is followed by LF, every LF is preceded by CR, and
    /// the body is empty or ends with CRLF.
    clean: bool,
    /// A line starts with `.` (meaningful when `clean`).
    dot_line: bool,
}

impl Shape {
    /// Looks only at the line breaks (`memchr`), so a clean body — what the ingress queues —
    /// costs a few instructions per line, not per byte.
    pub(crate) fn of(body: &[u8]) -> Shape {
        let mut shape = Shape {
            clean: body.is_empty() || body.ends_with(b"\r\n"),
            dot_line: body.first() == Some(&b'.'),
        };
        if !shape.clean {
            return shape;
        }
        for i in memchr::memchr2_iter(b'\r', b'\n', body) {
            if body.get(i) == Some(&b'\r') {
                if body.get(i + 1) != Some(&b'\n') {
                    shape.clean = false;
                    break;
                }
            } else if i == 0 || body.get(i - 1) != Some(&b'\r') {
                shape.clean = false;
                break;
            } else if body.get(i + 1) == Some(&b'.') {
                shape.dot_line = true;
            }
        }
        shape
    }

    /// The body as it goes into a BDAT chunk: normalised, not dot-stuffed.
    pub(crate) fn normalise(self, body: &[u8]) -> Cow<'_, [u8]> {
        if self.clean {
            Cow::Borrowed(body)
        } else {
            Cow::Owned(encode(body, false))
        }
    }

    /// The body as it goes after a 354: normalised and dot-stuffed, without the terminating
    /// [`DATA_END`]. A clean body in which no line starts with `.` (most messages) is
    /// borrowed, so the worker sends it without copying it.
    pub(crate) fn data_content(self, body: &[u8]) -> Cow<'_, [u8]> {
        if !self.clean {
            Cow::Owned(encode(body, true))
        } else if self.dot_line {
            Cow::Owned(stuff_clean(body))
        } else {
            Cow::Borrowed(body)
        }
    }

    /// Size in octets of the normalised message (what SIZE= declares), without building it.
    pub(crate) fn message_size(self, body: &[u8]) -> u64 {
        if self.clean {
            body.len() as u64
        } else {
            // Cheap enough: only reached for malformed input.
            encode(body, false).len() as u64
        }
    }
}

/// What ends the content after a 354 (RFC 5321 4.1.1.4).
pub(crate) const DATA_END: &[u8] = b".\r\n";

/// Dot-stuffing of a clean body (see [`Shape`]): whole lines are copied with `memcpy`, and a
/// `.` is inserted where a line starts with one (`\n.` in a clean body, or a leading `.`).
/// Same bytes as `encode(body, true)` (property-tested), an order of magnitude fewer instructions
/// for large messages.
fn stuff_clean(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    if body.first() == Some(&b'.') {
        out.push(b'.');
    }
    let mut start = 0;
    for i in memchr::memmem::find_iter(body, b"\n.") {
        out.extend_from_slice(body.get(start..=i).unwrap_or_default());
        out.push(b'.');
        start = i + 1;
    }
    out.extend_from_slice(body.get(start..).unwrap_or_default());
    out
}

/// One pass over `body`: CR, LF or CRLF become CRLF; with `dot_stuff`, a line starting with `.`
/// gets another `.`; a non-empty body is terminated with CRLF.
fn encode(body: &[u8], dot_stuff: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 64 + 8);
    let mut at_line_start = true;
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        i += 1;
        match b {
            b'\r' => {
                if body.get(i) == Some(&b'\n') {
                    i += 1;
                }
                out.extend_from_slice(b"\r\n");
                at_line_start = true;
            }
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                at_line_start = true;
            }
            _ => {
                if at_line_start && dot_stuff && b == b'.' {
                    out.push(b'.');
                }
                out.push(b);
                at_line_start = false;
            }
        }
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn is_clean(body: &[u8]) -> bool {
        Shape::of(body).clean
    }

    fn normalise(body: &[u8]) -> Cow<'_, [u8]> {
        Shape::of(body).normalise(body)
    }

    fn data_content(body: &[u8]) -> Cow<'_, [u8]> {
        Shape::of(body).data_content(body)
    }

    fn message_size(body: &[u8]) -> u64 {
        Shape::of(body).message_size(body)
    }

    /// Everything that follows a 354: the content and its terminator.
    fn data_payload(body: &[u8]) -> Vec<u8> {
        let mut out = data_content(body).into_owned();
        out.extend_from_slice(DATA_END);
        out
    }

    /// The byte-wise reference: what `is_clean` means, one byte at a time.
    fn is_clean_bytewise(body: &[u8]) -> bool {
        (body.is_empty() || body.ends_with(b"\r\n"))
            && body.iter().enumerate().all(|(i, &b)| match b {
                b'\r' => body.get(i + 1) == Some(&b'\n'),
                b'\n' => i > 0 && body.get(i - 1) == Some(&b'\r'),
                _ => true,
            })
    }

    proptest! {
        /// The fast paths agree with the one-pass encoder on any input, including bodies made
        /// mostly of dots, CRs and LFs.
        #[test]
        fn fast_paths_match_the_reference(body in proptest::collection::vec(
            prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'a'), any::<u8>()], 0..300)
        ) {
            prop_assert_eq!(is_clean(&body), is_clean_bytewise(&body));
            let mut want = encode(&body, true);
            want.extend_from_slice(b".\r\n");
            prop_assert_eq!(data_payload(&body), want);
            prop_assert_eq!(normalise(&body).into_owned(), encode(&body, false));
            prop_assert_eq!(message_size(&body), encode(&body, false).len() as u64);
        }

        /// Clean bodies (what the ingress queues) built from CRLF lines, dots at line starts
        /// included, take the fast path and stuff exactly the lines that start with a dot.
        #[test]
        fn clean_bodies_stuff_dot_lines(lines in proptest::collection::vec("[.a-z ]{0,6}", 0..40)) {
            let body: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\r\n").into_bytes()).collect();
            prop_assert!(is_clean(&body));
            let want: Vec<u8> = lines
                .iter()
                .flat_map(|l| {
                    let dot = if l.starts_with('.') { "." } else { "" };
                    format!("{dot}{l}\r\n").into_bytes()
                })
                .chain(b".\r\n".iter().copied())
                .collect();
            prop_assert_eq!(data_payload(&body), want);
        }
    }

    #[test]
    fn clean_body_is_borrowed() {
        let body = b"Subject: x\r\n\r\nhello\r\n";
        assert!(matches!(normalise(body), Cow::Borrowed(_)));
        assert!(matches!(normalise(b""), Cow::Borrowed(_)));
        assert!(matches!(data_content(body), Cow::Borrowed(_)));
        assert!(matches!(data_content(b"a.b\r\n"), Cow::Borrowed(_)));
        // A line starting with a dot needs stuffing, so a copy.
        assert!(matches!(data_content(b"a\r\n.b\r\n"), Cow::Owned(_)));
        assert!(matches!(data_content(b".b\r\n"), Cow::Owned(_)));
        assert_eq!(message_size(body), body.len() as u64);
    }

    #[test]
    fn dot_stuffing_leading_dots() {
        let payload = data_payload(b".hidden\r\nmid.dle\r\n..two\r\n");
        assert_eq!(payload, b"..hidden\r\nmid.dle\r\n...two\r\n.\r\n");
    }

    #[test]
    fn line_of_only_a_dot() {
        assert_eq!(data_payload(b"a\r\n.\r\nb\r\n"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(data_payload(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(data_payload(b"."), b"..\r\n.\r\n");
    }

    #[test]
    fn body_without_trailing_crlf() {
        assert_eq!(data_payload(b"a\r\nb"), b"a\r\nb\r\n.\r\n");
        assert_eq!(normalise(b"a\r\nb").as_ref(), b"a\r\nb\r\n");
        assert_eq!(message_size(b"a\r\nb"), 6);
    }

    #[test]
    fn empty_body() {
        assert_eq!(data_payload(b""), b".\r\n");
        assert_eq!(normalise(b"").as_ref(), b"");
    }

    #[test]
    fn bare_lf_and_cr_become_crlf() {
        assert_eq!(normalise(b"a\nb\rc\r\n").as_ref(), b"a\r\nb\r\nc\r\n");
        assert_eq!(data_payload(b"a\n.b\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(data_payload(b"a\r\r\nb"), b"a\r\n\r\nb\r\n.\r\n");
        assert_eq!(normalise(b"\n\n").as_ref(), b"\r\n\r\n");
        assert_eq!(message_size(b"a\nb\n"), 6);
    }

    #[test]
    fn stuffing_only_applies_at_line_start_after_normalisation() {
        // A dot after a bare CR starts a new line once normalised.
        assert_eq!(data_payload(b"x\r.y\r\n"), b"x\r\n..y\r\n.\r\n");
    }
}
