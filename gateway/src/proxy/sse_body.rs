//! The body of one client's SSE response.
//!
//! Events arrive pre-rendered through a bounded queue. The body itself keeps the connection's
//! timers — keep-alive comments, the token's expiry, the drain signal — so an idle stream costs a
//! queue and this struct, not a task. When the relay ends a stream (slow consumer, upstream gone)
//! it leaves a final frame in the [`EndSlot`] and drops its sender: the body sends what is still
//! queued, then that frame, then ends.

use crate::body::BoxError;
use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame};
use prometheus::IntGauge;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

/// Most bytes coalesced into one write when several events are queued.
const COALESCE_BYTES: usize = 64 * 1024;

/// Where the relay leaves the last frame of a stream it ends.
#[derive(Default)]
pub struct EndSlot(Mutex<Option<Bytes>>);

impl EndSlot {
    /// Sets the final frame (the first one set wins).
    pub fn set(&self, frame: Bytes) {
        if let Ok(mut slot) = self.0.lock() {
            if slot.is_none() {
                *slot = Some(frame);
            }
        }
    }

    fn take(&self) -> Option<Bytes> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}

/// Frames the body sends on its own.
pub struct OwnFrames {
    /// Sent when the drain signal fires.
    pub draining: Bytes,
    /// Sent when the credential expires.
    pub expired: Bytes,
}

/// When a stream ends on its own, and how often it sends keep-alive comments.
pub struct Timers {
    /// The credential's end.
    pub expires_at: Instant,
    /// The gateway's drain signal.
    pub draining: WaitForCancellationFutureOwned,
    /// Keep-alive comment interval.
    pub keepalive_every: Duration,
}

/// One client's SSE body.
pub struct SseBody {
    rx: mpsc::Receiver<Bytes>,
    end: Arc<EndSlot>,
    own: OwnFrames,
    expiry: Pin<Box<Sleep>>,
    draining: Pin<Box<WaitForCancellationFutureOwned>>,
    keepalive: Pin<Box<Sleep>>,
    keepalive_every: Duration,
    done: bool,
    active: IntGauge,
    left: Option<Arc<tokio::sync::Notify>>,
}

impl SseBody {
    /// A body reading `rx`; it ends on its own at expiry or drain.
    pub fn new(
        rx: mpsc::Receiver<Bytes>,
        end: Arc<EndSlot>,
        own: OwnFrames,
        timers: Timers,
        active: IntGauge,
        left: Option<Arc<tokio::sync::Notify>>,
    ) -> SseBody {
        active.inc();
        SseBody {
            rx,
            end,
            own,
            expiry: Box::pin(tokio::time::sleep_until(timers.expires_at)),
            draining: Box::pin(timers.draining),
            keepalive: Box::pin(tokio::time::sleep(timers.keepalive_every)),
            keepalive_every: timers.keepalive_every,
            done: false,
            active,
            left,
        }
    }

    fn finish(&mut self, frame: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        self.rx.close();
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        self.active.dec();
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
        if self.draining.as_mut().poll(cx).is_ready() {
            let f = self.own.draining.clone();
            return self.finish(f);
        }
        if self.expiry.as_mut().poll(cx).is_ready() {
            let f = self.own.expired.clone();
            return self.finish(f);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(first)) => {
                let mut buf: Option<BytesMut> = None;
                while buf.as_ref().map_or(first.len(), |b| b.len()) < COALESCE_BYTES {
                    match self.rx.try_recv() {
                        Ok(more) => buf
                            .get_or_insert_with(|| BytesMut::from(&first[..]))
                            .extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                let every = self.keepalive_every;
                self.keepalive.as_mut().reset(Instant::now() + every);
                Poll::Ready(Some(Ok(Frame::data(buf.map_or(first, BytesMut::freeze)))))
            }
            Poll::Ready(None) => match self.end.take() {
                Some(f) => self.finish(f),
                None => {
                    self.done = true;
                    Poll::Ready(None)
                }
            },
            Poll::Pending => {
                if self.keepalive.as_mut().poll(cx).is_ready() {
                    let every = self.keepalive_every;
                    self.keepalive.as_mut().reset(Instant::now() + every);
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                        b": keep-alive\n\n",
                    )))));
                }
                Poll::Pending
            }
        }
    }
}
