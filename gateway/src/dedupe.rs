//! Dropping events already delivered, after an upstream reconnect or a journal replay.
//!
//! An id that is an unsigned integer is new when it is larger than the largest such id seen
//! (no hashing, no allocation per event). Any other id is new when it is not among the last
//! [`WINDOW`] such ids.

use std::collections::{HashSet, VecDeque};

/// How many recent non-numeric ids the window remembers.
pub const WINDOW: usize = 4096;

/// Tracks which ids were delivered.
#[derive(Debug, Clone, Default)]
pub struct Deduper {
    last: Option<u64>,
    recent: VecDeque<String>,
    seen: HashSet<String>,
}

impl Deduper {
    /// A deduper that considers `cursor` (and, numerically, everything before it) delivered.
    pub fn after(cursor: Option<&str>) -> Deduper {
        let mut d = Deduper::default();
        if let Some(c) = cursor.filter(|c| !c.is_empty()) {
            d.is_new(c);
        }
        d
    }

    /// Whether `id` was not delivered yet; records it. Empty ids are always new (they carry no
    /// identity).
    pub fn is_new(&mut self, id: &str) -> bool {
        if id.is_empty() {
            return true;
        }
        if let Ok(n) = id.parse::<u64>() {
            let fresh = self.last.is_none_or(|l| n > l);
            if fresh {
                self.last = Some(n);
            }
            return fresh;
        }
        if self.seen.contains(id) {
            return false;
        }
        if self.recent.len() == WINDOW {
            if let Some(old) = self.recent.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(id.to_owned());
        self.recent.push_back(id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_ids_compare_numerically() {
        let mut d = Deduper::after(Some("5"));
        assert!(!d.is_new("3"));
        assert!(!d.is_new("5"));
        assert!(d.is_new("6"));
        assert!(
            d.is_new("10"),
            "10 > 6 numerically, though \"10\" < \"6\" as text"
        );
        assert!(!d.is_new("9"));
    }

    #[test]
    fn non_numeric_ids_fall_back_to_the_window() {
        let mut d = Deduper::after(Some("a"));
        assert!(!d.is_new("a"));
        assert!(d.is_new("b"));
        assert!(!d.is_new("b"));
        assert!(d.is_new("1"));
        assert!(!d.is_new("1"));
    }

    #[test]
    fn window_forgets_the_oldest() {
        let mut d = Deduper::after(Some("x0"));
        for i in 1..=WINDOW {
            assert!(d.is_new(&format!("x{i}")));
        }
        assert!(d.is_new("x0"), "evicted from the window");
        assert!(!d.is_new(&format!("x{WINDOW}")));
    }

    #[test]
    fn numeric_and_text_ids_mixed_each_keep_their_rule() {
        let mut d = Deduper::default();
        for i in 1..=3 {
            assert!(d.is_new(&i.to_string()));
        }
        assert!(d.is_new("x"));
        assert!(!d.is_new("2"), "not above the largest number seen");
        assert!(!d.is_new("3"));
        assert!(d.is_new("4"));
        assert!(!d.is_new("x"));
    }

    #[test]
    fn empty_ids_are_always_new() {
        let mut d = Deduper::default();
        assert!(d.is_new(""));
        assert!(d.is_new(""));
    }
}
