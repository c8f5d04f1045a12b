//! What a hub lets through: per upstream read, the isolation screen (strict JSON, the stream's
//! tenant and scope), for ephemeral routes the coalescing key and the per-key rate cap, and
//! each event's shared head; per client, what a client that replayed the journal still needs.
//!
//! The private streams of one thread all read the same events: the first to admit an event
//! leaves what it learnt in the thread's journal ([`Screened`]), and the others take the
//! journal's copy when theirs is the same event byte for byte ([`admit`]).

use crate::config::Rail;
use crate::dedupe::Deduper;
use crate::inject::{prepare, Claims, Crossing, Prepared, Stamp};
use crate::journal::{Journal, Weigh};
use crate::metrics::{Metrics, ReplaySource, Violation};
use crate::proxy::sse_queue::{Batch, Chunk, Head};
use crate::sse::write::write_fields;
use crate::sse::Event;
use prometheus::{Histogram, IntCounter};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per coalescing key: the start of its current one-second window and the events it passed.
pub type Rates = HashMap<Option<String>, (Instant, u32)>;

/// Most keys whose rate windows a hub remembers; past it, windows that ended are forgotten.
const MAX_RATE_KEYS: usize = 65_536;

/// The metrics a hub updates, looked up once per route (the hub registry keeps one per route
/// name) and shared by its hubs.
pub struct HubMetrics {
    /// Events delivered to clients.
    pub forwarded: IntCounter,
    /// Events a client already had, not delivered again.
    pub deduplicated: IntCounter,
    /// Clients cut for falling behind.
    pub slow: IntCounter,
    /// What the isolation screen drops.
    pub screen: ScreenCounters,
    /// Events replayed from the journal.
    pub replayed: IntCounter,
    /// Ephemeral events over their key's rate.
    pub rate_capped: IntCounter,
    /// Upstream read to client write.
    pub latency: Histogram,
}

impl HubMetrics {
    /// The metrics of the hubs of `route`.
    pub fn of(metrics: &Metrics, route: &str) -> HubMetrics {
        HubMetrics {
            forwarded: metrics.forwarded(route, Rail::Sse),
            deduplicated: metrics.deduplicated(route, Rail::Sse),
            slow: metrics.slow_consumer(route, Rail::Sse),
            screen: ScreenCounters::of(metrics, route),
            replayed: metrics.replayed(route, ReplaySource::Journal),
            rate_capped: metrics.ephemeral_rate_capped(route),
            latency: metrics.relay_latency().clone(),
        }
    }
}

/// The counters a screen reports to, looked up once per hub.
pub struct ScreenCounters {
    /// Foreign tenant or env.
    pub violations: IntCounter,
    /// Another scope than the stream's.
    pub scope_violations: IntCounter,
    /// Not strict JSON.
    pub malformed: IntCounter,
}

impl ScreenCounters {
    /// The counters of `route`.
    pub fn of(metrics: &Metrics, route: &str) -> ScreenCounters {
        ScreenCounters {
            violations: metrics.isolation_violations(route, Violation::ForeignTenant),
            scope_violations: metrics.isolation_violations(route, Violation::ForeignScope),
            malformed: metrics.isolation_violations(route, Violation::NotStrictJson),
        }
    }
}

/// What one read's isolation checks dropped, reported once per read.
#[derive(Default)]
pub struct Screen {
    violations: u64,
    scope_violations: u64,
    malformed: u64,
}

impl Screen {
    /// Whether an event passes: strict JSON (or not JSON at all) and within the stream's tenant
    /// and scope.
    pub fn passes(&mut self, prepared: Option<&Prepared<'_>>, owner: &Stamp) -> bool {
        let Some(p) = prepared else { return true };
        if p.is_malformed() {
            self.malformed += 1;
            return false;
        }
        self.within(p.claims(), owner)
    }

    /// Whether an event with these `routing` claims is within the stream's tenant and scope.
    pub fn within(&mut self, claims: &Claims, owner: &Stamp) -> bool {
        match claims.crossing(owner) {
            Some(Crossing::Tenant) => self.violations += 1,
            Some(Crossing::Scope(_)) => self.scope_violations += 1,
            None => return true,
        }
        false
    }

    /// Counts and logs what was dropped.
    pub fn report(self, counters: &ScreenCounters, route: &str, thread: &str) {
        if self.violations > 0 {
            counters.violations.inc_by(self.violations);
            tracing::warn!(route = %route, thread_id = %thread, violations = self.violations, "upstream events name a foreign tenant; dropped");
        }
        if self.scope_violations > 0 {
            counters.scope_violations.inc_by(self.scope_violations);
            tracing::warn!(route = %route, thread_id = %thread, scope_violations = self.scope_violations, "upstream events name another scope than the stream's; dropped");
        }
        if self.malformed > 0 {
            counters.malformed.inc_by(self.malformed);
            tracing::warn!(route = %route, thread_id = %thread, malformed = self.malformed, "upstream events look like JSON but are not strict JSON; dropped");
        }
    }
}

