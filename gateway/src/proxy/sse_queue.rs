//! The queue between a hub and one client's body: bounded by deliveries
//! (`sse.client_queue_events`) and by bytes (`sse.client_queue_bytes`). A live delivery
//! that would pass either bound is refused, and the hub ends that client as a slow consumer; a
//! journal replay waits for room instead (a long backlog is not slowness). On an ephemeral route
//! nothing is refused: what does not fit waits in the client's [`Overflow`], coalesced.
//!
//! A queue may also watch for a stalled client (an HTTP/2 stream, whose flow control can stop
//! its body being read while the connection lives on): a live delivery is refused as
//! [`Refused::Stalled`] once chunks have waited the stall limit with none taken, and a client
//! ended as slow gives up what waits for it at once ([`ClientTx::abandon`]).

use crate::proxy::sse_overflow::Overflow;
use crate::sse::Event;
use bytes::Bytes;
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

pub use crate::proxy::sse_overflow::Head;

/// Events of one upstream read (usually one: held inline), shared by every client of a hub.
/// Each client's body finishes them with its own stamp, on its own task — the hub does no
/// per-client rendering.
#[derive(Debug)]
pub struct Batch {
    /// The events, foreign ones already removed.
    pub events: SmallVec<[Arc<Event>; 1]>,
    /// Per event: its fields plus `data: {members,` — the client appends its tail and `\n\n`.
    /// `None`: the event needs a full per-client render (it has `routing`/`meta`, is not a
    /// one-line object, or carries no JSON object).
    pub heads: SmallVec<[Option<Head>; 1]>,
    /// About how many bytes the events take on the wire (for the byte bound).
    pub bytes: usize,
    /// Per event, its coalescing key (ephemeral routes; empty otherwise).
    pub keys: Vec<Option<String>>,
}

impl Batch {
    /// A batch of these events and heads, its size counted.
    pub fn new(events: SmallVec<[Arc<Event>; 1]>, heads: SmallVec<[Option<Head>; 1]>) -> Batch {
        let bytes = events.iter().map(|e| wire_size(e)).sum();
        Batch {
            events,
            heads,
            bytes,
            keys: Vec::new(),
        }
    }
}

/// About how many bytes an event takes on the wire before stamping.
pub fn wire_size(e: &Event) -> usize {
    e.text_len() + 24
}

/// One queue slot.
#[derive(Debug, Clone)]
pub enum Chunk {
    /// Ready bytes (comments, `resume_cursor`, replayed events).
    Raw(Bytes),
    /// Live events to finish with this client's stamp.
    Events(Arc<Batch>),
}

impl From<Bytes> for Chunk {
    fn from(b: Bytes) -> Chunk {
        Chunk::Raw(b)
    }
}

impl Chunk {
    /// The bytes it counts against the byte bound.
    pub fn size(&self) -> usize {
        match self {
            Chunk::Raw(b) => b.len(),
            Chunk::Events(batch) => batch.bytes,
        }
    }
}

/// Why a delivery was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A bound would be passed: the client is too slow.
    Full,
    /// The client is gone.
    Closed,
    /// The client took nothing while chunks waited for the stall limit.
    Stalled,
}

/// Slots an empty queue may keep from an earlier burst.
const KEPT_SLOTS: usize = 64;

/// What both sides of a queue share. A plain deque under a lock: it takes no room until
/// something is queued (an idle stream's queue is this struct), and the hub and the body each
/// take the lock once per delivery.
struct Shared {
    state: Mutex<State>,
    /// The body closed its side or is gone.
    closed: AtomicBool,
    /// Live senders; none left (and nothing queued) ends the body's stream.
    senders: AtomicUsize,
    /// Signalled when room is made while a replay waits for it.
    room: Notify,
    max_chunks: usize,
    max_bytes: usize,
    /// How long chunks may wait with none taken before live deliveries are refused; `None`:
    /// not watched (an HTTP/1.1 connection's writer lets a stalled client go itself).
    stall: Option<Duration>,
}

