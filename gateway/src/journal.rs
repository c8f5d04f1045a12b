//! The per-thread resume journal: the last events of a thread, bounded by count, bytes and age,
//! so a client reconnecting with `Last-Event-ID` is served without asking the upstream.
//!
//! Each of the newest events may carry a note (`N`) of what its first feeding stream learnt
//! about it, so the other streams of the thread that read the same event need not work it out
//! again (see [`Journal::held`]). Notes count within the journal's byte bound, of which they
//! take at most an eighth ([`NOTE_SHARE`]): a note is only a shortcut, an event is what a
//! resume needs.

use crate::sse::Event;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bounds of one thread's journal.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most events kept.
    pub events: usize,
    /// Most bytes of event data kept.
    pub bytes: usize,
    /// Oldest event kept.
    pub age: Duration,
}

/// The memory a note holds, counted within a journal's byte bound.
pub trait Weigh {
    /// Its size in bytes, about.
    fn weight(&self) -> usize;
}

impl Weigh for () {
    fn weight(&self) -> usize {
        0
    }
}

/// Notes take at most this share of a journal's byte bound (1 / `NOTE_SHARE`).
pub const NOTE_SHARE: usize = 8;

/// How many of the newest events keep their note: the streams of a thread read an event within
/// moments of each other, and an older note would only hold memory.
pub const NOTES_KEPT: usize = 32;

#[derive(Debug)]
struct Entry {
    /// Its place in the order of appends (see [`Journal::held`]).
    seq: u64,
    event: Arc<Event>,
    size: usize,
    at: Instant,
}

impl Entry {
    /// The event's id (never empty: only such events are journaled).
    fn id(&self) -> &str {
        self.event.id.as_deref().unwrap_or_default()
    }
}

/// One thread's journal. Only events with an id are kept (nothing else can be resumed to).
#[derive(Debug)]
pub struct Journal<N = ()> {
    entries: VecDeque<Entry>,
    /// The notes of the newest events, by their place in the order of appends (kept apart from
    /// `entries`, so an entry has no room for a note it no longer has).
    notes: VecDeque<(u64, N)>,
    /// The size of `entries`' events.
    bytes: usize,
    /// The size of `notes` (see [`Weigh`]).
    note_bytes: usize,
    limits: Limits,
    /// Where each id of `entries` is in the order of appends, so an event already held is
    /// recognised whatever its id looks like (hashed with foldhash, seeded per process: looked
    /// up on every delivery, where SipHash cost a delivery ~2% of its instructions).
    held: HashMap<Arc<str>, u64, foldhash::fast::RandomState>,
    next_seq: u64,
    last_used: Instant,
}

fn size_of(e: &Event) -> usize {
    e.text_len() + 64
}

impl<N: Weigh> Journal<N> {
    /// An empty journal.
    pub fn new(limits: Limits, now: Instant) -> Journal<N> {
        Journal {
            entries: VecDeque::new(),
            notes: VecDeque::new(),
            bytes: 0,
            note_bytes: 0,
            limits,
            held: HashMap::default(),
            next_seq: 0,
            last_used: now,
        }
    }

