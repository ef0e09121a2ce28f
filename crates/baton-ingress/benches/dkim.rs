//! DKIM signing cost at the ingress: messages per second on one core for 2 KiB and 100 KiB
//! messages, signed with RSA-2048 and with Ed25519, against an unsigned baseline that only does
//! what the hand-off does anyway (copy trace header and content into the envelope body).
//!
//! `cargo bench -p baton-ingress --bench dkim` (needs `openssl` to make the keys).
//! Set `DKIM_BENCH_SECS` to change the time spent per case (default 2).

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use baton_ingress::dkim::DomainSigner;
use baton_proto::v1::{DkimKey, RelayDomain};

fn openssl_key(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .arg("genpkey")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running openssl: {e}"));
    assert!(out.status.success(), "openssl genpkey failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn signer(algorithm: &str, pem: String) -> DomainSigner {
    let domain = RelayDomain {
        name: "bench/example-com".into(),
        domain: "example.com".into(),
        dkim_keys: vec![DkimKey {
            selector: "bench".into(),
            algorithm: algorithm.into(),
            private_key_pem: pem,
            expire_secs: 0,
            ..Default::default()
        }],
        ..Default::default()
    };
    DomainSigner::new(&domain).unwrap_or_else(|e| panic!("{e}"))
}

/// A plausible message of about `size` bytes: the usual headers, then 76-column text lines.
fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: App <app@example.com>\r\nTo: user@dest.test\r\n\
Subject: Your order has shipped\r\nDate: Tue, 03 Mar 2026 14:05:09 +0000\r\n\
Message-ID: <0123456789.abcdef@example.com>\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        .to_vec();
    let line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod te\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m.truncate(size - 2);
    m.extend_from_slice(b"\r\n");
    m
}

const TRACE: &[u8] = b"Received: from client.test ([10.1.2.3])\r\n\
\tby baton.test with ESMTPS id 1M83YSJNVYS7Z8P0H4\r\n\
\tfor <user@dest.test>; Tue, 03 Mar 2026 14:05:09 +0000\r\n";

/// What the hand-off does for every message: trace header + content into one buffer.
fn envelope_body(dkim: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(dkim.len() + TRACE.len() + msg.len());
    body.extend_from_slice(dkim);
    body.extend_from_slice(TRACE);
    body.extend_from_slice(msg);
    body
}

/// Messages per second of `f`, run on this thread for `budget`.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..8 {
            f();
        }
        n += 8;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let secs = std::env::var("DKIM_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let budget = Duration::from_secs_f64(secs);
    let rsa = signer(
        "rsa-sha256",
        openssl_key(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
    );
    let ed = signer("ed25519-sha256", openssl_key(&["-algorithm", "ed25519"]));

    println!("DKIM signing, one thread (messages/s per core; relaxed/relaxed, 12 headers)");
    println!(
        "{:>8}  {:<12} {:>12} {:>10} {:>14}",
        "size", "signing", "msgs/s", "us/msg", "vs unsigned"
    );
    for (label, size) in [("2 KiB", 2 * 1024), ("100 KiB", 100 * 1024)] {
        let msg = message(size);
        let base = rate(budget, || {
            black_box(envelope_body(&[], black_box(&msg)));
        });
        let row = |name: &str, r: f64| {
            println!(
                "{label:>8}  {name:<12} {r:>12.0} {:>10.1} {:>13.1}x",
                1e6 / r,
                base / r
            );
        };
        row("unsigned", base);
        for (name, s) in [("rsa-2048", &rsa), ("ed25519", &ed)] {
            let r = rate(budget, || {
                let dkim = s
                    .sign(&[TRACE, black_box(&msg)])
                    .unwrap_or_else(|e| panic!("{e}"));
                black_box(envelope_body(&dkim, &msg));
            });
            row(name, r);
        }
    }
}
