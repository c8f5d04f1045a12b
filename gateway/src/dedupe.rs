//! Dropping events a client already got, after its upstream stream reconnected or after it
//! joined live from the journal — and never otherwise.
//!
//! A deduper watches every id of one stream. While the stream's ids have all been strictly
//! increasing unsigned integers it keeps only the largest (no hashing, no allocation per event);
//! from the first id that breaks that rule on, it keeps a window of the last [`WINDOW`] ids
//! instead. Only when *armed* — by [`Deduper::arm`] at a reconnect, or by [`Deduper::after`]
//! for a stream that resumes after a cursor — does it drop anything: an id it has already seen
//! (numerically at most the largest, while monotonic; in the window, otherwise). The first new
//! id disarms it again, so a replay's duplicates go and the live stream is never touched.

use std::collections::{HashSet, VecDeque};

/// How many recent ids the window remembers once a stream's ids are not monotonic.
pub const WINDOW: usize = 4096;

/// Tracks which ids of one stream were delivered.
#[derive(Debug, Clone)]
pub struct Deduper {
    armed: bool,
    monotonic: bool,
    last: Option<u64>,
    recent: VecDeque<String>,
    seen: HashSet<String>,
}

impl Default for Deduper {
    fn default() -> Deduper {
        Deduper {
            armed: false,
            monotonic: true,
            last: None,
            recent: VecDeque::new(),
            seen: HashSet::new(),
        }
    }
}

impl Deduper {
    /// A fresh stream: ids are recorded, nothing is dropped until [`Deduper::arm`].
    pub fn watching() -> Deduper {
        Deduper::default()
    }

    /// A stream that resumes after `cursor`: `cursor` counts as delivered, and the deduper is
    /// armed. Without a cursor the stream is fresh: [`Deduper::watching`].
    pub fn after(cursor: Option<&str>) -> Deduper {
        let mut d = Deduper::default();
        if let Some(c) = cursor.filter(|c| !c.is_empty()) {
            d.record(c);
            d.armed = true;
        }
        d
    }

    /// The stream reconnected (or replays): drop what was already delivered until a new id comes.
    pub fn arm(&mut self) {
        self.armed = true;
    }

    /// Whether `id` is to be delivered; records it. Empty ids are always new (they carry no
    /// identity).
    pub fn is_new(&mut self, id: &str) -> bool {
        if id.is_empty() {
            return true;
        }
        let seen = self.record(id);
        if !self.armed {
            return true;
        }
        if seen {
            return false;
        }
        self.armed = false;
        true
    }

    /// Records `id`; returns whether it was seen before by the stream's rule.
    fn record(&mut self, id: &str) -> bool {
        if self.monotonic {
            match (id.parse::<u64>(), self.last) {
                (Ok(n), Some(l)) if n <= l && self.armed => return true,
                (Ok(n), last) if last.is_none_or(|l| n > l) => {
                    self.last = Some(n);
                    return false;
                }
                _ => {
                    // The stream's ids stop being increasing integers: keep a window from now on,
                    // starting with the largest id delivered so far.
                    self.monotonic = false;
                    if let Some(l) = self.last {
                        self.remember(&l.to_string());
                    }
                }
            }
        }
        if self.seen.contains(id) {
            return true;
        }
        self.remember(id);
        false
    }

    fn remember(&mut self, id: &str) {
        if self.recent.len() == WINDOW {
            if let Some(old) = self.recent.pop_front() {
                self.seen.remove(&old);
            }
        }
        if self.seen.insert(id.to_owned()) {
            self.recent.push_back(id.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(d: &mut Deduper, ids: &[&str]) -> Vec<String> {
        ids.iter()
            .filter(|id| d.is_new(id))
            .map(|id| id.to_string())
            .collect()
    }

    #[test]
    fn a_stream_that_never_reconnected_loses_nothing() {
        let styles: [&[&str]; 4] = [
            &[
                "a3f9c1", "905512", "b7e2d0", "118734", "c0ffee", "000042", "7", "ffe001",
            ],
            &["01J9Z3", "01J9Z2", "01J9Z4", "01J9Z1"],
            &["18446744073709551615", "42", "9007199254740993", "1", "1"],
            &["1000", "999", "998", "2", "1"],
        ];
        for ids in styles {
            let mut d = Deduper::watching();
            assert_eq!(delivered(&mut d, ids), ids.to_vec(), "{ids:?}");
        }
    }

    #[test]
    fn increasing_integers_compare_numerically_after_a_reconnect() {
        let mut d = Deduper::watching();
        assert_eq!(delivered(&mut d, &["1", "2", "5"]), ["1", "2", "5"]);
        d.arm();
        assert_eq!(
            delivered(&mut d, &["3", "5", "6", "10", "4"]),
            ["6", "10", "4"],
            "duplicates go until the first new id; then nothing is dropped"
        );
        let mut d = Deduper::after(Some("5"));
        assert_eq!(
            delivered(&mut d, &["3", "5", "10", "9"]),
            ["10", "9"],
            "10 > 5 numerically, though \"10\" < \"5\" as text"
        );
    }

    #[test]
    fn other_ids_use_the_window_after_a_reconnect() {
        for ids in [
            ["a3f9c1", "905512", "b7e2d0", "118734"],
            ["1000", "999", "998", "997"],
            ["18446744073709551615", "42", "9007199254740993", "3"],
        ] {
            let mut d = Deduper::watching();
            assert_eq!(delivered(&mut d, &ids), ids.to_vec());
            d.arm();
            assert_eq!(
                delivered(&mut d, &[ids[2], ids[3], "new", ids[1]]),
                ["new", ids[1]],
                "{ids:?}"
            );
        }
    }

    #[test]
    fn the_largest_number_seen_stays_known_when_the_rule_switches() {
        let mut d = Deduper::watching();
        assert_eq!(delivered(&mut d, &["1", "2", "x"]), ["1", "2", "x"]);
        d.arm();
        assert_eq!(delivered(&mut d, &["x", "2", "y"]), ["y"]);
    }

    #[test]
    fn window_forgets_the_oldest() {
        let mut d = Deduper::after(Some("x0"));
        assert!(d.is_new("x1"));
        for i in 2..=WINDOW {
            assert!(d.is_new(&format!("x{i}")));
        }
        d.arm();
        assert!(d.is_new("x0"), "evicted from the window");
        d.arm();
        assert!(!d.is_new(&format!("x{WINDOW}")));
    }

    #[test]
    fn empty_ids_are_always_new() {
        let mut d = Deduper::after(Some("1"));
        assert!(d.is_new(""));
        assert!(d.is_new(""));
        assert!(!d.is_new("1"));
    }
}