    /// Appends an event that carries an id, with its `note` if any. `prev` is the id the feeding
    /// stream delivered just before it. The journal stays contiguous: an event it already holds
    /// (several private streams of one thread feed it) is skipped, and an event that does not
    /// follow the journal's last one starts the journal afresh — a replay must never jump a hole.
    pub fn append(
        &mut self,
        event: &Arc<Event>,
        note: Option<N>,
        prev: Option<&str>,
        now: Instant,
    ) {
        let Some(id) = event.id.as_ref().filter(|i| !i.is_empty()) else {
            return;
        };
        if self.held.contains_key(&**id) {
            return;
        }
        let follows = match self.entries.back() {
            None => true,
            Some(last) => prev == Some(last.id()),
        };
        if !follows {
            self.entries.clear();
            self.notes.clear();
            self.held.clear();
            self.bytes = 0;
            self.note_bytes = 0;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.held.insert(id.clone(), seq);
        let size = size_of(event);
        self.entries.push_back(Entry {
            seq,
            event: event.clone(),
            size,
            at: now,
        });
        if let Some(note) = note {
            if self.notes.len() == NOTES_KEPT {
                self.drop_note();
            }
            self.note_bytes += note.weight();
            self.notes.push_back((seq, note));
        }
        self.bytes += size;
        self.last_used = now;
        self.prune(now);
    }

    /// Where the event with `id` is in `entries`.
    fn position(&self, id: &str) -> Option<usize> {
        let seq = *self.held.get(id)?;
        let first = self.entries.front()?.seq;
        seq.checked_sub(first).map(|p| p as usize)
    }

    /// The held event with `id`, and its note while it is among the newest [`NOTES_KEPT`].
    pub fn held(&self, id: &str) -> Option<(&Arc<Event>, Option<&N>)> {
        let e = self.entries.get(self.position(id)?)?;
        let note = self
            .notes
            .binary_search_by_key(&e.seq, |(seq, _)| *seq)
            .ok()
            .map(|i| &self.notes[i].1);
        Some((&e.event, note))
    }

    /// Drops the oldest note.
    fn drop_note(&mut self) {
        if let Some((_, note)) = self.notes.pop_front() {
            self.note_bytes -= note.weight();
        }
    }

    fn prune(&mut self, now: Instant) {
        while !self.notes.is_empty() && self.note_bytes > self.limits.bytes / NOTE_SHARE {
            self.drop_note();
        }
        while let Some(front) = self.entries.front() {
            let too_many = self.entries.len() > self.limits.events;
            let too_big = self.bytes + self.note_bytes > self.limits.bytes;
            let too_old = now.saturating_duration_since(front.at) > self.limits.age;
            if !(too_many || too_big || too_old) {
                break;
            }
            self.bytes -= front.size;
            self.held.remove(front.id());
            self.entries.pop_front();
        }
        // And a note outlives no event.
        let first = self.entries.front().map_or(u64::MAX, |e| e.seq);
        while self.notes.front().is_some_and(|(seq, _)| *seq < first) {
            self.drop_note();
        }
    }

    /// The events after `cursor`, or `None` when the journal does not hold `cursor`.
    pub fn after(&mut self, cursor: &str, now: Instant) -> Option<Vec<Arc<Event>>> {
        self.prune(now);
        self.last_used = now;
        let pos = self.position(cursor)?;
        Some(
            self.entries
                .iter()
                .skip(pos + 1)
                .map(|e| e.event.clone())
                .collect(),
        )
    }

    /// The id of the newest event held.
    pub fn last_id(&self) -> Option<&str> {
        self.entries.back().map(Entry::id)
    }

    /// Number of events held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Every thread's journal, keyed by route and thread. Journals unused for longer than their age
/// bound are dropped by [`Journals::sweep`].
pub struct Journals<N = ()> {
    map: Mutex<JournalMap<N>>,
}

type JournalMap<N> = HashMap<(String, String), Arc<Mutex<Journal<N>>>>;

impl<N> Default for Journals<N> {
    fn default() -> Self {
        Journals {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<N: Weigh> Journals<N> {
    /// The journal of a thread, created on first use.
    pub fn get(&self, route: &str, thread: &str, limits: Limits) -> Arc<Mutex<Journal<N>>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((route.to_owned(), thread.to_owned()))
            .or_insert_with(|| Arc::new(Mutex::new(Journal::new(limits, Instant::now()))))
            .clone()
    }

    /// Drops journals idle for longer than their age bound and not referenced elsewhere.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let before = map.len();
        map.retain(|_, j| {
            Arc::strong_count(j) > 1
                || j.lock()
                    .map(|j| now.saturating_duration_since(j.last_used) <= j.limits.age)
                    .unwrap_or(false)
        });
        before - map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, data: &str) -> Arc<Event> {
        Arc::new(Event {
            id: Some(id.into()),
            data: Some(data.into()),
            last_event_id: id.into(),
            ..Default::default()
        })
    }

    fn limits() -> Limits {
        Limits {
            events: 3,
            bytes: 10_000,
            age: Duration::from_secs(60),
        }
    }

    fn ids(v: &[Arc<Event>]) -> Vec<String> {
        v.iter()
            .map(|e| e.id.as_deref().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn replays_after_a_held_cursor() {
        let t = Instant::now();
        let mut j = Journal::new(limits(), t);
        for i in 1..=3 {
            j.append(
                &ev(&i.to_string(), "x"),
                Some(()),
                (i > 1).then(|| (i - 1).to_string()).as_deref(),
                t,
            );
        }
        assert_eq!(ids(&j.after("1", t).expect("held")), vec!["2", "3"]);
        assert_eq!(j.after("3", t).map(|v| v.len()), Some(0));
        assert!(j.after("9", t).is_none());
    }

    #[test]
    fn bounded_by_count_bytes_and_age() {
        let t = Instant::now();
        let mut j = Journal::new(limits(), t);
        for i in 1..=5 {
            j.append(
                &ev(&i.to_string(), "x"),
                Some(()),
                Some(&(i - 1).to_string()),
                t,
            );
        }
        assert_eq!(j.len(), 3);
        assert!(j.after("2", t).is_none(), "evicted by count");
        let mut j = Journal::new(
            Limits {
                events: 100,
                bytes: 200,
                age: Duration::from_secs(60),
            },
            t,
        );
        for i in 1..=5 {
            j.append(
                &ev(&i.to_string(), &"y".repeat(50)),
                Some(()),
                Some(&(i - 1).to_string()),
                t,
            );
        }
        assert!(j.len() < 5 && j.bytes <= 200);
        let mut j = Journal::new(limits(), t);
        j.append(&ev("1", "x"), Some(()), None, t);
        assert!(
            j.after("1", t + Duration::from_secs(61)).is_none(),
            "expired by age"
        );
    }

    #[test]
    fn duplicates_from_parallel_streams_are_kept_once_and_idless_events_skipped() {
        let t = Instant::now();
        let mut j = Journal::new(limits(), t);
        j.append(&ev("1", "a"), Some(()), None, t);
        j.append(&ev("1", "a"), Some(()), None, t);
        j.append(
            &Arc::new(Event {
                data: Some("no id".into()),
                ..Default::default()
            }),
            Some(()),
            Some("1"),
            t,
        );
        j.append(&ev("2", "b"), Some(()), Some("1"), t);
        assert_eq!(ids(&j.after("1", t).expect("held")), vec!["2"]);
    }

    #[test]
    fn ids_of_any_shape_are_all_held() {
        let roomy = Limits {
            events: 16,
            ..limits()
        };
        let mut j = Journal::new(roomy, Instant::now());
        let style = [
            "a3f9c1", "905512", "b7e2d0", "118734", "c0ffee", "000042", "7", "ffe001",
        ];
        let mut prev: Option<&str> = None;
        for id in style {
            j.append(&ev(id, "x"), Some(()), prev, Instant::now());
            prev = Some(id);
        }
        assert_eq!(j.len(), style.len());
        let after = j.after("905512", Instant::now()).expect("held");
        assert_eq!(ids(&after), style[2..].to_vec());
    }

    #[test]
    fn an_event_that_does_not_follow_restarts_the_journal() {
        let t = Instant::now();
        let mut j = Journal::new(
            Limits {
                events: 10,
                bytes: 10_000,
                age: Duration::from_secs(60),
            },
            t,
        );
        j.append(&ev("3", "a"), Some(()), Some("2"), t);
        j.append(&ev("4", "b"), Some(()), Some("3"), t);
        // A stream that started "from now" delivers 17 with nothing before it.
        j.append(&ev("17", "c"), Some(()), None, t);
        assert!(
            j.after("3", t).is_none(),
            "3 would replay across the hole 5..16"
        );
        assert_eq!(j.after("17", t).map(|v| v.len()), Some(0));
        j.append(&ev("18", "d"), Some(()), Some("17"), t);
        assert_eq!(ids(&j.after("17", t).expect("held")), vec!["18"]);
    }

    /// A test note of no size.
    impl Weigh for usize {
        fn weight(&self) -> usize {
            0
        }
    }

    /// A test note of the size it says.
    struct Heavy(usize);

    impl Weigh for Heavy {
        fn weight(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn notes_take_at_most_an_eighth_of_the_byte_bound_and_never_outlive_their_event() {
        let t = Instant::now();
        let bound = |events| Limits {
            events,
            bytes: 8_000,
            age: Duration::from_secs(60),
        };
        let mut j = Journal::new(bound(1000), t);
        for i in 1..=40 {
            let prev = (i - 1).to_string();
            let prev = (i > 1).then_some(&*prev);
            j.append(&ev(&i.to_string(), "x"), Some(Heavy(300)), prev, t);
        }
        let noted =
            |j: &Journal<Heavy>, id: usize| j.held(&id.to_string()).map(|(_, n)| n.is_some());
        assert_eq!(j.len(), 40, "every event held");
        assert_eq!((j.notes.len(), j.note_bytes), (3, 900));
        assert_eq!(
            [38, 39, 40, 37].map(|i| noted(&j, i)),
            [Some(true), Some(true), Some(true), Some(false)]
        );
        // Events fill the rest of the bound: the notes count in it.
        for i in 41..=200 {
            let prev = (i - 1).to_string();
            j.append(
                &ev(&i.to_string(), &"y".repeat(100)),
                Some(Heavy(300)),
                Some(&prev),
                t,
            );
            assert!(
                j.bytes + j.note_bytes <= 8_000,
                "{} + {}",
                j.bytes,
                j.note_bytes
            );
        }
        assert!(j.len() < 160);
        assert_eq!((noted(&j, 200), noted(&j, 197)), (Some(true), Some(false)));
        // An event dropped by the count bound takes its note along.
        let mut j = Journal::new(bound(2), t);
        for i in 1..=3 {
            let prev = (i - 1).to_string();
            let prev = (i > 1).then_some(&*prev);
            j.append(&ev(&i.to_string(), "x"), Some(Heavy(10)), prev, t);
        }
        assert_eq!((j.len(), j.notes.len(), j.note_bytes), (2, 2, 20));
    }

    #[test]
    fn held_events_keep_their_note_while_among_the_newest() {
        let t = Instant::now();
        let roomy = Limits {
            events: 1000,
            ..limits()
        };
        let mut j = Journal::new(roomy, t);
        let total = NOTES_KEPT + 10;
        for i in 1..=total {
            let prev = (i - 1).to_string();
            j.append(
                &ev(&i.to_string(), "x"),
                Some(i * 10),
                (i > 1).then_some(&*prev),
                t,
            );
        }
        let note = |j: &Journal<usize>, id: usize| {
            j.held(&id.to_string())
                .map(|(e, n)| (e.id.clone(), n.copied()))
        };
        assert_eq!(
            note(&j, total),
            Some((Some(total.to_string().into()), Some(total * 10)))
        );
        assert_eq!(
            note(&j, 11),
            Some((Some("11".into()), Some(110))),
            "the oldest kept"
        );
        assert_eq!(
            note(&j, 10),
            Some((Some("10".into()), None)),
            "held, its note dropped"
        );
        assert_eq!(note(&j, total + 1), None);
        // A restart forgets every id it held.
        j.append(&ev("900", "y"), Some(0), None, t);
        assert_eq!(note(&j, total), None);
        assert_eq!(j.held("900").map(|(_, n)| n.copied()), Some(Some(0)));
    }

    #[test]
    fn idle_journals_are_swept() {
        let js = Journals::<()>::default();
        let l = Limits {
            events: 10,
            bytes: 1000,
            age: Duration::from_millis(0),
        };
        drop(js.get("r", "t1", l));
        assert_eq!(js.sweep(Instant::now() + Duration::from_millis(5)), 1);
    }
}
