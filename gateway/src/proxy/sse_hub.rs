//! One upstream SSE stream's clients: a hub takes the events its upstream side reads
//! ([`super::sse_upstream`]), drops what was already delivered (after a reconnect), appends to
//! the thread's journal, drops events naming a foreign tenant, and hands each client's bounded
//! queue one shared batch that the client's body finishes with its own stamp. A full queue ends
//! that client with `stream.slow_consumer`. A hub is private (one client) or shared by every
//! client of its thread (`share_upstream`).

use crate::cluster::journal::Mirror;
use crate::config::{Delivery, Ephemeral, Route};
use crate::dedupe::Deduper;
use crate::inject::{prepare, Stamp};
use crate::proxy::sse_body::EndSlot;
use crate::proxy::sse_placement::Placement;
use crate::proxy::sse_queue::{wire_size, Batch, Chunk, ClientTx, Refused};
use crate::proxy::sse_screen::{
    admit, chunk_for, coalescing_key, shared_head, within_rate, HubMetrics, Rates, Screen,
    ThreadJournal,
};
use crate::respond;
use crate::sse::frames::{render, resume_frame};
use crate::sse::Event;
use bytes::Bytes;
use railgate_policy::ErrorCode;
use smallvec::SmallVec;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// One client of a hub.
pub struct Sub {
    /// Hub-local id.
    pub id: u64,
    /// The client's queue.
    pub tx: ClientTx,
    /// Where a final frame goes when the hub ends this client.
    pub end: Arc<EndSlot>,
    /// The client's stamp.
    pub stamp: Arc<Stamp>,
    /// The client's trace id (for error envelopes).
    pub trace_id: String,
    /// Set for clients that replayed from the journal: drops live events they already got.
    pub dedupe: Option<Deduper>,
}

/// Whether a hub feeds one client or every client of its thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// One client, its own upstream stream.
    Private,
    /// Every client of the thread (`share_upstream`).
    Shared,
}

struct State {
    subs: Vec<Sub>,
    dedupe: Deduper,
    /// The last event id delivered (what a reconnect resumes from).
    last_id: Option<Arc<str>>,
    /// Cluster mode: the id of the last event passed to the clients (screened-out ones are
    /// not), which the cluster's journal is told the next one follows.
    chain: Option<Arc<str>>,
    /// A client cursor to announce as `resume_cursor` (source upstream) once connected.
    pending_resume: Option<String>,
    /// Ephemeral routes: each coalescing key's rate window.
    rates: Rates,
}

/// A hub.
pub struct Hub {
    /// The route (for metrics and deadlines).
    pub route: Arc<Route>,
    /// The thread.
    pub thread: String,
    /// The stream's key: the thread, or thread and user (`stream_scope`).
    pub key: String,
    /// The stamp of the client the hub was made for: what the isolation screen checks events
    /// against. Every client of a hub passed the ownership check of the same thread (and stream
    /// key), so they share one tenant, env and scope; a hub may have no client attached while one
    /// replays the journal, and what it reads then is screened and journaled all the same.
    owner: Arc<Stamp>,
    journal: Arc<Mutex<ThreadJournal>>,
    state: Mutex<State>,
    /// Signalled when a client leaves, so an idle hub can stop.
    pub left: Arc<Notify>,
    next_sub: AtomicU64,
    sharing: Sharing,
    metrics: Arc<HubMetrics>,
    /// Clients replaying the journal that will join (they keep an idle hub alive).
    joining: AtomicU64,
    /// Whether the hub's source is in place ([`crate::proxy::sse_placement`]).
    pub placement: Placement,
    /// Cluster mode: the way into the cluster's journal.
    pub mirror: Mirror,
}

/// Counts a client as joining until dropped.
pub struct Joining(Arc<Hub>);

impl Joining {
    /// Registers a joining client on `hub`.
    pub fn new(hub: &Arc<Hub>) -> Joining {
        hub.joining.fetch_add(1, Ordering::SeqCst);
        Joining(hub.clone())
    }
}

impl Drop for Joining {
    fn drop(&mut self) {
        self.0.joining.fetch_sub(1, Ordering::SeqCst);
        self.0.left.notify_one();
    }
}

/// How long a replaying client may leave its queue full before it counts as slow.
pub const REPLAY_STALL: Duration = Duration::from_secs(30);

