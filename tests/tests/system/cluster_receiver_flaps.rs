//! Scenario 4 (issue 7): the receiving server flaps; mail is deferred and delivered later,
//! never lost, never bounced (no DSN) for a temporary problem.
//!
//! 1. Stall: the MX port is a listener whose accept queue is full, so connects hang; the
//!    worker gives up after `--connect-timeout 1s` and defers. Two messages only: five
//!    consecutive connection failures would suspend the destination for two minutes (a
//!    worker feature, not something this scenario is about).
//! 2. Flap: the programmable receiver takes the port. On each message's first attempt it
//!    drops the connection after the data (no reply), answers `421` to RCPT, or answers
//!    `451` to the end of data, by message number; every fifth connection is greeted `421`.
//!
//! The pool retries after 1 s, 1 s, 2 s. Every message arrives exactly once (the receiver
//! records a message only when it answers 250), every outcome is `sent` or `deferred`, and
//! nothing is sent with a null reverse-path.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_system_tests::cluster::{Bed, BedSpec, Load, duplicates, full, merge, subject_counts};
use baton_system_tests::config::direct;
use baton_system_tests::harness::{assert_eventually, free_port};
use baton_system_tests::receiver::{Receiver, ReceiverConfig, Response, Stage};
use tokio::net::{TcpSocket, TcpStream};

/// First-attempt failure for message `u<i>@dest.test`.
fn flap(i: usize) -> &'static str {
    ["drop-after-data", "421-rcpt", "451-data", "ok"][i % 4]
}

fn number(to: &str) -> usize {
    to.trim_start_matches('u')
        .split('@')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3)
}

fn flap_script(seen: Arc<Mutex<HashSet<String>>>) -> ReceiverConfig {
    let first = move |to: &str| {
        seen.lock()
            .map(|mut s| s.insert(to.to_owned()))
            .unwrap_or(false)
    };
    let script = Arc::new(move |s: &Stage<'_>| match s {
        Stage::Connect { n } if n % 5 == 3 => Response::Reply(421, "4.3.2 busy, try later".into()),
        Stage::Rcpt { to } if flap(number(to)) == "421-rcpt" && first(to) => {
            Response::Reply(421, "4.4.2 closing".into())
        }
        Stage::DataEnd { to, .. } => match to.first().map(|t| (flap(number(t)), t)) {
            Some(("drop-after-data", t)) if first(t) => Response::Drop,
            Some(("451-data", t)) if first(t) => Response::Reply(451, "4.3.0 later".into()),
            _ => Response::Default,
        },
        _ => Response::Default,
    });
    ReceiverConfig {
        script,
        ..Default::default()
    }
}

/// A listener on `addr` that never accepts, with its one-slot accept queue already taken:
/// further connects get no SYN-ACK and hang.
async fn blackhole(addr: SocketAddr) -> anyhow::Result<(tokio::net::TcpListener, TcpStream)> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    let l = s.listen(0)?;
    let filler = TcpStream::connect(addr).await?;
    let probe = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await;
    anyhow::ensure!(probe.is_err(), "the blackhole accepted a connection");
    Ok((l, filler))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_receiver_defers_and_never_bounces() -> anyhow::Result<()> {
    let n = if full() { 2_000 } else { 60 };
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let hole = blackhole(addr).await?;
    let mut spec = BedSpec::new("baton-c-flap", direct(port, "[1s, 1s, 2s]", "1h"), 1, 1);
    spec.worker_flags = ["--connect-timeout", "1s"].map(String::from).to_vec();
    let bed = Bed::start(spec).await?;

    // Phase 1: connects hang.
    let mut stall = Load::new("stall", 2, 1, bed.smtp_addrs());
    stall.to = "stall{i}@dest.test".into();
    let (_, _, mut accepted, _) = merge(&stall.run().await?);
    assert_eq!(accepted.len(), 2);
    assert_eventually(
        Duration::from_secs(30),
        "both stalled deliveries deferred",
        || async {
            let o = bed.outcomes();
            let d = o.iter().filter(|o| o.status == "deferred").count();
            d >= 2
        },
    )
    .await?;
    let stalled: Vec<String> = bed.outcomes().into_iter().map(|o| o.reply).collect();
    println!("stalled: {stalled:?}");
    drop(hole);

    // Phase 2: the receiver comes back, flapping.
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let slot: Arc<Mutex<Option<Receiver>>> = Arc::default();
    assert_eventually(Duration::from_secs(10), "rebinding the MX port", || {
        let (slot, config) = (slot.clone(), flap_script(seen.clone()));
        async move {
            let r = Receiver::start(&addr.to_string(), config).await.ok();
            let bound = r.is_some();
            if let Ok(mut s) = slot.lock() {
                *s = r;
            }
            bound
        }
    })
    .await?;
    let receiver = slot
        .lock()
        .ok()
        .and_then(|mut s| s.take())
        .ok_or_else(|| anyhow::anyhow!("no receiver"))?;
    let mut load = Load::new("flap", n, 4, bed.smtp_addrs());
    load.to = "u{i}@dest.test".into();
    let (_, _, flapped, abandoned) = merge(&load.run().await?);
    assert_eq!((flapped.len(), abandoned), (n, 0));
    accepted.extend(flapped);

    bed.wait_drained(&accepted, || receiver.messages(), Duration::from_secs(120))
        .await?;
    let msgs = receiver.messages();
    let counts = subject_counts(&msgs);
    let outcomes = bed.outcomes();
    let count = |s: &str| outcomes.iter().filter(|o| o.status == s).count();
    println!(
        "{} accepted, {} delivered ({} duplicates); outcomes: {} sent, {} deferred; {} connections",
        accepted.len(),
        counts.len(),
        duplicates(&counts),
        count("sent"),
        count("deferred"),
        receiver.connections()
    );
    assert_eq!(counts.len(), accepted.len(), "every message delivered");
    assert_eq!(duplicates(&counts), 0, "exactly once: {counts:?}");
    assert!(
        msgs.iter().all(|m| !m.from.is_empty()),
        "no DSN was sent anywhere"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| o.status == "sent" || o.status == "deferred"),
        "no bounce or expiry: {outcomes:?}"
    );
    for kind in ["drop-after-data", "421-rcpt", "451-data"] {
        let i = (0..n).find(|i| flap(*i) == kind).unwrap_or(0);
        let to = format!("u{i}@dest.test");
        let mine: Vec<&str> = outcomes
            .iter()
            .filter(|o| o.to == to)
            .map(|o| o.status.as_str())
            .collect();
        assert_eq!(mine.first(), Some(&"deferred"), "{kind}: {mine:?}");
        assert_eq!(mine.last(), Some(&"sent"), "{kind}: {mine:?}");
    }
    for s in ["stall0@dest.test", "stall1@dest.test"] {
        assert!(outcomes.iter().any(|o| o.to == s && o.status == "sent"));
    }
    Ok(())
}
