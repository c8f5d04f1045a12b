//! Test levers: injected faults, the recent-request log and stream counters.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// How many requests `GET /_mock/requests` remembers.
pub const REQUEST_LOG_LEN: usize = 1000;

/// Faults in force. Absent or `null` fields in a `POST /_mock/faults` body clear that fault.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Faults {
    /// Every SSE / WS stream opened from now on is cut (no close frame, no final event) after
    /// sending this many events.
    pub drop_streams_after_events: Option<u64>,
    /// Added before answering every non-`/_mock/` request.
    pub latency_ms: Option<u64>,
    /// The next non-`/_mock/` request is answered with this status (once).
    pub fail_next_status: Option<u16>,
}

/// One recorded request.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Lower-case name → value (repeated headers joined with `, `).
    pub headers: Map<String, Value>,
}

/// Shared lever state.
#[derive(Default)]
pub struct Levers {
    faults: Mutex<Faults>,
    requests: Mutex<VecDeque<RecordedRequest>>,
    /// SSE streams opened since start.
    pub sse_opened: AtomicU64,
    /// WS streams opened since start.
    pub ws_opened: AtomicU64,
    /// Streams open now and subscribed to their thread.
    pub streams_active: AtomicU64,
}

impl Levers {
    /// Current faults.
    pub fn faults(&self) -> Faults {
        self.faults.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// Replaces the faults.
    pub fn set_faults(&self, f: Faults) {
        if let Ok(mut g) = self.faults.lock() {
            *g = f;
        }
    }

    /// Takes the one-shot failure status, if any.
    pub fn take_fail_next(&self) -> Option<u16> {
        self.faults
            .lock()
            .ok()
            .and_then(|mut g| g.fail_next_status.take())
    }

    /// Remembers a request (keeps the last [`REQUEST_LOG_LEN`]).
    pub fn record(&self, req: RecordedRequest) {
        if let Ok(mut log) = self.requests.lock() {
            if log.len() == REQUEST_LOG_LEN {
                log.pop_front();
            }
            log.push_back(req);
        }
    }

    /// The remembered requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Counters as JSON.
    pub fn stats(&self) -> Value {
        serde_json::json!({
            "sse_streams_opened": self.sse_opened.load(Ordering::Relaxed),
            "ws_streams_opened": self.ws_opened.load(Ordering::Relaxed),
            "streams_active": self.streams_active.load(Ordering::Relaxed),
        })
    }
}

/// Decrements `streams_active` when a stream ends, however it ends.
pub struct ActiveStream<'a>(&'a AtomicU64);

impl<'a> ActiveStream<'a> {
    /// Counts a stream as active until dropped.
    pub fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        ActiveStream(counter)
    }
}

impl Drop for ActiveStream<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
