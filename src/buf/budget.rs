//! A byte count shared between threads with a bound: what a queue between
//! threads holds, charged by producers and given back by its consumer.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes held against a bound, reserved before they are queued.
#[derive(Debug)]
pub(crate) struct Budget {
    held: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub(crate) const fn new(limit: usize) -> Self {
        Self {
            held: AtomicUsize::new(0),
            limit,
        }
    }

    /// Reserves `cost` bytes, or nothing if they do not fit. The add comes
    /// first and is taken back on overflow, so producers racing on one
    /// budget never hold more than the bound between them (one of them may
    /// be refused by a reservation that is then taken back: a refusal near
    /// the bound, which is what the bound is for).
    pub(crate) fn charge(&self, cost: usize) -> bool {
        let before = self.held.fetch_add(cost, Ordering::Relaxed);
        if before.saturating_add(cost) > self.limit {
            self.give_back(cost);
            return false;
        }
        true
    }

    /// Returns bytes that were charged.
    pub(crate) fn give_back(&self, cost: usize) {
        self.held.fetch_sub(cost, Ordering::Relaxed);
    }

    /// The bound.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_fit_within_the_bound_and_come_back() {
        let budget = Budget::new(10);
        assert!(budget.charge(6));
        assert!(!budget.charge(5), "6 + 5 is over 10");
        assert_eq!(budget.held(), 6, "a refused charge leaves nothing");
        assert!(budget.charge(4));
        budget.give_back(10);
        assert_eq!(budget.held(), 0);
    }
}
