//! Scenario: `baton-limits` against a real `nats-server` and its JetStream KV bucket
//! `baton-limits` — windowed budgets shared by three processes (three connections) never
//! grant more than the limit, AUTH failures split across two processes lock the subject on
//! both, a leased semaphore never exceeds its cap across holders and frees the slots of a
//! dropped permit and of an abandoned holder, and with nats-server stopped every call returns
//! promptly from the bounded local fallback.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use baton_limits::counter::chunk_size;
use baton_limits::lease::{decode, in_use};
use baton_limits::lockout::CLEAR_FOR;
use baton_limits::{
    Acquire, BudgetKey, Kv, LeaseOptions, Lockout, LockoutPolicy, Options, Quota, SharedCounter,
    SharedSemaphore, Subject, Take, Want,
};
use baton_system_tests::harness::Nats;
use futures::StreamExt;

/// Create the bucket as `baton_queue` provisions it.
async fn create_bucket(nats: &Nats) -> anyhow::Result<()> {
    let js = nats.jetstream().await?;
    js.create_key_value(kv::Config {
        bucket: "baton-limits".into(),
        history: 1,
        max_age: Duration::from_secs(26 * 3600),
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// The bucket on a connection of its own (one per simulated process).
async fn process_kv(nats: &Nats) -> anyhow::Result<Arc<dyn Kv>> {
    let js = nats.jetstream().await?;
    Ok(Arc::new(js.get_key_value("baton-limits").await?))
}

/// The raw bucket, for assertions.
async fn raw_kv(nats: &Nats) -> anyhow::Result<kv::Store> {
    Ok(nats
        .jetstream()
        .await?
        .get_key_value("baton-limits")
        .await?)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Generous timeouts: this is about correctness, on a loaded 2-core machine.
fn patient() -> Options {
    Options {
        timeout: Duration::from_secs(5),
        cas_attempts: 10_000,
        ..Options::default()
    }
}

/// Poll `f` every 50 ms until it gives a value, for at most `limit`.
async fn poll<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn three_processes_never_grant_more_than_the_limit() -> anyhow::Result<()> {
    let nats = Nats::start().await?;
    create_bucket(&nats).await?;
    // One fixed time in the middle of the current hour: the whole test is in one window, and
    // exhaustion (retry after the window's end, 30 min) is told apart from contention (≤ 1 s).
    let now = now_ms().div_euclid(3_600_000) * 3_600_000 + 1_800_000;
    for (scope, limit) in [("small.example", 50u64), ("large.example", 1_280)] {
        let want = Arc::new([Want {
            key: BudgetKey::new("in.msgs.domain", scope)?,
            quota: Quota::per_hour(limit),
        }]);
        let granted = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let counter = Arc::new(SharedCounter::new(process_kv(&nats).await?, patient()));
            for _ in 0..4 {
                let (counter, want, granted) = (counter.clone(), want.clone(), granted.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        match counter.take(&want[..], now).await {
                            Take::Granted { fallback } => {
                                anyhow::ensure!(!fallback, "unexpected fallback");
                                granted.fetch_add(1, Ordering::SeqCst);
                            }
                            Take::Exhausted {
                                fallback,
                                retry_after_ms,
                                ..
                            } => {
                                anyhow::ensure!(!fallback, "unexpected fallback");
                                // Contention refusals retry after ≤ 1 s; exhaustion at the
                                // window's end.
                                if retry_after_ms <= 1_000 {
                                    continue;
                                }
                                return Ok(());
                            }
                        }
                    }
                }));
            }
        }
        for t in tasks {
            t.await??;
        }
        let total = granted.load(Ordering::SeqCst);
        let slack = 3 * (chunk_size(limit) - 1);
        assert!(total <= limit, "{scope}: granted {total} > {limit}");
        assert!(
            total + slack >= limit,
            "{scope}: granted {total}, less than {limit} - {slack}"
        );
        let key = want[0]
            .key
            .window_key(want[0].quota.period, now.div_euclid(3_600_000));
        let stored = raw_kv(&nats).await?.get(key).await?;
        assert_eq!(stored.as_deref(), Some(limit.to_string().as_bytes()));
    }
    Ok(())
}

