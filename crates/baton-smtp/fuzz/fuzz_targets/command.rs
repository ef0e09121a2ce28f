//! Fuzzes the command line parser and the mailbox / parameter parsers behind it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = baton_smtp::parse_command(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = baton_smtp::address::parse_reverse_path(text);
        let _ = baton_smtp::address::parse_forward_path(text);
        let _ = baton_smtp::params::parse_mail_params(text);
        let _ = baton_smtp::params::parse_rcpt_params(text);
    }
});
