//! The body of one client's SSE response.
//!
//! Events arrive pre-rendered through a bounded queue. The body itself keeps the connection's
//! timers — keep-alive comments, the token's expiry, the drain signal — so an idle stream costs a
//! queue and this struct, not a task. When the relay ends a stream (slow consumer, upstream gone)
//! it leaves a final frame in the [`EndSlot`] and drops its sender: the body sends what is still
//! queued, then that frame, then ends.

use crate::body::BoxError;
use crate::drain::Drain;
use crate::inject::Stamp;
use crate::outcome::StreamLog;
use crate::proxy::sse_queue::{wire_size, Chunk, ClientRx};
use crate::respond;
use crate::sse::frames::render;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use prometheus::IntGauge;
use railgate_policy::ErrorCode;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

/// What a body needs to finish [`Chunk::Events`].
pub struct Finish {
    /// The client's stamp.
    pub stamp: Arc<Stamp>,
}

/// Most bytes gathered into one write when several chunks are queued.
const COALESCE_BYTES: usize = 64 * 1024;
/// Room for the field names and the stamp of an event rendered in full.
const RENDER_ROOM: usize = 64;

impl Finish {
    /// How many bytes this client's render of `chunk` takes, to size the write once: exact
    /// when every event has a shared head (the write is then handed on without a copy or a
    /// header of its own), about that otherwise.
    fn size_of(&self, chunk: &Chunk) -> usize {
        match chunk {
            Chunk::Raw(b) => b.len(),
            Chunk::Events(batch) => {
                let each = self.stamp.tail().len() + 2;
                let mut size = batch.events.len() * each;
                for (ev, head) in batch.events.iter().zip(&batch.heads) {
                    size += match head {
                        Some(h) => h.len(),
                        None => wire_size(ev) + RENDER_ROOM,
                    };
                }
                size
            }
        }
    }

    /// Appends this client's bytes for a chunk; returns how many events they hold.
    fn render_into(&self, chunk: Chunk, buf: &mut Vec<u8>) -> u64 {
        match chunk {
            Chunk::Raw(b) => {
                buf.extend_from_slice(&b);
                0
            }
            Chunk::Events(batch) => {
                let before = buf.len();
                for (ev, head) in batch.events.iter().zip(&batch.heads) {
                    self.render_event(ev, head.as_deref(), buf);
                }
                if buf.len() == before {
                    0
                } else {
                    batch.events.len() as u64
                }
            }
        }
    }

    /// Appends one event: its shared head and this client's tail, or a full render.
    fn render_event(&self, ev: &crate::sse::Event, head: Option<&[u8]>, buf: &mut Vec<u8>) {
        match head {
            Some(head) => {
                buf.extend_from_slice(head);
                buf.extend_from_slice(self.stamp.tail().as_bytes());
                buf.extend_from_slice(b"\n\n");
            }
            None => {
                if let Some(b) = render(ev, &self.stamp) {
                    buf.extend_from_slice(&b);
                }
            }
        }
    }
}

/// What the relay shares with one client's body: the last frame of a stream it ends (with its
/// code), and how often the client's upstream stream came back.
#[derive(Default)]
pub struct EndSlot {
    frame: Mutex<Option<(Bytes, ErrorCode)>>,
    reconnects: AtomicU64,
}

impl EndSlot {
    /// Sets the final frame, which carries `code` (the first one set wins).
    pub fn set(&self, frame: Bytes, code: ErrorCode) {
        if let Ok(mut slot) = self.frame.lock() {
            if slot.is_none() {
                *slot = Some((frame, code));
            }
        }
    }

    /// The client's upstream stream came back after breaking.
    pub fn reconnected(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    fn take(&self) -> Option<(Bytes, ErrorCode)> {
        self.frame.lock().ok().and_then(|mut s| s.take())
    }
}

/// What the body needs for the frames it sends on its own (drain, expiry): rendered only when
/// one is sent, not kept for the stream's life.
pub struct OwnFrames {
    /// The client's trace id, for the error envelope.
    pub trace_id: Box<str>,
}

/// When a stream ends on its own, and how often it sends keep-alive comments.
pub struct Timers {
    /// The credential's end.
    pub expires_at: Instant,
    /// The gateway's drain signal.
    pub draining: Drain,
    /// Keep-alive comment interval.
    pub keepalive_every: Duration,
}

/// What counts a stream as open while its body lives: the `connections_active` gauge, the
/// tenant's stream slot, and the access line written when it ends.
pub struct OpenStream {
    /// `connections_active` for the route.
    pub gauge: IntGauge,
    /// The tenant's stream slot, freed with the body.
    pub slot: crate::caps::StreamSlot,
    /// The stream's access line.
    pub log: StreamLog,
}

/// One client's SSE body.
pub struct SseBody {
    rx: ClientRx,
    finish: Finish,
    end: Arc<EndSlot>,
    own: OwnFrames,
    /// The credential's end.
    expires_at: Instant,
    /// The drain signal, read on every frame ...
    drain: Drain,
    /// ... and waited for only while nothing is queued (polling a wait costs a lock).
    draining: Pin<Box<WaitForCancellationFutureOwned>>,
    /// One timer for both the next keep-alive comment and the credential's end, set to the
    /// earlier of the two (one timer per stream instead of two).
    timer: Pin<Box<Sleep>>,
    keepalive_every: Duration,
    /// When data last went out: the keep-alive timer is moved only when it fires (moving it on
    /// every write would cost a timer update per delivery).
    last_sent: Instant,
    /// The waker the drain wait and the timer were last polled with, while both were pending.
    parked: Option<Waker>,
    done: bool,
    open: OpenStream,
    left: Option<Arc<tokio::sync::Notify>>,
}

impl SseBody {
    /// A body reading `rx`; it ends on its own at expiry or drain.
    pub fn new(
        rx: ClientRx,
        end: Arc<EndSlot>,
        own: OwnFrames,
        timers: Timers,
        open: OpenStream,
        left: Option<Arc<tokio::sync::Notify>>,
        finish: Finish,
    ) -> SseBody {
        open.gauge.inc();
        SseBody {
            rx,
            finish,
            end,
            own,
            expires_at: timers.expires_at,
            draining: Box::pin(timers.draining.clone().cancelled_owned()),
            drain: timers.draining,
            timer: Box::pin(tokio::time::sleep_until(
                timers
                    .expires_at
                    .min(Instant::now() + timers.keepalive_every),
            )),
            keepalive_every: timers.keepalive_every,
            last_sent: Instant::now(),
            parked: None,
            done: false,
            open,
            left,
        }
    }

