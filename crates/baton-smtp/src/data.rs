//! Message content framing: the incremental DATA decoder (RFC 5321 4.1.1.4, 4.5.2) and the
//! BDAT chunk accumulator (RFC 3030).
//!
//! Only `CRLF "." CRLF` ends DATA. A bare CR or bare LF anywhere in the content is recorded
//! (the session refuses such messages: SMTP smuggling) and never acts as a line end, so
//! `\n.\n`, `\r\n.\n`, `\n.\r\n` and `\r\n.\r\r\n` are plain content. Both receivers stop
//! buffering once the size cap is exceeded but keep scanning, so memory stays bounded by the cap.

/// What a finished DATA or BDAT body turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyOutcome {
    /// The content (dot-unstuffed for DATA), empty if it overflowed or was discarded.
    pub body: Vec<u8>,
    /// Total content size seen, including anything not buffered.
    pub size: u64,
    /// The content exceeded the cap.
    pub overflow: bool,
    /// A bare CR or bare LF occurred.
    pub bare_eol: bool,
    /// [`DataReceiver::discard`] / [`BdatReceiver::discard`] was called.
    pub discarded: bool,
}

/// Shared buffering with a cap.
#[derive(Debug)]
struct Sink {
    body: Vec<u8>,
    cap: usize,
    size: u64,
    overflow: bool,
    discarded: bool,
}

/// Capacity a body buffer starts with: a typical transactional message fits without a single
/// reallocation (growing from empty took six for 2 KiB: issue 17's profile).
const INITIAL_BODY: usize = 4096;

impl Sink {
    fn new(cap: usize) -> Sink {
        Sink {
            body: Vec::with_capacity(cap.min(INITIAL_BODY)),
            cap,
            size: 0,
            overflow: false,
            discarded: false,
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len() as u64);
        if self.overflow || self.discarded {
            return;
        }
        if self.body.len() + bytes.len() > self.cap {
            self.overflow = true;
            self.body = Vec::new();
            return;
        }
        self.body.extend_from_slice(bytes);
    }

    fn discard(&mut self) {
        self.discarded = true;
        self.body = Vec::new();
    }