/// What the first stream of a thread to admit an event learnt of it, kept with the event in the
/// thread's journal for the thread's other streams: its `routing` claims (checked against each
/// stream's own stamp) and its shared head. Only an event that passed the screen is journaled,
/// so a held event is never malformed.
pub struct Screened {
    claims: Claims,
    head: Option<Head>,
}

impl Weigh for Screened {
    fn weight(&self) -> usize {
        let head = self.head.as_ref().map_or(0, |h| h.len());
        std::mem::size_of::<Screened>() + head + self.claims.weight()
    }
}

/// A thread's journal, with what was learnt of its newest events.
pub type ThreadJournal = Journal<Screened>;

/// One event of a stream that keeps a journal: the journal's copy and shared head when another
/// stream of the thread already admitted the same event (only its claims are checked against
/// `owner`); otherwise parsed, screened, given its shared head and journaled after `prev` — with
/// what was learnt of it when `noted` (other streams of the thread may read it too).
/// `None`: dropped by the screen.
pub fn admit(
    (journal, noted): (&mut ThreadJournal, bool),
    ev: Event,
    prev: Option<&str>,
    owner: &Stamp,
    screen: &mut Screen,
    now: Instant,
) -> Option<(Arc<Event>, Option<Head>)> {
    if let Some((held, Some(seen))) = ev.id.as_deref().and_then(|id| journal.held(id)) {
        if **held == ev {
            if !screen.within(&seen.claims, owner) {
                return None;
            }
            return Some((held.clone(), seen.head.clone()));
        }
    }
    let prepared = ev.data.as_deref().map(prepare);
    if !screen.passes(prepared.as_ref(), owner) {
        return None;
    }
    let head = prepared.as_ref().and_then(|p| shared_head(&ev, p));
    let claims = prepared.map(Prepared::into_claims).unwrap_or_default();
    let ev = Arc::new(ev);
    let seen = noted.then(|| Screened {
        claims,
        head: head.clone(),
    });
    journal.append(&ev, seen, prev, now);
    Some((ev, head))
}

/// The value at `pointer` in an event's JSON data (a string as itself, anything else as its
/// JSON text); `None` when the data is not JSON or has no such member. A one-segment pointer
/// (`/actor_id`, the usual one) is read from the members `prepared` already split out; a
/// deeper one parses the data.
pub fn coalescing_key(
    data: &str,
    prepared: Option<&Prepared<'_>>,
    pointer: &str,
) -> Option<String> {
    let top = pointer
        .strip_prefix('/')
        .filter(|n| !n.contains(['/', '~']));
    if let Some(Some(member)) = top.zip(prepared).map(|(name, p)| p.member(name)) {
        let raw = member?;
        return Some(serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_owned()));
    }
    let v: serde_json::Value = serde_json::from_str(data).ok()?;
    match v.pointer(pointer)? {
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Counts one event of `key` in its one-second window; false when the window is full
/// (`rate` 0: no cap).
pub fn within_rate(rates: &mut Rates, key: &Option<String>, rate: u32, now: Instant) -> bool {
    if rate == 0 {
        return true;
    }
    if rates.len() >= MAX_RATE_KEYS && !rates.contains_key(key) {
        rates.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(1));
        if rates.len() >= MAX_RATE_KEYS {
            rates.clear();
        }
    }
    let (start, count) = rates.entry(key.clone()).or_insert((now, 0));
    if now.duration_since(*start) >= Duration::from_secs(1) {
        (*start, *count) = (now, 0);
    }
    if *count >= rate {
        return false;
    }
    *count += 1;
    true
}

/// What one client gets of a shared batch: all of it, or — for a client that replayed the
/// journal — what it did not already get (`None`: nothing). Checking stops once a whole batch
/// was new.
pub fn chunk_for(
    dedupe: &mut Option<Deduper>,
    batch: &Arc<Batch>,
    deduplicated: &IntCounter,
) -> Option<Chunk> {
    let Some(d) = dedupe.as_mut() else {
        return Some(Chunk::Events(batch.clone()));
    };
    let keep: Vec<usize> = (0..batch.events.len())
        .filter(|i| batch.events[*i].id.as_deref().is_none_or(|id| d.is_new(id)))
        .collect();
    let dropped = (batch.events.len() - keep.len()) as u64;
    if dropped > 0 {
        deduplicated.inc_by(dropped);
        tracing::debug!(
            dropped,
            "events the client replayed from the journal; dropped"
        );
    }
    if keep.len() == batch.events.len() {
        *dedupe = None;
        return Some(Chunk::Events(batch.clone()));
    }
    if keep.is_empty() {
        return None;
    }
    Some(Chunk::Events(Arc::new(Batch::new(
        keep.iter().map(|i| batch.events[*i].clone()).collect(),
        keep.iter().map(|i| batch.heads[*i].clone()).collect(),
    ))))
}