#[tokio::test]
async fn failures_split_across_processes_lock_on_both() -> anyhow::Result<()> {
    let nats = Nats::start().await?;
    create_bucket(&nats).await?;
    let policy = LockoutPolicy {
        failures: 4,
        window: Duration::from_secs(3_600),
        duration: Duration::from_secs(600),
    };
    let a = Lockout::new(process_kv(&nats).await?, "in.auth", policy, patient())?;
    let b = Lockout::new(process_kv(&nats).await?, "in.auth", policy, patient())?;
    let now = now_ms();

    let user = Subject::User("Mallory@Example.com".into());
    let same_user = Subject::User("mallory@example.COM".into());
    assert_eq!(a.failed(&user, now).await, None);
    assert_eq!(b.failed(&same_user, now).await, None);
    assert_eq!(a.failed(&user, now).await, None);
    assert_eq!(a.locked(&user, now).await, None);
    assert_eq!(b.locked(&user, now).await, None);
    let until = b.failed(&same_user, now).await;
    assert_eq!(until, Some(now + 600_000));
    // `b` wrote the lock and knows it at once; `a` found the user clear a moment ago and trusts
    // that answer for CLEAR_FOR, then reads the lock.
    assert_eq!(b.locked(&same_user, now + 1).await, until);
    assert_eq!(a.locked(&user, now + 1).await, None);
    let later = now + CLEAR_FOR.as_millis() as i64;
    assert_eq!(a.locked(&user, later).await, until);
    // Another user is not locked.
    assert_eq!(a.locked(&Subject::User("trent".into()), now).await, None);

    // Clients: addresses of one IPv6 /64 are one subject.
    let c1 = Subject::Client("2001:db8:7:1::10".parse()?);
    let c2 = Subject::Client("2001:db8:7:1:ffff::99".parse()?);
    for (i, (who, s)) in [(&a, &c1), (&b, &c2), (&a, &c2)].into_iter().enumerate() {
        assert_eq!(who.failed(s, now).await, None, "failure {i}");
    }
    let until = b.failed(&c1, now).await;
    assert!(until.is_some());
    assert_eq!(a.locked(&c2, now).await, until);
    assert_eq!(
        b.locked(&Subject::Client("2001:db8:7:2::10".parse()?), now)
            .await,
        None
    );

    // No key names a user or an address in clear.
    let mut keys = raw_kv(&nats).await?.keys().await?;
    let mut n = 0;
    while let Some(k) = keys.next().await {
        let k = k?;
        n += 1;
        assert!(k.starts_with("in.auth."), "{k}");
        assert!(
            !k.to_lowercase().contains("mallory") && !k.contains("2001"),
            "{k}"
        );
    }
    assert!(n >= 4);
    Ok(())
}

#[tokio::test]
async fn holders_share_a_cap_and_abandoned_leases_expire() -> anyhow::Result<()> {
    let nats = Nats::start().await?;
    create_bucket(&nats).await?;
    let ttl = Duration::from_secs(2);
    let opts = LeaseOptions {
        ttl,
        limits: patient(),
    };
    let a = Arc::new(SharedSemaphore::new(
        process_kv(&nats).await?,
        "out.pool-a",
        "worker-a",
        opts.clone(),
    )?);
    let b = Arc::new(SharedSemaphore::new(
        process_kv(&nats).await?,
        "out.pool-a",
        "worker-b",
        opts.clone(),
    )?);

    // Hammering from both holders never holds more than the cap.
    let cap = 3u32;
    let live = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for s in [&a, &b] {
        for _ in 0..4 {
            let (s, live, peak) = (s.clone(), live.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                let mut granted = 0u32;
                for _ in 0..25 {
                    match s.try_acquire("mx.hot.example", cap, now_ms()).await {
                        Acquire::Granted(p) => {
                            granted += 1;
                            let n = live.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(n, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            live.fetch_sub(1, Ordering::SeqCst);
                            drop(p);
                        }
                        Acquire::Full => tokio::task::yield_now().await,
                        Acquire::Fallback(_) => anyhow::bail!("unexpected fallback"),
                    }
                }
                Ok(granted)
            }));
        }
    }
    let mut granted = 0;
    for t in tasks {
        granted += t.await??;
    }
    assert!(granted > 0);
    assert!(peak.load(Ordering::SeqCst) <= cap);

    // A dropped permit frees its slot for the other holder.
    let dest = "mx.one.example";
    let pa = a
        .try_acquire(dest, 1, now_ms())
        .await
        .permit()
        .ok_or_else(|| anyhow::anyhow!("a: no slot"))?;
    assert!(!pa.is_fallback());
    assert!(matches!(
        b.try_acquire(dest, 1, now_ms()).await,
        Acquire::Full
    ));
    drop(pa);
    let pb = poll(Duration::from_secs(10), "the released slot", || {
        let b = b.clone();
        async move {
            match b.try_acquire(dest, 1, now_ms()).await {
                Acquire::Granted(p) => Ok(Some(p)),
                _ => Ok(None),
            }
        }
    })
    .await?;

    // The renewal task extends the holder's lease while it holds the permit.
    let store = raw_kv(&nats).await?;
    let key = b.key(dest);
    let first = lease_expiry(&store, &key, "worker-b").await?;
    poll(Duration::from_secs(10), "a lease renewal", || {
        let (store, key) = (store.clone(), key.clone());
        async move { Ok((lease_expiry(&store, &key, "worker-b").await? > first).then_some(())) }
    })
    .await?;
    drop(pb);

    // An abandoned holder (permit never dropped, renewal stopped) loses its slot after the ttl.
    let c = SharedSemaphore::new(
        process_kv(&nats).await?,
        "out.pool-a",
        "worker-crashed",
        opts.clone(),
    )?;
    let abandoned = "mx.abandoned.example";
    let pc = c
        .try_acquire(abandoned, 1, now_ms())
        .await
        .permit()
        .ok_or_else(|| anyhow::anyhow!("c: no slot"))?;
    std::mem::forget(pc);
    drop(c);
    assert!(matches!(
        a.try_acquire(abandoned, 1, now_ms()).await,
        Acquire::Full
    ));
    let pa = poll(
        Duration::from_secs(20),
        "the abandoned lease to expire",
        || {
            let a = a.clone();
            async move {
                match a.try_acquire(abandoned, 1, now_ms()).await {
                    Acquire::Granted(p) => Ok(Some(p)),
                    _ => Ok(None),
                }
            }
        },
    )
    .await?;
    drop(pa);

    // Every release lands: no slot stays taken.
    for d in [dest, abandoned, "mx.hot.example"] {
        let key = a.key(d);
        poll(Duration::from_secs(10), "releases", || {
            let (store, key) = (store.clone(), key.clone());
            async move {
                let free = match store.get(key).await? {
                    None => true,
                    Some(v) => in_use(&decode(&v)?) == 0,
                };
                Ok(free.then_some(()))
            }
        })
        .await?;
    }
    Ok(())
}