struct State {
    chunks: VecDeque<Chunk>,
    /// Bytes queued (against `max_bytes`).
    bytes: usize,
    /// The body's task, woken when a chunk arrives or the last sender goes.
    rx_waker: Option<Waker>,
    /// A replay waits for room.
    send_waiting: bool,
    /// Since when chunks have waited with none taken (watched queues only).
    waiting_since: Option<Instant>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `chunk`, live (both bounds) or replayed (the count only; a refusal then marks a
    /// replay as waiting for room, under the same lock); wakes the body.
    fn push(&self, chunk: Chunk, live: bool) -> Result<(), Refused> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Refused::Closed);
        }
        let size = chunk.size();
        let now = self.stall.map(|_| Instant::now());
        let mut st = self.lock();
        if let (Some(limit), Some(now), true) = (self.stall, now, live) {
            if st
                .waiting_since
                .is_some_and(|t| now.duration_since(t) >= limit)
            {
                return Err(Refused::Stalled);
            }
        }
        // A chunk larger than the whole byte bound still goes to an empty queue: it can never fit.
        let over_bytes = live && st.bytes > 0 && st.bytes + size > self.max_bytes;
        if st.chunks.len() >= self.max_chunks || over_bytes {
            st.send_waiting |= !live;
            return Err(Refused::Full);
        }
        st.bytes += size;
        if st.chunks.is_empty() {
            st.waiting_since = now;
        }
        st.chunks.push_back(chunk);
        let waker = st.rx_waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

/// The hub's side of a client's queue.
pub struct ClientTx {
    shared: Arc<Shared>,
    overflow: Option<Arc<Overflow>>,
}

/// The body's side of a client's queue.
pub struct ClientRx {
    shared: Arc<Shared>,
    overflow: Option<Arc<Overflow>>,
}

/// A queue of at most `deliveries` chunks and `max_bytes` bytes; with `overflow` (an ephemeral
/// route) what does not fit waits there; with `stall`, watched for a client that takes nothing.
pub fn client_queue(
    deliveries: usize,
    max_bytes: usize,
    overflow: Option<Arc<Overflow>>,
    stall: Option<Duration>,
) -> (ClientTx, ClientRx) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            chunks: VecDeque::new(),
            bytes: 0,
            rx_waker: None,
            send_waiting: false,
            waiting_since: None,
        }),
        closed: AtomicBool::new(false),
        senders: AtomicUsize::new(1),
        room: Notify::new(),
        max_chunks: deliveries.max(1),
        max_bytes,
        stall,
    });
    (
        ClientTx {
            shared: shared.clone(),
            overflow: overflow.clone(),
        },
        ClientRx { shared, overflow },
    )
}

impl Clone for ClientTx {
    fn clone(&self) -> ClientTx {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        ClientTx {
            shared: self.shared.clone(),
            overflow: self.overflow.clone(),
        }
    }
}

impl Drop for ClientTx {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            let waker = self.shared.lock().rx_waker.take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

impl ClientTx {
    /// Queues a live delivery if both bounds allow it. With an overflow, live events that do
    /// not fit (or would pass events already waiting there) wait in it, and a comment that does
    /// not fit is skipped: nothing is refused as full.
    pub fn try_send(&self, chunk: Chunk) -> Result<(), Refused> {
        let Some(overflow) = &self.overflow else {
            return self.shared.push(chunk, true);
        };
        let spill = |b: &Batch| overflow.put(&b.events, &b.heads, &b.keys);
        if let Chunk::Events(batch) = &chunk {
            if !overflow.is_empty() {
                spill(batch);
                return Ok(());
            }
        }
        match (self.shared.push(chunk.clone(), true), chunk) {
            (Err(Refused::Full), Chunk::Events(batch)) => {
                spill(&batch);
                Ok(())
            }
            (Err(Refused::Full), Chunk::Raw(_)) => Ok(()),
            (other, _) => other,
        }
    }

    /// Queues a replayed chunk, waiting for room among the deliveries (the byte bound is not
    /// applied: a replay is backpressured, not cut).
    pub async fn send(&self, chunk: Chunk) -> Result<(), Refused> {
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            // Registered before the check: room made after it wakes this wait.
            room.as_mut().enable();
            match self.shared.push(chunk.clone(), false) {
                Err(Refused::Full) => room.await,
                done => return done,
            }
        }
    }

    /// Gives up what waits in a watched queue (a client ended as slow over HTTP/2, which may
    /// hold its stream open without reading for as long as its connection lives): the client
    /// resumes from the last event it took. An unwatched queue is left for its body to send.
    pub fn abandon(&self) {
        if self.shared.stall.is_none() {
            return;
        }
        let mut st = self.shared.lock();
        st.chunks = VecDeque::new();
        st.bytes = 0;
        st.waiting_since = None;
    }

