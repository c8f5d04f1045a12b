//! The queue between a hub and one client's body: bounded by deliveries (the channel's
//! capacity, `sse.client_queue_events`) and by bytes (`sse.client_queue_bytes`). A live delivery
//! that would pass either bound is refused, and the hub ends that client as a slow consumer; a
//! journal replay waits for room instead (a long backlog is not slowness). On an ephemeral route
//! nothing is refused: what does not fit waits in the client's [`Overflow`], coalesced.

use crate::proxy::sse_overflow::Overflow;
use crate::sse::Event;
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Events of one upstream read, shared by every client of a hub. Each client's body finishes
/// them with its own stamp, on its own task — the hub does no per-client rendering.
#[derive(Debug)]
pub struct Batch {
    /// The events, foreign ones already removed.
    pub events: Vec<Arc<Event>>,
    /// Per event: its fields plus `data: {members,` — the client appends its tail and `\n\n`.
    /// `None`: the event needs a full per-client render (it has `routing`/`meta`, is not a
    /// one-line object, or carries no JSON object).
    pub heads: Vec<Option<Bytes>>,
    /// About how many bytes the events take on the wire (for the byte bound).
    pub bytes: usize,
    /// Per event, its coalescing key (ephemeral routes; empty otherwise).
    pub keys: Vec<Option<String>>,
}

impl Batch {
    /// A batch of these events and heads, its size counted.
    pub fn new(events: Vec<Arc<Event>>, heads: Vec<Option<Bytes>>) -> Batch {
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
    e.data.as_ref().map_or(0, String::len)
        + e.id.as_ref().map_or(0, String::len)
        + e.event.as_ref().map_or(0, String::len)
        + 24
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
}

/// The hub's side of a client's queue.
#[derive(Clone)]
pub struct ClientTx {
    tx: mpsc::Sender<Chunk>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    overflow: Option<Arc<Overflow>>,
}

/// The body's side of a client's queue.
pub struct ClientRx {
    rx: mpsc::Receiver<Chunk>,
    queued: Arc<AtomicUsize>,
    overflow: Option<Arc<Overflow>>,
}

/// A queue of at most `deliveries` chunks and `max_bytes` bytes; with `overflow` (an ephemeral
/// route) what does not fit waits there.
pub fn client_queue(
    deliveries: usize,
    max_bytes: usize,
    overflow: Option<Arc<Overflow>>,
) -> (ClientTx, ClientRx) {
    let (tx, rx) = mpsc::channel(deliveries.max(1));
    let queued = Arc::new(AtomicUsize::new(0));
    (
        ClientTx {
            tx,
            queued: queued.clone(),
            max_bytes,
            overflow: overflow.clone(),
        },
        ClientRx {
            rx,
            queued,
            overflow,
        },
    )
}

impl ClientTx {
    /// Queues a live delivery if both bounds allow it. With an overflow, live events that do
    /// not fit (or would pass events already waiting there) wait in it, and a comment that does
    /// not fit is skipped: nothing is refused as full.
    pub fn try_send(&self, chunk: Chunk) -> Result<(), Refused> {
        let Some(overflow) = &self.overflow else {
            return self.try_queue(chunk);
        };
        let spill = |b: &Batch| overflow.put(&b.events, &b.heads, &b.keys);
        if let Chunk::Events(batch) = &chunk {
            if !overflow.is_empty() {
                spill(batch);
                return Ok(());
            }
        }
        match (self.try_queue(chunk.clone()), chunk) {
            (Err(Refused::Full), Chunk::Events(batch)) => {
                spill(&batch);
                Ok(())
            }
            (Err(Refused::Full), Chunk::Raw(_)) => Ok(()),
            (other, _) => other,
        }
    }

    fn try_queue(&self, chunk: Chunk) -> Result<(), Refused> {
        let size = chunk.size();
        let before = self.queued.fetch_add(size, Ordering::AcqRel);
        // A chunk larger than the whole bound still goes to an empty queue: it can never fit.
        if before > 0 && before + size > self.max_bytes {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            return Err(Refused::Full);
        }
        self.tx.try_send(chunk).map_err(|e| {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => Refused::Full,
                mpsc::error::TrySendError::Closed(_) => Refused::Closed,
            }
        })
    }

    /// Queues a replayed chunk, waiting for room in the channel (the byte bound is not applied:
    /// a replay is backpressured, not cut).
    pub async fn send(&self, chunk: Chunk) -> Result<(), Refused> {
        let size = chunk.size();
        self.queued.fetch_add(size, Ordering::AcqRel);
        self.tx.send(chunk).await.map_err(|_| {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            Refused::Closed
        })
    }

    /// Whether the client's body is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl ClientRx {
    /// Receives the next chunk (see `mpsc::Receiver::poll_recv`).
    pub fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Chunk>> {
        let polled = self.rx.poll_recv(cx);
        if let std::task::Poll::Ready(Some(c)) = &polled {
            self.queued.fetch_sub(c.size(), Ordering::AcqRel);
        }
        polled
    }

    /// A chunk already queued, if any.
    pub fn try_recv(&mut self) -> Option<Chunk> {
        let c = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(c.size(), Ordering::AcqRel);
        Some(c)
    }

    /// Events waiting in the overflow (ephemeral routes), oldest first; when none wait, the
    /// task of `cx` is woken when one arrives.
    pub fn take_overflow(&self, cx: &std::task::Context<'_>) -> Vec<(Arc<Event>, Option<Bytes>)> {
        self.overflow
            .as_ref()
            .map(|o| o.take(cx.waker()))
            .unwrap_or_default()
    }

    /// Refuses further deliveries (what is queued can still be received).
    pub fn close(&mut self) {
        self.rx.close();
    }
}
