//! One client of the SSE rail: its queue to the body, the final-frame slot the relay ends it
//! with, and its stamp.

use crate::admission::Admitted;
use crate::app::Gateway;
use crate::config::{Delivery, Route};
use crate::inject::Stamp;
use crate::proxy::sse_body::EndSlot;
use crate::proxy::sse_hub::{Hub, Sub};
use crate::proxy::sse_overflow::Overflow;
use crate::proxy::sse_queue::{client_queue, Chunk, ClientRx, ClientTx};
use crate::sse::frames::resume_frame;
use std::sync::Arc;

/// One client's end of the rail: its queue, final-frame slot and stamp.
pub struct Client {
    /// The hub's side of its queue (each hub it joins gets a clone).
    pub tx: ClientTx,
    /// The body's side of its queue.
    pub rx: ClientRx,
    /// The final frame of a stream the relay ends.
    pub end: Arc<EndSlot>,
    /// Its stamp.
    pub stamp: Arc<Stamp>,
    trace_id: String,
    /// A `resume_cursor` went out: a stream announces where it resumes once.
    announced: std::sync::atomic::AtomicBool,
}

impl Client {
    /// A client of `route` on `thread`, admitted as `admitted`, over HTTP `version`.
    pub fn new(
        gw: &Gateway,
        route: &Route,
        thread: &str,
        admitted: &Admitted,
        version: http::Version,
    ) -> Client {
        let live = gw.live();
        let sse = &live.config.sse;
        let events = sse.client_queue_events;
        let overflow = match route.delivery {
            Delivery::Durable => None,
            Delivery::Ephemeral(_) => Some(Overflow::new(
                events,
                gw.metrics.ephemeral_dropped(&route.name),
            )),
        };
        // Over HTTP/2 flow control can stop the body being read while the connection lives
        // on: the queue itself watches for the stall that the HTTP/1.1 writer watches for (an
        // ephemeral stream is never cut as slow).
        let stall = (version == http::Version::HTTP_2 && overflow.is_none())
            .then(|| crate::stream_out::stall_limit(sse.keepalive));
        let (tx, rx) = client_queue(events, sse.client_queue_bytes, overflow, stall);
        Client {
            tx,
            rx,
            end: Arc::new(EndSlot::default()),
            stamp: Arc::new(Stamp::for_resource(&admitted.ctx, &route.resource, thread)),
            trace_id: admitted.ctx.trace_id.clone(),
            announced: Default::default(),
        }
    }

    /// Its membership of `hub`.
    pub fn sub(&self, hub: &Hub) -> Sub {
        Sub {
            id: hub.sub_id(),
            tx: self.tx.clone(),
            end: self.end.clone(),
            stamp: self.stamp.clone(),
            trace_id: self.trace_id.clone(),
            dedupe: None,
        }
    }

    /// Queues the `resume_cursor` frame, once per stream.
    pub fn announce(&self, cursor: &str, source: &str) {
        if !self
            .announced
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            let _ = self.tx.try_send(Chunk::Raw(resume_frame(cursor, source)));
        }
    }
}
