//! What one SMTP AUTH costs the ingress (issue 13.3): an uncached argon2id verification with
//! the compiler's parameters, a cached one (`AuthCache` hit), and the legacy salted SHA-256,
//! side by side, in this build.
//!
//!     cargo bench -p baton-ingress --bench auth        (AUTH_BENCH_RUNS, default 20)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Instant;

use argon2::password_hash::{PasswordHasher as _, SaltString};
use baton_core::policy::PolicyIndex;
use baton_ingress::authcache::AuthCache;
use baton_proto::v1::{Credential, RelayConfig, RelayDomain};
use sha2::{Digest as _, Sha256};

fn index(credential: Credential) -> PolicyIndex {
    PolicyIndex::new(&RelayConfig {
        domains: vec![RelayDomain {
            name: "team-a/example".into(),
            domain: "example.com".into(),
            ready: true,
            credentials: vec![credential],
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn per_op(n: u32, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() * 1e3 / f64::from(n)
}

fn main() {
    let n: u32 = std::env::var("AUTH_BENCH_RUNS")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let (m, t, p) = (
        baton_config::compile::ARGON2_M_KIB,
        baton_config::compile::ARGON2_T,
        baton_config::compile::ARGON2_P,
    );
    let params = argon2::Params::new(m, t, p, Some(32)).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    let phc = argon
        .hash_password(b"s3cret-pw", &salt)
        .unwrap()
        .to_string();
    let slow = index(Credential {
        username: "app".into(),
        argon2id: phc,
        ..Default::default()
    });
    let mut h = Sha256::new();
    h.update(b"salt");
    h.update(b"s3cret-pw");
    let fast = index(Credential {
        username: "app".into(),
        salt: hex::encode(b"salt"),
        password_sha256: hex::encode(h.finalize()),
        ..Default::default()
    });
    let cache = AuthCache::default();
    let now = Instant::now();
    cache.put("app", "s3cret-pw", "team-a/example", now);

    let uncached = per_op(n, || {
        assert!(slow.authenticate("app", "s3cret-pw").is_some())
    });
    let wrong = per_op(n, || assert!(slow.authenticate("app", "wrong").is_none()));
    let unknown = per_op(n, || assert!(slow.authenticate("nobody", "x").is_none()));
    let cached = per_op(n * 1000, || {
        assert!(cache.get("app", "s3cret-pw", now).is_some())
    });
    let legacy = per_op(n * 1000, || {
        assert!(fast.authenticate("app", "s3cret-pw").is_some())
    });
    println!("AUTH cost per attempt (argon2id m={m} KiB, t={t}, p={p}; {n} runs):");
    println!("  uncached argon2id, right password  {uncached:9.3} ms");
    println!("  uncached argon2id, wrong password  {wrong:9.3} ms");
    println!("  unknown user (dummy verifier)      {unknown:9.3} ms");
    println!("  cached (AuthCache hit)             {cached:9.6} ms");
    println!("  legacy salted SHA-256 (baseline)   {legacy:9.6} ms");
    println!(
        "  ratio uncached/cached: {:.0}x; cached/legacy: {:.2}x",
        uncached / cached,
        cached / legacy
    );
}