/// An event's fields plus `data: {members,` when its data allows a shared prefix.
/// Written in a buffer kept by the thread and copied out once, at its size: a buffer per head
/// would be a second allocation.
pub fn shared_head(ev: &Event, prepared: &Prepared<'_>) -> Option<Head> {
    thread_local! {
        static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    }
    /// A larger buffer is not kept.
    const KEEP: usize = 64 * 1024;
    SCRATCH.with(|scratch| {
        let mut head = scratch.take();
        head.clear();
        write_fields(ev, &mut head);
        head.extend_from_slice(b"data: ");
        let made = prepared
            .write_shared_prefix(&mut head)
            .then(|| Head::from(&head[..]));
        if head.capacity() <= KEEP {
            scratch.set(head);
        }
        made
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_passes_at_most_rate_events_per_second() {
        let mut rates = Rates::new();
        let t0 = Instant::now();
        let a = Some("a".to_owned());
        let passed = (0..5)
            .filter(|_| within_rate(&mut rates, &a, 3, t0))
            .count();
        assert_eq!(passed, 3);
        assert!(
            within_rate(&mut rates, &None, 3, t0),
            "another key has its own window"
        );
        let t1 = t0 + Duration::from_millis(1000);
        assert!(within_rate(&mut rates, &a, 3, t1), "a new window");
        assert!(
            (0..100).all(|_| within_rate(&mut rates, &a, 0, t1)),
            "0: no cap"
        );
    }

    #[test]
    fn the_coalescing_key_is_the_value_at_the_pointer() {
        let key = |data: &str, pointer: &str| {
            let fast = coalescing_key(data, Some(&crate::inject::prepare(data)), pointer);
            assert_eq!(
                fast,
                coalescing_key(data, None, pointer),
                "{data} {pointer}"
            );
            fast
        };
        assert_eq!(
            key(r#"{"actor_id":"u1"}"#, "/actor_id").as_deref(),
            Some("u1")
        );
        assert_eq!(key(r#"{"a":{"b":7}}"#, "/a/b").as_deref(), Some("7"));
        assert_eq!(key(r#"{"x":1}"#, "/actor_id"), None);
        assert_eq!(
            key(r#"{"x":1,"actor_id":7}"#, "/actor_id").as_deref(),
            Some("7")
        );
        assert_eq!(key("not json", "/actor_id"), None);
    }
}

#[cfg(test)]
mod admit_tests {
    use super::*;
    use crate::journal::Limits;
    use railgate_policy::{Field, RequestContext};
    use rand::{Rng, SeedableRng};

    fn stamp(env: &str, workspace: &str) -> Stamp {
        let ctx = RequestContext::from_parts(
            &[
                (Field::Tenant, "t_a"),
                (Field::Env, env),
                (Field::Workspace, workspace),
            ],
            "u1",
            "trace-1",
        );
        Stamp::new(&ctx, "th1")
    }

    fn journal() -> ThreadJournal {
        let limits = Limits {
            events: 1000,
            bytes: 1 << 20,
            age: Duration::from_secs(60),
        };
        ThreadJournal::new(limits, Instant::now())
    }

    fn event(id: &str, data: &str) -> Event {
        Event {
            id: Some(id.into()),
            data: Some(data.into()),
            last_event_id: id.into(),
            ..Default::default()
        }
    }

    type Admitted = Option<(Arc<Event>, Option<Head>)>;

    fn admit_one(j: &mut ThreadJournal, ev: Event, owner: &Stamp, screen: &mut Screen) -> Admitted {
        admit((j, true), ev, None, owner, screen, Instant::now())
    }

    #[test]
    fn a_second_stream_takes_the_journals_copy_and_checks_its_claims_against_its_own_stamp() {
        let (dev, prod) = (stamp("dev", "w1"), stamp("prod", "w1"));
        let mut j = journal();
        let mut screen = Screen::default();
        let plain = r#"{"x":1}"#;
        let (ea, ha) = admit_one(&mut j, event("1", plain), &dev, &mut screen).expect("passes");
        let (eb, hb) = admit_one(&mut j, event("1", plain), &prod, &mut screen).expect("passes");
        assert!(Arc::ptr_eq(&ea, &eb), "the journal's copy");
        let (ha, hb) = (ha.expect("a shared head"), hb.expect("a shared head"));
        assert!(Arc::ptr_eq(&ha, &hb), "the head rendered once");
        assert_eq!(&ha[..], b"id: 1\ndata: {\"x\":1,");

        // Admitted by the dev stream and journaled; the prod stream's copy names another env.
        let dev_only = r#"{"routing":{"env":"dev"},"x":2}"#;
        assert!(admit_one(&mut j, event("2", dev_only), &dev, &mut screen).is_some());
        assert!(j.held("2").is_some_and(|(_, note)| note.is_some()));
        assert!(admit_one(&mut j, event("2", dev_only), &prod, &mut screen).is_none());
        assert_eq!(screen.violations, 1);

        // The same id with other bytes is the stream's own event, screened afresh.
        let (own, _) =
            admit_one(&mut j, event("1", r#"{"x":9}"#), &prod, &mut screen).expect("passes");
        assert_eq!(own.data.as_deref(), Some(r#"{"x":9}"#));
        let (other, _) = admit_one(&mut j, event("1", "{\"a\":NaN}"), &prod, &mut screen)
            .map_or((0, 0), |_| (1, 1));
        assert_eq!(
            (other, screen.malformed),
            (0, 1),
            "malformed, though the id is held"
        );
    }

    #[test]
    fn a_journal_feeding_one_stream_keeps_no_note() {
        let mut j = journal();
        let mut screen = Screen::default();
        let now = Instant::now();
        let ev = event("1", r#"{"x":1}"#);
        let (e, _) = admit(
            (&mut j, false),
            ev,
            None,
            &stamp("dev", "w1"),
            &mut screen,
            now,
        )
        .expect("passes");
        let held = j.held("1").expect("journaled");
        assert!(Arc::ptr_eq(held.0, &e) && held.1.is_none());
    }

    /// Hostile event variants: claims of every kind, strict-JSON violations, line ends, texts
    /// that differ from another variant by one byte.
    const DATA: &[&str] = &[
        r#"{"x":1}"#,
        r#"{"x":1} "#,
        r#"{"x":"1"}"#,
        r#"{"routing":{"env":"dev"},"x":2}"#,
        r#"{"routing":{"env":"prod"}}"#,
        r#"{"routing":{"tenant_id":"t_b"},"x":3}"#,
        r#"{"routing":{"tenant_id":"t_a","workspace_id":"w2"}}"#,
        r#"{"routing":{"workspace_id":"w1"},"meta":{"k":1}}"#,
        r#"{"routing":{"thread_id":"th2"}}"#,
        r#"{"routing":{"env":7}}"#,
        "{\"a\":NaN}",
        "[1,2",
        "not json",
        "{\"x\":\"a\nb\"}",
        "{\"x\":1,\n\"y\":2}",
        r#"{"meta":{"trace_id":"forged"}}"#,
        r#"{"\u0072outing":{"env":"prod"}}"#,
    ];

    fn random_event(rng: &mut rand::rngs::StdRng) -> Event {
        let id = rng.random_range(1..8).to_string();
        let mut ev = event(&id, DATA[rng.random_range(0..DATA.len())]);
        if rng.random_bool(0.2) {
            ev.event = Some("note".into());
        }
        if rng.random_bool(0.1) {
            ev.data = None;
        }
        ev
    }

    fn same(a: &Admitted, b: &Admitted) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some((ea, ha)), Some((eb, hb))) => ea == eb && ha.as_deref() == hb.as_deref(),
            _ => false,
        }
    }

    /// Three streams of one thread (two envs, two workspaces) read seeded random events, each
    /// stream's copy sometimes differing from the others': what each admits, with the thread's
    /// journal shared, is what it admits screening every event on its own — while the journal's
    /// copy is taken whenever the bytes match.
    #[test]
    fn what_a_stream_admits_does_not_depend_on_the_streams_before_it() {
        let stamps = [stamp("dev", "w1"), stamp("prod", "w1"), stamp("dev", "w2")];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut taken = 0;
        for _round in 0..300 {
            let mut shared = journal();
            let (mut with, mut alone) = (Screen::default(), Screen::default());
            for _ in 0..12 {
                let upstream = random_event(&mut rng);
                for owner in &stamps {
                    let ev = match rng.random_bool(0.2) {
                        true => random_event(&mut rng),
                        false => upstream.clone(),
                    };
                    let held = ev
                        .id
                        .as_deref()
                        .and_then(|i| shared.held(i))
                        .map(|(e, _)| e.clone());
                    let got = admit_one(&mut shared, ev.clone(), owner, &mut with);
                    let want = admit_one(&mut journal(), ev, owner, &mut alone);
                    assert!(same(&got, &want), "{got:?} vs {want:?}");
                    if let (Some((e, _)), Some(h)) = (&got, &held) {
                        taken += usize::from(Arc::ptr_eq(e, h));
                    }
                }
            }
            let counts = |s: &Screen| (s.violations, s.scope_violations, s.malformed);
            assert_eq!(counts(&with), counts(&alone));
        }
        assert!(taken > 1000, "the journal's copy was taken {taken} times");
    }
}