async fn lease_expiry(store: &kv::Store, key: &str, holder: &str) -> anyhow::Result<i64> {
    let v = store
        .get(key)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no lease table"))?;
    let t = decode(&v)?;
    Ok(t.get(holder)
        .ok_or_else(|| anyhow::anyhow!("no lease of {holder}"))?
        .expires_ms)
}

#[tokio::test]
async fn a_stopped_nats_falls_back_promptly_and_stays_bounded() -> anyhow::Result<()> {
    let mut nats = Nats::start().await?;
    create_bucket(&nats).await?;
    // A cool-down longer than the test, so every call after the stop is decided by the
    // fallback without a second timeout.
    let opts = Options {
        timeout: Duration::from_millis(500),
        cooldown: Duration::from_secs(60),
        fallback_divisor: 3,
        ..Options::default()
    };
    let sem = SharedSemaphore::new(
        process_kv(&nats).await?,
        "out.pool-a",
        "worker-a",
        LeaseOptions {
            ttl: Duration::from_secs(30),
            limits: opts.clone(),
        },
    )?;
    let now = now_ms().div_euclid(3_600_000) * 3_600_000 + 1_800_000;
    let want = [Want {
        key: BudgetKey::new("in.msgs.domain", "down.example")?,
        quota: Quota::per_hour(30),
    }];
    // One unit from NATS first. A loaded machine may miss the timeout: then try again with a
    // fresh counter (fresh local state and cool-down).
    let mut counter = None;
    for _ in 0..10 {
        let c = SharedCounter::new(process_kv(&nats).await?, opts.clone());
        if c.take(&want, now).await == (Take::Granted { fallback: false }) {
            counter = Some(c);
            break;
        }
    }
    let counter = counter.ok_or_else(|| anyhow::anyhow!("the counter never reached NATS"))?;

    nats.stop();
    let started = Instant::now();
    let first = counter.take(&want, now).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "take took {:?}",
        started.elapsed()
    );
    assert_eq!(first, Take::Granted { fallback: true });
    // ceil(30 / 3) = 10 per process per window, the unit taken from NATS included.
    let mut granted = 2;
    loop {
        let started = Instant::now();
        let t = counter.take(&want, now).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(t.fallback(), "{t:?}");
        match t {
            Take::Granted { .. } => granted += 1,
            Take::Exhausted { .. } => break,
        }
        assert!(granted <= 10, "fallback granted more than its budget");
    }
    assert_eq!(granted, 10);

    // The semaphore too: a local semaphore of max(1, 6 / 3) = 2.
    let started = Instant::now();
    let p1 = sem.try_acquire("mx.down.example", 6, now_ms()).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(p1, Acquire::Fallback(_)), "{p1:?}");
    let p2 = sem.try_acquire("mx.down.example", 6, now_ms()).await;
    assert!(matches!(p2, Acquire::Fallback(_)), "{p2:?}");
    let p3 = sem.try_acquire("mx.down.example", 6, now_ms()).await;
    assert!(matches!(p3, Acquire::Full), "{p3:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    Ok(())
}
