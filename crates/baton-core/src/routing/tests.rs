use super::*;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

#[test]
fn weighted_basics() {
    let w = |x: &u32| *x;
    assert_eq!(pick_weighted::<u32>(&[], w, 5), None);
    assert_eq!(pick_weighted(&[0, 0, 0], w, 5), Some(2));
    assert_eq!(pick_weighted(&[0, 3, 0, 1], w, 0), Some(1));
    assert_eq!(pick_weighted(&[0, 3, 0, 1], w, 2), Some(1));
    assert_eq!(pick_weighted(&[0, 3, 0, 1], w, 3), Some(3));
    assert_eq!(pick_weighted(&[0, 3, 0, 1], w, 4), Some(1));
    assert_eq!(pick_weighted(&[u32::MAX, u32::MAX], w, u64::MAX), Some(1));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Zero weights are never picked; picks follow the weights within a loose tolerance.
    #[test]
    fn weighted_distribution(weights in prop::collection::vec(0u32..10, 1..6), seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = 20_000u64;
        let mut counts = vec![0u64; weights.len()];
        for _ in 0..n {
            let i = pick_weighted(&weights, |w| *w, rand::Rng::random(&mut rng)).unwrap();
            counts[i] += 1;
        }
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        for (i, &c) in counts.iter().enumerate() {
            let expected = if total == 0 {
                n as f64 / weights.len() as f64
            } else {
                n as f64 * f64::from(weights[i]) / total as f64
            };
            if total > 0 && weights[i] == 0 {
                prop_assert_eq!(c, 0);
            }
            prop_assert!((c as f64 - expected).abs() < 0.05 * n as f64);
        }
    }
}

#[test]
fn mx_ordering() {
    let mut rng = StdRng::seed_from_u64(1);
    assert_eq!(order_mx(vec![], &mut rng), MxPlan::Implicit);
    assert_eq!(order_mx(vec![(0, ".".into())], &mut rng), MxPlan::NullMx);
    let recs = vec![
        (20, "B.example.".into()),
        (10, "a2.example.".into()),
        (10, "A1.example".into()),
        (30, ".".into()),
        (20, "b.example".into()),
    ];
    let mut seen_first = std::collections::HashSet::new();
    for _ in 0..50 {
        let MxPlan::Hosts(h) = order_mx(recs.clone(), &mut rng) else {
            panic!("hosts expected");
        };
        assert_eq!(h.len(), 3);
        assert!(h[0].starts_with('a') && h[1].starts_with('a'));
        assert_eq!(h[2], "b.example");
        seen_first.insert(h[0].clone());
    }
    assert_eq!(seen_first.len(), 2, "equal preferences are shuffled");
}

#[test]
fn health_cooldown() {
    let mut h = UpstreamHealth::default();
    h.record_failure(0);
    h.record_failure(0);
    assert!(h.is_available(0));
    assert!(h.is_healthy(), "below the threshold it is still healthy");
    h.record_failure(1000);
    assert!(!h.is_available(1000));
    assert!(!h.is_healthy());
    assert_eq!(h.down_until(1000), Some(31_000));
    // Failures while down do not extend.
    h.record_failure(2000);
    assert_eq!(h.down_until(2000), Some(31_000));
    assert!(h.is_available(31_000));
    assert!(!h.is_healthy(), "an expired cool-down is not a success");
    assert_eq!(h.down_until(31_000), None);
    // Half-open: one failure trips again, doubled; then 120 s, 240 s, capped at 300 s.
    let mut now = 31_000;
    for expected in [60_000, 120_000, 240_000, 300_000, 300_000] {
        h.record_failure(now);
        assert_eq!(h.down_until(now), Some(now + expected));
        now += expected;
    }
    h.record_success();
    assert!(h.is_available(now));
    assert!(h.is_healthy());
    h.record_failure(now);
    assert!(h.is_available(now), "success resets the count");
}

#[test]
fn upstream_choice() {
    let up = UpstreamHealth::default();
    let mut down = UpstreamHealth::default();
    for _ in 0..3 {
        down.record_failure(0);
    }
    // Weighted pick first, the others by weight.
    let list = [(1, &up), (5, &up), (3, &up)];
    assert_eq!(choose_upstream(&list, 0, 0), vec![0, 1, 2]);
    assert_eq!(choose_upstream(&list, 0, 1), vec![1, 2, 0]);
    assert_eq!(choose_upstream(&list, 0, 7), vec![2, 1, 0]);
    // Down upstreams are skipped while another is available.
    let list = [(9, &down), (1, &up), (0, &up)];
    for r in 0..20 {
        assert_eq!(choose_upstream(&list, 10, r), vec![1, 2]);
    }
    // All down: all are tried.
    let list = [(1, &down), (2, &down)];
    let mut got = choose_upstream(&list, 10, 0);
    got.sort_unstable();
    assert_eq!(got, vec![0, 1]);
    assert!(choose_upstream(&[], 0, 0).is_empty());
    // After the cool-down it is back.
    let list = [(9, &down), (1, &up)];
    assert_eq!(choose_upstream(&list, 30_000, 0), vec![0, 1]);
}

#[test]
fn suspension() {
    let mut t = SuspensionTracker::new(SuspensionPolicy {
        failure_threshold: 2,
        duration_ms: 1000,
        max_entries: 2,
    });
    assert!(t.is_empty());
    t.record_failure("a", 0);
    assert_eq!(t.suspended_until("a", 0), None);
    t.record_failure("a", 10);
    assert_eq!(t.suspended_until("a", 10), Some(1010));
    t.record_failure("a", 20);
    assert_eq!(t.suspended_until("a", 20), Some(1010));
    assert_eq!(t.suspended_count(20), 1);
    assert_eq!(t.suspended_until("a", 1010), None);
    assert_eq!(t.suspended_count(1010), 0);
    // Probe after the suspension fails: suspended again at once.
    t.record_failure("a", 1010);
    assert_eq!(t.suspended_until("a", 1010), Some(2010));
    t.record_success("a");
    assert_eq!(t.suspended_until("a", 1020), None);
    assert!(t.is_empty());
    // Bounded: the least recently seen destination is evicted.
    t.record_failure("x", 1);
    t.record_failure("y", 2);
    t.record_failure("z", 3);
    assert_eq!(t.len(), 2);
    t.record_failure("y", 4);
    assert_eq!(t.suspended_until("y", 4), Some(1004));
    t.record_failure("x", 5);
    assert_eq!(
        t.suspended_until("x", 5),
        None,
        "x was evicted and starts over"
    );
    // New routes: every suspension is forgotten.
    assert_eq!(t.suspended_count(5), 1);
    t.clear();
    assert!(t.is_empty());
    assert_eq!(t.suspended_until("y", 5), None);
}
