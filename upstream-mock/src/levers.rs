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

/// A request as it arrived, packed into one buffer (method, path, then each header as a
/// length-prefixed name and value); expanded into a [`RecordedRequest`] only when the log is read.
/// Recording costs one allocation per request, however many headers it carries.
pub struct Arrival(Box<[u8]>);

impl Arrival {
    /// Packs `method`, `path` and `headers`.
    pub fn of(method: &str, path: &str, headers: &http::HeaderMap) -> Arrival {
        let fields = || {
            [method.as_bytes(), path.as_bytes()].into_iter().chain(
                headers
                    .iter()
                    .flat_map(|(n, v)| [n.as_str().as_bytes(), v.as_bytes()]),
            )
        };
        let size: usize = fields().map(|f| 4 + f.len()).sum();
        let mut buf = Vec::with_capacity(size);
        for f in fields() {
            buf.extend_from_slice(&(f.len() as u32).to_le_bytes());
            buf.extend_from_slice(f);
        }
        Arrival(buf.into_boxed_slice())
    }

    /// Method, path and headers (repeated headers joined with `, `, as they arrived).
    pub fn expand(&self) -> RecordedRequest {
        let mut rest = &self.0[..];
        let mut next = move || {
            let (len, tail) = rest.split_at_checked(4)?;
            let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
            let (field, tail) = tail.split_at_checked(len)?;
            rest = tail;
            Some(String::from_utf8_lossy(field).into_owned())
        };
        let method = next().unwrap_or_default();
        let path = next().unwrap_or_default();
        let mut headers = Map::new();
        while let (Some(name), Some(v)) = (next(), next()) {
            match headers.get_mut(&name) {
                Some(Value::String(prev)) => {
                    prev.push_str(", ");
                    prev.push_str(&v);
                }
                _ => {
                    headers.insert(name, Value::String(v));
                }
            }
        }
        RecordedRequest {
            method,
            path,
            headers,
        }
    }
}

/// Shared lever state.
#[derive(Default)]
pub struct Levers {
    faults: Mutex<Faults>,
    requests: Mutex<VecDeque<Arrival>>,
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
    pub fn record(&self, req: Arrival) {
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
            .map(|l| l.iter().map(Arrival::expand).collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    #[test]
    fn an_arrival_expands_to_the_request_it_packed() {
        let mut h = HeaderMap::new();
        h.insert("x-tenant-id", HeaderValue::from_static("t_1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("127.0.0.1"));
        h.insert("x-empty", HeaderValue::from_static(""));
        h.insert("x-bin", HeaderValue::from_bytes(b"caf\xe9").expect("value"));
        let r = Arrival::of("POST", "/chat/threads/th_1/messages?x=1", &h).expand();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/chat/threads/th_1/messages?x=1");
        let expected = serde_json::json!({
            "x-tenant-id": "t_1",
            "x-forwarded-for": "10.0.0.1, 127.0.0.1",
            "x-empty": "",
            "x-bin": "caf\u{fffd}",
        });
        assert_eq!(Value::Object(r.headers), expected);
    }

    #[test]
    fn the_log_keeps_the_last_requests_in_order() {
        let levers = Levers::default();
        for i in 0..REQUEST_LOG_LEN + 2 {
            levers.record(Arrival::of(
                "GET",
                &format!("/{i}"),
                &http::HeaderMap::new(),
            ));
        }
        let paths: Vec<String> = levers.requests().into_iter().map(|r| r.path).collect();
        let expected: Vec<String> = (2..REQUEST_LOG_LEN + 2).map(|i| format!("/{i}")).collect();
        assert_eq!(paths, expected);
    }
}