    /// Whether the client's body is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

impl ClientRx {
    /// The next chunk; `None` once the queue is empty and no sender is left (or it is empty and
    /// closed). When nothing is queued, the task of `cx` is woken when something is.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        let mut st = self.shared.lock();
        if let Some(c) = self.pop(&mut st) {
            return Poll::Ready(Some(c));
        }
        if self.shared.senders.load(Ordering::Acquire) == 0
            || self.shared.closed.load(Ordering::Acquire)
        {
            return Poll::Ready(None);
        }
        match &st.rx_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.rx_waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// A chunk already queued, if any.
    pub fn try_recv(&mut self) -> Option<Chunk> {
        let mut st = self.shared.lock();
        self.pop(&mut st)
    }

    fn pop(&self, st: &mut State) -> Option<Chunk> {
        let c = st.chunks.pop_front()?;
        st.bytes -= c.size();
        if self.shared.stall.is_some() {
            st.waiting_since = (!st.chunks.is_empty()).then(Instant::now);
        }
        // A burst's room is given back once it is sent: a deque keeps its largest size.
        if st.chunks.is_empty() && st.chunks.capacity() > KEPT_SLOTS {
            st.chunks = VecDeque::new();
        }
        if std::mem::take(&mut st.send_waiting) {
            self.shared.room.notify_waiters();
        }
        Some(c)
    }

    /// Events waiting in the overflow (ephemeral routes), oldest first; when none wait, the
    /// task of `cx` is woken when one arrives.
    pub fn take_overflow(&self, cx: &Context<'_>) -> Vec<(Arc<Event>, Option<Head>)> {
        self.overflow
            .as_ref()
            .map(|o| o.take(cx.waker()))
            .unwrap_or_default()
    }

    /// Refuses further deliveries (what is queued can still be received).
    pub fn close(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        // A replay waiting for room gives up.
        self.shared.room.notify_waiters();
    }
}

impl Drop for ClientRx {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn raw(s: &'static str) -> Chunk {
        Chunk::Raw(Bytes::from_static(s.as_bytes()))
    }

    fn text(c: Option<Chunk>) -> Option<String> {
        match c? {
            Chunk::Raw(b) => Some(String::from_utf8(b.to_vec()).expect("utf8")),
            Chunk::Events(_) => Some("<events>".into()),
        }
    }

    async fn recv(rx: &mut ClientRx) -> Option<String> {
        let next = std::future::poll_fn(|cx| rx.poll_recv(cx));
        text(
            tokio::time::timeout(Duration::from_secs(5), next)
                .await
                .expect("no hang"),
        )
    }

    #[tokio::test]
    async fn live_deliveries_are_refused_past_either_bound_and_come_out_in_order() {
        let (tx, mut rx) = client_queue(3, 10, None, None);
        assert_eq!(tx.try_send(raw("123456")), Ok(()));
        // 6 + 6 > 10 bytes.
        assert_eq!(tx.try_send(raw("abcdef")), Err(Refused::Full));
        assert_eq!(tx.try_send(raw("ab")), Ok(()));
        assert_eq!(tx.try_send(raw("c")), Ok(()));
        // Three chunks: the count bound.
        assert_eq!(tx.try_send(raw("d")), Err(Refused::Full));
        assert_eq!(recv(&mut rx).await.as_deref(), Some("123456"));
        assert_eq!(tx.try_send(raw("d")), Ok(()));
        assert_eq!(text(rx.try_recv()).as_deref(), Some("ab"));
        assert_eq!(text(rx.try_recv()).as_deref(), Some("c"));
        assert_eq!(text(rx.try_recv()).as_deref(), Some("d"));
        assert_eq!(text(rx.try_recv()), None);
        // Larger than the whole byte bound: still goes to an empty queue.
        assert_eq!(tx.try_send(raw("0123456789abc")), Ok(()));
        assert_eq!(recv(&mut rx).await.as_deref(), Some("0123456789abc"));
    }