impl Hub {
    /// A hub for `thread` (stream `key`) on `route`, made for the client whose stamp is
    /// `owner`, resuming after `cursor` if given.
    pub fn new(
        metrics: Arc<HubMetrics>,
        route: Arc<Route>,
        (thread, key): (String, String),
        owner: Arc<Stamp>,
        journal: Arc<Mutex<ThreadJournal>>,
        cursor: Option<&str>,
        sharing: Sharing,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            route,
            thread,
            key,
            owner,
            journal,
            state: Mutex::new(State {
                // A private hub has one client for its whole life; a shared one grows.
                subs: Vec::with_capacity(usize::from(sharing == Sharing::Private)),
                dedupe: Deduper::after(cursor),
                last_id: cursor.map(Arc::from),
                chain: cursor.map(Arc::from),
                pending_resume: None,
                rates: Rates::new(),
            }),
            left: Arc::new(Notify::new()),
            next_sub: AtomicU64::new(1),
            sharing,
            metrics,
            joining: AtomicU64::new(0),
            placement: Placement::default(),
            mirror: Mirror::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh subscriber id.
    pub fn sub_id(&self) -> u64 {
        self.next_sub.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether no client is left (or on its way in).
    pub fn is_empty(&self) -> bool {
        let mut st = self.lock();
        st.subs.retain(|s| !s.tx.is_closed());
        st.subs.is_empty() && self.joining.load(Ordering::SeqCst) == 0
    }

    /// Whether this hub is shared by every client of its thread.
    pub fn sharing(&self) -> Sharing {
        self.sharing
    }

    /// The id a reconnect resumes from.
    pub fn last_id(&self) -> Option<String> {
        let st = self.lock();
        st.last_id
            .as_deref()
            .filter(|i| !i.is_empty())
            .map(str::to_owned)
    }

    /// Announce `cursor` (source upstream) to the clients once the upstream answers.
    pub fn set_pending_resume(&self, cursor: String) {
        self.lock().pending_resume = Some(cursor);
    }

    /// Adds a client that starts live (no replay).
    pub fn subscribe(&self, sub: Sub) {
        self.lock().subs.push(sub);
    }

    /// Replays the journal after `cursor` into the client's queue, waiting for room (a long
    /// backlog is not a slow consumer), then joins live. The join happens under the hub lock
    /// after re-reading the journal, so no event falls between replay and live delivery. A client
    /// that stops reading for [`REPLAY_STALL`], or falls behind the journal, ends with
    /// `stream.slow_consumer`; it resumes from its last id like any other client.
    pub async fn catch_up_and_join(&self, mut sub: Sub, cursor: String, _joining: Joining) {
        let mut at = cursor;
        let mut replayed = 0u64;
        loop {
            let Some(batch) = self.journal_after(&at) else {
                sub.end.set(
                    respond::sse(ErrorCode::SlowConsumer, &sub.trace_id),
                    ErrorCode::SlowConsumer,
                );
                return;
            };
            if batch.is_empty() {
                // The journal may have moved since this read: then replay the rest first.
                sub = match self.try_join(sub, &at) {
                    Some(back) => back,
                    None => return self.metrics.replayed.inc_by(replayed),
                };
                continue;
            }
            for ev in &batch {
                if let Some(b) = render(ev, &sub.stamp) {
                    match tokio::time::timeout(REPLAY_STALL, sub.tx.send(Chunk::Raw(b))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return,
                        Err(_) => return self.cut_slow(&sub),
                    }
                }
                if let Some(id) = ev.id.as_deref() {
                    at = id.to_owned();
                }
                replayed += 1;
            }
        }
    }

    fn journal_after(&self, at: &str) -> Option<Vec<Arc<Event>>> {
        self.journal
            .lock()
            .ok()
            .and_then(|mut j| j.after(at, Instant::now()))
    }

    /// Joins live under the hub lock if the journal still holds nothing after `at`; gives the
    /// client back otherwise.
    fn try_join(&self, mut sub: Sub, at: &str) -> Option<Sub> {
        let mut st = self.lock();
        if !self.journal_after(at).is_some_and(|b| b.is_empty()) {
            return Some(sub);
        }
        match self.sharing {
            Sharing::Shared => sub.dedupe = Some(Deduper::after(Some(at))),
            Sharing::Private => {
                st.dedupe = Deduper::after(Some(at));
                st.last_id = Some(Arc::from(at));
                st.chain = Some(Arc::from(at));
            }
        }
        st.subs.push(sub);
        None
    }

    /// Queues a frame for one client; on overflow ends it as a slow consumer.
    fn push(&self, sub: &mut Sub, frame: impl Into<Chunk>) -> bool {
        match sub.tx.try_send(frame.into()) {
            Ok(()) => true,
            Err(Refused::Full | Refused::Stalled) => {
                self.cut_slow(sub);
                false
            }
            Err(Refused::Closed) => false,
        }
    }

    /// Ends a client that fell behind: `stream.slow_consumer` after what it already has (over
    /// HTTP/2, at once: see [`ClientTx::abandon`]).
    fn cut_slow(&self, sub: &Sub) {
        sub.tx.abandon();
        sub.end.set(
            respond::sse(ErrorCode::SlowConsumer, &sub.trace_id),
            ErrorCode::SlowConsumer,
        );
        self.metrics.slow.inc();
    }

    /// Sends a comment to every client that has room (never ends a client).
    pub fn comment(&self, text: &'static [u8]) {
        let st = self.lock();
        for s in &st.subs {
            let _ = s.tx.try_send(Bytes::from_static(text).into());
        }
    }

    /// Ends every client with `code`.
    pub fn fail_all(&self, code: ErrorCode) {
        let mut st = self.lock();
        for s in st.subs.drain(..) {
            s.end.set(respond::sse(code, &s.trace_id), code);
        }
    }

    /// The upstream stream came back after a break: events it repeats are dropped until a new
    /// one arrives.
    pub fn reconnected(&self) {
        let mut st = self.lock();
        st.dedupe.arm();
        for s in &st.subs {
            s.end.reconnected();
        }
    }

    /// Called when the upstream answered 200.
    pub fn on_connected(&self) {
        let mut st = self.lock();
        if let Some(c) = st.pending_resume.take() {
            let frame = resume_frame(&c, "upstream");
            let mut subs = std::mem::take(&mut st.subs);
            subs.retain_mut(|s| self.push(s, frame.clone()));
            st.subs = subs;
        }
    }

    /// Delivers parsed upstream events to every client: one shared [`Batch`] per upstream read,
    /// finished by each client's own body. Foreign events are dropped here, once, against the
    /// stamp of the client the hub was made for; with no client attached they are still
    /// journaled, for a client replaying the journal to find.
    pub fn deliver(&self, events: Vec<Event>, read_at: Instant) {
        let mut st = self.lock();
        let mut subs = std::mem::take(&mut st.subs);
        let batch = self.admit_events(&mut st, events, &self.owner, read_at);
        if batch.events.is_empty() || subs.is_empty() {
            st.subs = subs;
            return;
        }
        let dispatching = batch.events.iter().filter(|e| e.dispatches()).count() as u64;
        let batch = Arc::new(batch);
        let mut forwarded = 0u64;
        subs.retain_mut(|sub| {
            let Some(chunk) = chunk_for(&mut sub.dedupe, &batch, &self.metrics.deduplicated) else {
                return true;
            };
            let kept = self.push(sub, chunk);
            if kept {
                forwarded += dispatching;
            }
            kept
        });
        st.subs = subs;
        self.metrics.forwarded.inc_by(forwarded);
        self.metrics
            .latency
            .observe(read_at.elapsed().as_secs_f64());
    }

    /// The events of one read that go out: new (not delivered before a reconnect), not foreign;
    /// each journaled, with its shared head rendered once. An ephemeral route's events skip the
    /// journal and the dedupe (see [`Hub::admit_ephemeral`]).
    /// `now`: when the events were read (their time in the journal).
    fn admit_events(&self, st: &mut State, evs: Vec<Event>, owner: &Stamp, now: Instant) -> Batch {
        if let Delivery::Ephemeral(eph) = &self.route.delivery {
            return self.admit_ephemeral(st, evs, owner, (eph, now));
        }
        let n = evs.len();
        let mut batch = Batch::new(SmallVec::with_capacity(n), SmallVec::with_capacity(n));
        let mut screen = Screen::default();
        // The registry and each hub of the thread hold its journal: with another hub on it, what
        // this one learns of an event is kept for the others.
        let noted = Arc::strong_count(&self.journal) > 2;
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        for ev in evs {
            if let Some(id) = ev.id.as_deref() {
                if !st.dedupe.is_new(id) {
                    self.metrics.deduplicated.inc();
                    tracing::debug!(route = %self.route.name, thread_id = %self.thread, id, "event already delivered before the reconnect; dropped");
                    continue;
                }
            }
            // The id before this event's (for the journal); an event with an id moves it.
            let prev = match ev.id {
                Some(_) => st.last_id.replace(ev.last_event_id.clone()),
                None => st.last_id.clone(),
            };
            let Some((ev, head)) = admit(
                (&mut journal, noted),
                ev,
                prev.as_deref(),
                owner,
                &mut screen,
                now,
            ) else {
                continue;
            };
            self.mirror.send(&mut st.chain, &ev);
            batch.bytes += wire_size(&ev);
            batch.events.push(ev);
            batch.heads.push(head);
        }
        screen.report(&self.metrics.screen, &self.route.name, &self.thread);
        batch
    }

    /// An ephemeral route's events: no id (nothing to resume from), no journal, at most
    /// `key_rate_per_s` per coalescing key, each carrying its key for the clients' overflow.
    fn admit_ephemeral(
        &self,
        st: &mut State,
        events: Vec<Event>,
        owner: &Stamp,
        (eph, now): (&Ephemeral, Instant),
    ) -> Batch {
        let n = events.len();
        let mut batch = Batch::new(SmallVec::with_capacity(n), SmallVec::with_capacity(n));
        let mut screen = Screen::default();
        for mut ev in events.into_iter().filter(Event::dispatches) {
            let prepared = ev.data.as_deref().map(prepare);
            if !screen.passes(prepared.as_ref(), owner) {
                continue;
            }
            let key = ev
                .data
                .as_deref()
                .and_then(|d| coalescing_key(d, prepared.as_ref(), &eph.coalesce_key));
            if !within_rate(&mut st.rates, &key, eph.key_rate_per_s, now) {
                self.metrics.rate_capped.inc();
                continue;
            }
            ev.id = None;
            let head = prepared.as_ref().and_then(|p| shared_head(&ev, p));
            drop(prepared);
            let ev = Arc::new(ev);
            batch.bytes += wire_size(&ev);
            batch.events.push(ev);
            batch.heads.push(head);
            batch.keys.push(key);
        }
        screen.report(&self.metrics.screen, &self.route.name, &self.thread);
        batch
    }
}