    fn end_with(
        &mut self,
        frame: Bytes,
        code: ErrorCode,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        self.rx.close();
        self.open.log.ended(code.as_str(), None);
        self.sent(frame)
    }

    /// Counts a frame going out.
    fn sent(&mut self, frame: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.open.log.tally.bytes_down += frame.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        self.open.log.tally.reconnects = self.end.reconnects.load(Ordering::Relaxed);
        self.open.gauge.dec();
        // Close first, so the hub sees this client gone when it wakes.
        self.rx.close();
        if let Some(left) = &self.left {
            left.notify_one();
        }
    }
}

impl HttpBody for SseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.drain.is_started() {
            return self.drained();
        }
        // With events queued the timer is not polled (that costs a timer-wheel visit per
        // delivery): the expiry is checked against a (coarse) clock read per frame.
        // The timer and the drain wait are polled once nothing is queued, before the task sleeps.
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(first)) => {
                let now = crate::clock::coarse_tokio();
                if now >= self.expires_at {
                    return self.expired();
                }
                // Everything already queued goes out as one frame: one write, one chunk header.
                let mut buf = Vec::with_capacity(self.finish.size_of(&first));
                let mut events = self.finish.render_into(first, &mut buf);
                while buf.len() < COALESCE_BYTES {
                    match self.rx.try_recv() {
                        Some(more) => events += self.finish.render_into(more, &mut buf),
                        None => break,
                    }
                }
                if buf.len() < COALESCE_BYTES {
                    events += self.render_overflow(cx, &mut buf);
                }
                self.last_sent = now;
                if buf.is_empty() {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                self.open.log.tally.events_down += events;
                self.sent(Bytes::from(buf))
            }
            Poll::Ready(None) => self.queue_closed(),
            Poll::Pending => {
                // The drain wait and the timer hold this task's waker since the last time they
                // were polled: polling them again would only store it again.
                let parked = self
                    .parked
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()));
                if !parked && self.draining.as_mut().poll(cx).is_ready() {
                    return self.drained();
                }
                let mut buf = Vec::new();
                let events = self.render_overflow(cx, &mut buf);
                if buf.is_empty() {
                    return self.idle(cx, parked);
                }
                let now = crate::clock::coarse_tokio();
                if now >= self.expires_at {
                    return self.expired();
                }
                self.last_sent = now;
                self.open.log.tally.events_down += events;
                self.sent(Bytes::from(buf))
            }
        }
    }
}

impl SseBody {
    /// Appends what waits in the overflow (ephemeral routes); returns how many events.
    fn render_overflow(&mut self, cx: &Context<'_>, buf: &mut Vec<u8>) -> u64 {
        let waiting = self.rx.take_overflow(cx);
        for (ev, head) in &waiting {
            self.finish.render_event(ev, head.as_deref(), buf);
        }
        waiting.len() as u64
    }

    /// The relay let go of this client: the final frame it left, if any, then the end.
    fn queue_closed(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.end.take() {
            Some((f, code)) => self.end_with(f, code),
            None => {
                self.done = true;
                self.open.log.ended("upstream_ended", None);
                Poll::Ready(None)
            }
        }
    }

    /// The gateway drains: the stream ends with `gateway.draining`.
    fn drained(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let f = respond::sse(ErrorCode::Draining, &self.own.trace_id);
        self.end_with(f, ErrorCode::Draining)
    }

    /// The credential ended: the stream ends with `auth.token_expired`.
    fn expired(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let f = respond::sse(ErrorCode::TokenExpired, &self.own.trace_id);
        self.end_with(f, ErrorCode::TokenExpired)
    }

    /// Nothing queued: a keep-alive comment when one is due, or the end at the credential's.
    /// `parked`: the timer holds this task's waker (it need not be polled until it fires).
    fn idle(
        &mut self,
        cx: &mut Context<'_>,
        mut parked: bool,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if parked && !self.timer.is_elapsed() {
                return Poll::Pending;
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                self.parked = Some(cx.waker().clone());
                return Poll::Pending;
            }
            // Fired: whatever follows moves the timer, which is then polled afresh.
            (parked, self.parked) = (false, None);
            let now = Instant::now();
            if now >= self.expires_at {
                return self.expired();
            }
            let every = self.keepalive_every;
            let due = self.last_sent + every;
            if due > now {
                // Data went out since the timer was set: wait a full interval after it.
                self.timer.as_mut().reset(due.min(self.expires_at));
                continue;
            }
            self.timer
                .as_mut()
                .reset((now + every).min(self.expires_at));
            self.last_sent = now;
            return self.sent(Bytes::from_static(b": keep-alive\n\n"));
        }
    }
}
