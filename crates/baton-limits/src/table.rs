//! A bounded map of local state with expiry: every limit keeps its per-key local state here, so
//! memory stays bounded whatever keys the traffic makes up.
//!
//! An entry expires at a time the caller gives (a window's end, a lock's end) and is dropped
//! on the first sweep after it (sweeps run at most once per second of the callers' clock, on
//! insert). When the table holds `cap` entries, inserting evicts the oldest inserted entry.

use std::collections::{HashMap, VecDeque};

/// Sweep expired entries at most this often (ms of the caller's clock).
const SWEEP_EVERY_MS: i64 = 1_000;

#[derive(Debug)]
struct Item<V> {
    value: V,
    expires_ms: i64,
    generation: u64,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Table<V> {
    map: HashMap<String, Item<V>>,
    /// Insertion order; may hold stale `(key, generation)` pairs of removed entries.
    order: VecDeque<(String, u64)>,
    cap: usize,
    generation: u64,
    next_sweep_ms: i64,
}

impl<V> Table<V> {
    /// A table of at most `cap` (≥ 1) entries.
    pub(crate) fn new(cap: usize) -> Table<V> {
        Table {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
            generation: 0,
            next_sweep_ms: i64::MIN,
        }
    }

    /// Entries held (some may have expired and not been swept yet).
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The live entry of `key`.
    pub(crate) fn get_mut(&mut self, key: &str, now_ms: i64) -> Option<&mut V> {
        match self.map.get_mut(key) {
            Some(item) if item.expires_ms > now_ms => Some(&mut item.value),
            _ => None,
        }
    }

    /// The live entry of `key`, inserting `make()` expiring at `expires_ms` if there is none.
    /// An existing entry's expiry moves to `expires_ms` if that is later.
    pub(crate) fn entry(
        &mut self,
        key: &str,
        expires_ms: i64,
        now_ms: i64,
        make: impl FnOnce() -> V,
    ) -> &mut V {
        self.maybe_sweep(now_ms);
        let live = matches!(self.map.get(key), Some(item) if item.expires_ms > now_ms);
        if !live {
            self.map.remove(key);
            while self.map.len() >= self.cap {
                if !self.evict_oldest() {
                    break;
                }
            }
            if self.order.len() >= self.cap.saturating_mul(2) {
                self.compact();
            }
            self.generation += 1;
            self.order.push_back((key.to_owned(), self.generation));
        }
        let generation = self.generation;
        // Absent here exactly when it was not live: then it gets this generation, which the
        // order queue names.
        let item = self.map.entry(key.to_owned()).or_insert_with(|| Item {
            value: make(),
            expires_ms,
            generation,
        });
        if expires_ms > item.expires_ms {
            item.expires_ms = expires_ms;
        }
        &mut item.value
    }

    /// Remove `key`.
    #[cfg(test)]
    pub(crate) fn remove(&mut self, key: &str) -> Option<V> {
        self.map.remove(key).map(|i| i.value)
    }

    /// Drop expired entries now.
    pub(crate) fn sweep(&mut self, now_ms: i64) {
        self.map.retain(|_, i| i.expires_ms > now_ms);
        self.compact();
        self.next_sweep_ms = now_ms.saturating_add(SWEEP_EVERY_MS);
    }

    fn maybe_sweep(&mut self, now_ms: i64) {
        if now_ms >= self.next_sweep_ms {
            self.sweep(now_ms);
        }
    }

    fn compact(&mut self) {
        let map = &self.map;
        self.order
            .retain(|(k, g)| map.get(k).is_some_and(|i| i.generation == *g));
    }

    fn evict_oldest(&mut self) -> bool {
        while let Some((k, g)) = self.order.pop_front() {
            if self.map.get(&k).is_some_and(|i| i.generation == g) {
                self.map.remove(&k);
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_are_swept() {
        let mut t: Table<u32> = Table::new(10);
        *t.entry("a", 100, 0, || 1) += 1;
        assert_eq!(t.get_mut("a", 99).copied(), Some(2));
        assert_eq!(t.get_mut("a", 100), None);
        // An expired entry is replaced by a fresh one.
        assert_eq!(*t.entry("a", 200, 100, || 7), 7);
        t.entry("b", 150, 100, || 0);
        t.sweep(150);
        assert_eq!(t.len(), 1);
        t.sweep(200);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn expiry_only_moves_later() {
        let mut t: Table<u32> = Table::new(10);
        t.entry("a", 100, 0, || 1);
        t.entry("a", 50, 0, || 9);
        assert!(t.get_mut("a", 99).is_some());
        t.entry("a", 300, 0, || 9);
        assert_eq!(t.get_mut("a", 299).copied(), Some(1));
    }

    #[test]
    fn the_cap_evicts_the_oldest() {
        let mut t: Table<usize> = Table::new(3);
        for (i, k) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            t.entry(k, 1_000, 0, || i);
            assert!(t.len() <= 3);
        }
        assert_eq!(t.get_mut("a", 0), None);
        assert_eq!(t.get_mut("b", 0), None);
        assert_eq!(t.get_mut("c", 0).copied(), Some(2));
        assert_eq!(t.get_mut("e", 0).copied(), Some(4));
    }

    #[test]
    fn bounded_under_many_distinct_keys() {
        let mut t: Table<u64> = Table::new(1_000);
        for i in 0..50_000u64 {
            // Mix of live and expiring entries, time moving forward.
            let now = i as i64;
            t.entry(&format!("k{i}"), now + (i % 7) as i64 * 100, now, || i);
            assert!(t.len() <= 1_000);
            assert!(t.order.len() <= 2_001);
            if i % 3 == 0 {
                t.remove(&format!("k{}", i / 2));
            }
        }
    }
}