    /// A watched queue refuses a live delivery once chunks have waited the stall limit with
    /// none taken; taking one starts the wait again, an empty queue never stalls, a replay is
    /// not refused as stalled, an unwatched queue never stalls. Abandoned, a watched queue
    /// drops what waits; an unwatched one keeps it for its body.
    #[tokio::test(start_paused = true)]
    async fn a_watched_queue_refuses_a_client_that_takes_nothing_for_the_stall_limit() {
        let (tx, mut rx) = client_queue(16, 1024, None, Some(Duration::from_secs(40)));
        let step = |s| tokio::time::advance(Duration::from_secs(s));
        tx.try_send(raw("a")).expect("room");
        tx.try_send(raw("b")).expect("room");
        step(39).await;
        assert_eq!(tx.try_send(raw("c")), Ok(()), "39 s: not yet");
        assert_eq!(text(rx.try_recv()).as_deref(), Some("a"));
        step(39).await;
        assert_eq!(tx.try_send(raw("d")), Ok(()), "one was taken 39 s ago");
        step(1).await;
        assert_eq!(tx.try_send(raw("e")), Err(Refused::Stalled));
        assert_eq!(tx.send(raw("replayed")).await, Ok(()), "a replay waits");
        for want in ["b", "c", "d", "replayed"] {
            assert_eq!(text(rx.try_recv()).as_deref(), Some(want));
        }
        step(100).await;
        assert_eq!(tx.try_send(raw("f")), Ok(()), "nothing waited");
        tx.abandon();
        drop(tx);
        assert_eq!(recv(&mut rx).await, None, "what waited is dropped");

        let (tx, mut rx) = client_queue(16, 1024, None, None);
        tx.try_send(raw("a")).expect("room");
        step(1000).await;
        assert_eq!(tx.try_send(raw("b")), Ok(()), "not watched");
        tx.abandon();
        drop(tx);
        assert_eq!(recv(&mut rx).await.as_deref(), Some("a"));
        assert_eq!(recv(&mut rx).await.as_deref(), Some("b"));
        assert_eq!(recv(&mut rx).await, None);
    }

    #[test]
    fn an_emptied_queue_gives_back_the_room_of_a_burst() {
        let (tx, mut rx) = client_queue(1024, usize::MAX, None, None);
        for _ in 0..500 {
            tx.try_send(raw("x")).expect("room");
        }
        assert!(rx.shared.lock().chunks.capacity() >= 500);
        for _ in 0..499 {
            rx.try_recv().expect("queued");
        }
        assert!(rx.shared.lock().chunks.capacity() >= 500, "not empty yet");
        rx.try_recv().expect("queued");
        assert!(rx.shared.lock().chunks.capacity() <= KEPT_SLOTS);
        tx.try_send(raw("y")).expect("room");
        assert_eq!(text(rx.try_recv()).as_deref(), Some("y"));
    }

    #[tokio::test]
    async fn the_stream_ends_after_what_is_queued_once_every_sender_is_gone() {
        let (tx, mut rx) = client_queue(4, 1024, None, None);
        let tx2 = tx.clone();
        tx.try_send(raw("a")).expect("room");
        drop(tx);
        tx2.try_send(raw("b")).expect("room");
        let waiting = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(c) = recv(&mut rx).await {
                got.push(c);
            }
            got
        });
        tokio::task::yield_now().await;
        drop(tx2);
        let got = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("no hang")
            .expect("task");
        assert_eq!(got, ["a", "b"]);
    }

    #[tokio::test]
    async fn a_closed_queue_refuses_deliveries_and_hands_out_what_it_holds() {
        let (tx, mut rx) = client_queue(4, 1024, None, None);
        tx.try_send(raw("kept")).expect("room");
        rx.close();
        assert!(tx.is_closed());
        assert_eq!(tx.try_send(raw("late")), Err(Refused::Closed));
        assert_eq!(tx.send(raw("late")).await, Err(Refused::Closed));
        assert_eq!(recv(&mut rx).await.as_deref(), Some("kept"));
        assert_eq!(recv(&mut rx).await, None);
    }

    #[tokio::test]
    async fn a_replay_waits_for_room_ignores_the_byte_bound_and_gives_up_when_the_body_goes() {
        let (tx, mut rx) = client_queue(2, 4, None, None);
        tx.send(raw("123456"))
            .await
            .expect("over the byte bound: still queued");
        tx.send(raw("2")).await.expect("room");
        let tx2 = tx.clone();
        let blocked = tokio::spawn(async move { tx2.send(raw("3")).await });
        tokio::task::yield_now().await;
        assert!(!blocked.is_finished(), "two chunks queued: the third waits");
        assert_eq!(recv(&mut rx).await.as_deref(), Some("123456"));
        let sent = tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .expect("room made wakes the replay")
            .expect("task");
        assert_eq!(sent, Ok(()));
        assert_eq!(text(rx.try_recv()).as_deref(), Some("2"));
        assert_eq!(text(rx.try_recv()).as_deref(), Some("3"));
        tx.send(raw("4")).await.expect("room");
        tx.send(raw("5")).await.expect("room");
        let tx3 = tx.clone();
        let blocked = tokio::spawn(async move { tx3.send(raw("6")).await });
        tokio::task::yield_now().await;
        drop(rx);
        let sent = tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .expect("the body going wakes the replay")
            .expect("task");
        assert_eq!(sent, Err(Refused::Closed));
    }
}
