//! The global in-flight byte budget: bounds the memory all sessions of one ingress may hold in
//! message content. A session that cannot grow its share gets `452 4.3.1` for that message.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Shared counter of bytes held against a fixed limit.
#[derive(Debug)]
pub struct ByteBudget {
    limit: usize,
    used: AtomicUsize,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        ByteBudget {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// Take `n` more bytes if that stays within the limit.
    pub fn try_grow(&self, n: usize) -> bool {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(n).filter(|v| *v <= self.limit) else {
                return false;
            };
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Give back `n` bytes.
    pub fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes currently held.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// One session's share of the budget, returned when dropped.
pub(crate) struct Reservation<'a> {
    budget: &'a ByteBudget,
    held: usize,
}

impl<'a> Reservation<'a> {
    /// An empty reservation.
    pub(crate) fn new(budget: &'a ByteBudget) -> Self {
        Reservation { budget, held: 0 }
    }

    /// Adjust the share to `want` bytes; false when growing is refused (the share is unchanged).
    pub(crate) fn resize(&mut self, want: usize) -> bool {
        if want > self.held {
            if !self.budget.try_grow(want - self.held) {
                return false;
            }
        } else {
            self.budget.release(self.held - want);
        }
        self.held = want;
        true
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget.release(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_past_limit_and_releases_on_drop() {
        let b = ByteBudget::new(100);
        {
            let mut r1 = Reservation::new(&b);
            let mut r2 = Reservation::new(&b);
            assert!(r1.resize(60));
            assert!(!r2.resize(50));
            assert!(r2.resize(40));
            assert_eq!(b.used(), 100);
            assert!(r1.resize(10));
            assert_eq!(b.used(), 50);
        }
        assert_eq!(b.used(), 0);
    }
}