    fn finish(self, bare_eol: bool) -> BodyOutcome {
        BodyOutcome {
            body: self.body,
            size: self.size,
            overflow: self.overflow,
            bare_eol,
            discarded: self.discarded,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scan {
    /// At the start of a line (after CRLF, or the start of the content).
    LineStart,
    /// Inside a line.
    Mid,
    /// A CR was seen and not yet emitted.
    Cr,
    /// A "." at the start of a line.
    Dot,
    /// ".\r" at the start of a line.
    DotCr,
}

/// Incremental DATA decoder: feed it socket bytes in any chunking; O(n) overall.
#[derive(Debug)]
pub struct DataReceiver {
    sink: Sink,
    state: Scan,
    bare_eol: bool,
    done: bool,
}

impl DataReceiver {
    /// A decoder that buffers at most `cap` content bytes.
    pub fn new(cap: usize) -> DataReceiver {
        DataReceiver {
            sink: Sink::new(cap),
            state: Scan::LineStart,
            bare_eol: false,
            done: false,
        }
    }

    /// Consumes input up to and including the terminating `.CRLF`; returns how many bytes
    /// were consumed. Bytes after the terminator are left for the caller.
    pub fn feed(&mut self, input: &[u8]) -> usize {
        let mut i = 0;
        while i < input.len() && !self.done {
            let b = input[i];
            match self.state {
                Scan::Mid => {
                    let run = memchr::memchr2(b'\r', b'\n', &input[i..]).unwrap_or(input.len() - i);
                    if run > 0 {
                        self.sink.emit(&input[i..i + run]);
                        i += run;
                        continue;
                    }
                    if b == b'\r' {
                        self.state = Scan::Cr;
                    } else {
                        self.bare_eol = true;
                        self.sink.emit(b"\n");
                    }
                }
                Scan::LineStart => match b {
                    b'.' => self.state = Scan::Dot,
                    b'\r' => self.state = Scan::Cr,
                    _ => {
                        self.state = Scan::Mid;
                        continue;
                    }
                },
                Scan::Cr => match b {
                    b'\n' => {
                        self.sink.emit(b"\r\n");
                        self.state = Scan::LineStart;
                    }
                    b'\r' => {
                        self.bare_eol = true;
                        self.sink.emit(b"\r");
                    }
                    _ => {
                        self.bare_eol = true;
                        self.sink.emit(b"\r");
                        self.state = Scan::Mid;
                        continue;
                    }
                },
                Scan::Dot => {
                    if b == b'\r' {
                        self.state = Scan::DotCr;
                    } else {
                        // The leading dot was stuffing: drop it, the rest is line content.
                        self.state = Scan::Mid;
                        continue;
                    }
                }
                Scan::DotCr => {
                    if b == b'\n' {
                        self.done = true;
                    } else {
                        self.state = Scan::Cr;
                        continue;
                    }
                }
            }
            i += 1;
        }
        i
    }

    /// The terminator has been seen.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Bytes currently buffered.
    pub fn body_len(&self) -> usize {
        self.sink.body.len()
    }

    /// Drops the buffered content and stops buffering; scanning for the end continues.
    pub fn discard(&mut self) {
        self.sink.discard();
    }

    /// The outcome; call once [`DataReceiver::is_done`].
    pub fn finish(self) -> BodyOutcome {
        self.sink.finish(self.bare_eol)
    }
}

/// Accumulates BDAT chunks of one transaction; bare CR / bare LF are recorded across chunks.
#[derive(Debug)]
pub struct BdatReceiver {
    sink: Sink,
    prev_cr: bool,
    bare_eol: bool,
}

impl BdatReceiver {
    /// A receiver that buffers at most `cap` bytes.
    pub fn new(cap: usize) -> BdatReceiver {
        BdatReceiver {
            sink: Sink::new(cap),
            prev_cr: false,
            bare_eol: false,
        }
    }

    /// Appends raw chunk bytes (any split of a chunk is fine).
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.bare_eol {
            for &b in bytes {
                if (self.prev_cr && b != b'\n') || (!self.prev_cr && b == b'\n') {
                    self.bare_eol = true;
                    break;
                }
                self.prev_cr = b == b'\r';
            }
        }
        self.sink.emit(bytes);
    }

    /// True once the content exceeded the cap.
    pub fn overflowed(&self) -> bool {
        self.sink.overflow
    }

    /// Bytes currently buffered.
    pub fn body_len(&self) -> usize {
        self.sink.body.len()
    }

    /// Drops the buffered content and stops buffering.
    pub fn discard(&mut self) {
        self.sink.discard();
    }

    /// The outcome after the LAST chunk; a trailing lone CR counts as bare.
    pub fn finish(self) -> BodyOutcome {
        let bare = self.bare_eol || self.prev_cr;
        self.sink.finish(bare)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> (BodyOutcome, usize) {
        let mut r = DataReceiver::new(1 << 20);
        let n = r.feed(input);
        assert!(r.is_done(), "not done: {input:?}");
        (r.finish(), n)
    }

    #[test]
    fn terminator_and_unstuffing() {
        let (o, n) = decode(b"a\r\n..b\r\n.c\r\n.\r\nMAIL");
        assert_eq!(o.body, b"a\r\n.b\r\nc\r\n");
        assert_eq!(n, 15);
        assert!(!o.bare_eol);
        let (o, n) = decode(b".\r\nQUIT\r\n");
        assert_eq!((o.body.len(), n), (0, 3));
    }

    #[test]
    fn smuggling_variants_do_not_terminate() {
        for v in [
            &b"\n.\n"[..],
            b"\r\n.\n",
            b"\n.\r\n",
            b"\r\n.\r\r\n",
            b"\r.\r\n",
        ] {
            let mut input = b"x".to_vec();
            input.extend_from_slice(v);
            input.extend_from_slice(b"MAIL FROM:<a@b>\r\n");
            let mut r = DataReceiver::new(1000);
            assert_eq!(r.feed(&input), input.len(), "{v:?}");
            assert!(!r.is_done());
            r.feed(b".\r\n");
            assert!(r.is_done());
            assert!(r.finish().bare_eol, "{v:?}");
        }
    }

    #[test]
    fn cap_and_discard() {
        let mut r = DataReceiver::new(4);
        r.feed(b"abcdef\r\n");
        assert_eq!(r.body_len(), 0);
        r.feed(b".\r\n");
        let o = r.finish();
        assert!(o.overflow && o.body.is_empty() && o.size == 8);
        let mut b = BdatReceiver::new(10);
        b.push(b"ab\r");
        b.push(b"\ncd");
        assert_eq!(b.body_len(), 6);
        b.push(b"01234");
        assert!(b.overflowed());
        let mut b = BdatReceiver::new(10);
        b.push(b"a\nb");
        assert!(b.finish().bare_eol);
        let mut b = BdatReceiver::new(10);
        b.push(b"a\r");
        assert!(b.finish().bare_eol);
    }
}
