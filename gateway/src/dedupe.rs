//! Dropping events a client already got, after its upstream stream reconnected or after it
//! joined live from the journal — and never otherwise.
//!
//! A deduper watches every id of one stream. Once a stream's ids have been strictly increasing
//! unsigned integers [`PROOF`] times in a row it keeps only the largest (no hashing, no
//! allocation per event); until then, and from the first id that breaks that rule on, it keeps a
//! window of the last [`WINDOW`] ids instead. (Opaque ids that happen to be numbers — random
//! 64-bit ids, say — can rise a few times by chance; an id below the largest is then as likely
//! new as not, and taking it for a duplicate would drop every new event until one rose above.)
//! A stream that resumes after a cursor starts with the cursor as its one id seen
//! ([`Deduper::after`]). Only when *armed* — by [`Deduper::arm`] at a reconnect, or by
//! [`Deduper::after`] — does it drop anything: an id it has already seen (numerically at most
//! the largest, once the order is trusted; in the window, otherwise). The first new id disarms
//! it again, so a replay's duplicates go and the live stream is never touched.

use std::collections::{HashSet, VecDeque};

/// How many recent ids the window remembers once a stream's ids are not monotonic.
pub const WINDOW: usize = 4096;

/// How many strictly increasing integer ids in a row make a stream's order trusted (random ids
/// rise that many times in a row once in 32!, about 4 × 10^-36).
pub const PROOF: u32 = 32;

/// Tracks which ids of one stream were delivered.
#[derive(Debug, Clone)]
pub struct Deduper {
    armed: bool,
    /// No id has broken the increasing-integer rule yet.
    monotonic: bool,
    /// How many increasing integer ids were seen while the order is not yet trusted; at
    /// [`PROOF`] the window is let go and only the largest is kept.
    rising: u32,
    last: Option<u64>,
    recent: VecDeque<String>,
    seen: HashSet<String>,
}

impl Default for Deduper {
    fn default() -> Deduper {
        Deduper {
            armed: false,
            monotonic: true,
            rising: 0,
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
    /// armed. One id proves no order: a numeric cursor is one rise, like any first id (the
    /// upstream is asked for what follows the cursor; ids below a numeric cursor are as likely
    /// new, for a stream whose numbers fall or are random). Without a cursor the stream is
    /// fresh: [`Deduper::watching`].
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
            let trusted = self.rising >= PROOF;
            match (id.parse::<u64>(), self.last) {
                (Ok(n), Some(l)) if n <= l && self.armed && trusted => return true,
                (Ok(n), last) if last.is_none_or(|l| n > l) => {
                    self.last = Some(n);
                    if !trusted {
                        self.rise(id);
                    }
                    return false;
                }
                _ if trusted => {
                    // The stream's ids stop being increasing integers: keep a window from now on,
                    // starting with the largest id delivered so far.
                    self.monotonic = false;
                    if let Some(l) = self.last {
                        self.remember(&l.to_string());
                    }
                }
                // Not yet trusted: the window already holds every id; it stays.
                _ => self.monotonic = false,
            }
        }
        if self.seen.contains(id) {
            return true;
        }
        self.remember(id);
        false
    }

    /// One more increasing integer id while the order is not yet trusted: kept in the window,
    /// which is let go once the order is proven.
    fn rise(&mut self, id: &str) {
        self.rising += 1;
        if self.rising < PROOF {
            self.remember(id);
        } else {
            self.recent = VecDeque::new();
            self.seen = HashSet::new();
        }
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
    fn increasing_integers_compare_numerically_after_a_reconnect_once_proven() {
        let mut d = Deduper::watching();
        let rising: Vec<String> = (1..=u64::from(PROOF))
            .map(|n| (2 * n).to_string())
            .collect();
        let rising: Vec<&str> = rising.iter().map(String::as_str).collect();
        assert_eq!(delivered(&mut d, &rising), rising);
        assert!(
            d.seen.is_empty() && d.recent.is_empty(),
            "the window is let go"
        );
        d.arm();
        assert_eq!(
            delivered(&mut d, &["3", "64", "65", "70", "4"]),
            ["65", "70", "4"],
            "duplicates go until the first new id; then nothing is dropped"
        );
        let mut d = Deduper::after(Some("5"));
        assert_eq!(
            delivered(&mut d, &["5", "10", "9"]),
            ["10", "9"],
            "the cursor goes again; 10 is new"
        );
    }

    /// After a numeric cursor, what follows may fall: falling ids are new, and after the first
    /// new one nothing is dropped (these all used to be dropped, the deduper staying armed).
    #[test]
    fn ids_below_a_numeric_cursor_are_new_until_an_order_is_proven() {
        for (cursor, next) in [
            (
                "999999999995",
                ["999999999994", "999999999993", "999999999992"],
            ),
            (
                "17968240279519785019",
                ["9530861411290178921", "301172954125553411", "42"],
            ),
        ] {
            let mut d = Deduper::after(Some(cursor));
            assert!(!d.is_new(cursor), "the cursor itself was delivered");
            assert_eq!(delivered(&mut d, &next), next.to_vec(), "{cursor}");
        }
    }

    /// Random 64-bit ids that happened to rise five times (as they did in one run of the peer
    /// backend's `random64` style): after a reconnect, new ids below the largest used to be
    /// taken for replays and dropped, every one until an id rose above it.
    #[test]
    fn numbers_that_rose_by_chance_are_not_taken_for_an_order() {
        let before = [
            "12833559095615208945",
            "13621045747965074393",
            "14394077330739424247",
            "17846523080712067315",
            "17968240279519785019",
        ];
        let mut d = Deduper::watching();
        assert_eq!(delivered(&mut d, &before), before);
        d.arm();
        assert_eq!(
            delivered(
                &mut d,
                &[
                    before[4],
                    "9530861411290178921",
                    "301172954125553411",
                    before[3]
                ]
            ),
            ["9530861411290178921", "301172954125553411", before[3]],
            "the replayed id goes, the new ones come, and nothing is dropped once disarmed"
        );
        d.arm();
        assert!(
            !d.is_new("9530861411290178921"),
            "still known after the rule switched"
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
