//! Fuzzes DATA and BDAT framing. The first two bytes pick where to cut the rest of the input
//! into pieces; the properties are the ones of `tests/framing_props.rs`:
//! - DATA: decoding in pieces gives the same outcome and consumed count as one piece, the
//!   consumed input ends with the terminator, and re-stuffing a clean body decodes back to it.
//! - BDAT: pushing in pieces gives the same outcome as one push; `bare_eol` is exact.
#![no_main]

use baton_smtp::{BdatReceiver, BodyOutcome, DataReceiver};
use libfuzzer_sys::fuzz_target;

fn has_bare_eol(content: &[u8]) -> bool {
    content.iter().enumerate().any(|(i, &b)| {
        (b == b'\r' && content.get(i + 1) != Some(&b'\n'))
            || (b == b'\n' && (i == 0 || content[i - 1] != b'\r'))
    })
}

fn dot_stuff(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 8);
    for (i, &b) in content.iter().enumerate() {
        if (i == 0 || (i >= 2 && &content[i - 2..i] == b"\r\n")) && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
    }
    out
}

fn data(input: &[u8], step: usize, cap: usize) -> (Option<BodyOutcome>, usize) {
    let mut rx = DataReceiver::new(cap);
    let mut consumed = 0;
    for (i, piece) in input.chunks(step.max(1)).enumerate() {
        if rx.is_done() {
            break;
        }
        consumed = i * step.max(1) + rx.feed(piece);
    }
    let done = rx.is_done();
    (done.then(|| rx.finish()), consumed)
}

fuzz_target!(|input: &[u8]| {
    let Some((&[a, b], input)) = input.split_first_chunk::<2>() else {
        return;
    };
    let step = usize::from(a).max(1);
    let cap = if b & 1 == 0 { 1 << 20 } else { usize::from(b) };

    let whole = data(input, input.len().max(1), cap);
    let split = data(input, step, cap);
    assert_eq!(whole, split);
    match &whole {
        (Some(o), n) => {
            let used = &input[..*n];
            assert!(used.ends_with(b"\r\n.\r\n") || used == b".\r\n");
            assert!(o.body.len() <= cap);
            if !o.bare_eol && !o.overflow && o.body.ends_with(b"\r\n") {
                let mut wire = dot_stuff(&o.body);
                wire.extend_from_slice(b".\r\n");
                let (again, m) = data(&wire, step, cap);
                assert_eq!(m, wire.len());
                assert_eq!(again.map(|r| r.body), Some(o.body.clone()));
            }
        }
        (None, n) => assert_eq!(*n, input.len()),
    }

    let mut one = BdatReceiver::new(1 << 20);
    one.push(input);
    let mut many = BdatReceiver::new(1 << 20);
    for piece in input.chunks(step) {
        many.push(piece);
    }
    let (one, many) = (one.finish(), many.finish());
    assert_eq!(one, many);
    assert_eq!(one.bare_eol, has_bare_eol(input));
    assert_eq!(one.body, input);
});
