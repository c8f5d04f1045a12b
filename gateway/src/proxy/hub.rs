//! One upstream SSE stream and the clients it feeds.
//!
//! A hub owns the upstream connection of one thread: private (one client) or shared by every
//! client of the thread (`share_upstream`). It parses upstream events, drops what was already
//! delivered (after a reconnect), appends to the thread's journal, stamps each event for each
//! client (once per distinct stamp), drops events naming a foreign tenant, and hands the bytes
//! to each client's bounded queue. A full queue ends that client with `stream.slow_consumer`.
//! When the upstream breaks, the hub reconnects with jittered backoff (50 ms doubling to 2 s),
//! sending the last delivered id as `Last-Event-ID`, until `resume_deadline`.

use crate::app::Gateway;
use crate::body::Body;
use crate::config::Route;
use crate::dedupe::Deduper;
use crate::inject::{prepare, Prepared, Stamp, Stamped};
use crate::journal::Journal;
use crate::proxy::sse_body::{Batch, Chunk, EndSlot};
use crate::proxy::upstream::{connect_tcp, jittered};
use crate::sse::write::{write_event, write_fields};
use crate::sse::{Event, Parser};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use railgate_policy::{Denial, ErrorCode};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};

/// One client of a hub.
pub struct Sub {
    /// Hub-local id.
    pub id: u64,
    /// The client's queue.
    pub tx: mpsc::Sender<Chunk>,
    /// Where a final frame goes when the hub ends this client.
    pub end: Arc<EndSlot>,
    /// The client's stamp.
    pub stamp: Arc<Stamp>,
    /// The client's trace id (for error envelopes).
    pub trace_id: String,
    /// Set for clients that replayed from the journal: drops live events they already got.
    pub dedupe: Option<Deduper>,
}

/// How to reach the upstream stream.
#[derive(Clone)]
pub struct UpstreamSpec {
    /// Full upstream URI.
    pub uri: Uri,
    /// Prepared headers (verified context, hygiene applied).
    pub headers: HeaderMap,
}

struct State {
    subs: Vec<Sub>,
    dedupe: Deduper,
    /// The last event id delivered (what a reconnect resumes from).
    last_id: Option<String>,
    /// A client cursor to announce as `resume_cursor` (source upstream) once connected.
    pending_resume: Option<String>,
}

/// A hub.
pub struct Hub {
    /// The route (for metrics and deadlines).
    pub route: Route,
    /// The thread.
    pub thread: String,
    journal: Arc<Mutex<Journal>>,
    state: Mutex<State>,
    /// Signalled when a client leaves, so an idle hub can stop.
    pub left: Arc<Notify>,
    next_sub: AtomicU64,
    shared: bool,
    /// `events_forwarded_total` for this route (looked up once, not per event).
    forwarded: prometheus::IntCounter,
    /// Clients replaying the journal that will join (they keep an idle hub alive).
    joining: AtomicU64,
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

/// The frame that ends a stream with an error.
pub fn error_frame(code: ErrorCode, trace_id: &str) -> Bytes {
    let json = Denial::new(code).envelope(trace_id).to_json();
    Bytes::from(format!("event: error\ndata: {json}\n\n"))
}

/// `event: resume_cursor` (no id line).
pub fn resume_frame(cursor: &str, source: &str) -> Bytes {
    let data = serde_json::json!({"cursor": cursor, "source": source}).to_string();
    Bytes::from(format!("event: resume_cursor\ndata: {data}\n\n"))
}

/// Renders one event for one stamp; `None` for a foreign event.
pub fn render(ev: &Event, st: &Stamp) -> Option<Bytes> {
    render_prepared(ev, ev.data.as_deref().map(prepare).as_ref(), st)
}

/// Renders an event whose data was already parsed (once for every client).
fn render_prepared(ev: &Event, prepared: Option<&Prepared<'_>>, st: &Stamp) -> Option<Bytes> {
    let capacity = ev
        .data
        .as_ref()
        .map_or(16, |d| d.len() + st.routing.len() + 64);
    let mut out = Vec::with_capacity(capacity);
    match prepared.map(|p| p.stamp(st)) {
        Some(Stamped::Foreign) => return None,
        Some(Stamped::Rewritten(s)) => write_event(ev, Some(&s), &mut out),
        Some(Stamped::Unchanged) | None => write_event(ev, None, &mut out),
    }
    Some(Bytes::from(out))
}

impl Hub {
    /// A hub for `thread` on `route`, resuming after `cursor` if given.
    pub fn new(
        gw: &Gateway,
        route: Route,
        thread: String,
        journal: Arc<Mutex<Journal>>,
        cursor: Option<&str>,
        shared: bool,
    ) -> Arc<Hub> {
        let forwarded = gw
            .metrics
            .events_forwarded_total
            .with_label_values(&[&route.name, "sse"]);
        Arc::new(Hub {
            route,
            thread,
            journal,
            state: Mutex::new(State {
                subs: Vec::new(),
                dedupe: Deduper::after(cursor),
                last_id: cursor.map(str::to_owned),
                pending_resume: None,
            }),
            left: Arc::new(Notify::new()),
            next_sub: AtomicU64::new(1),
            shared,
            forwarded,
            joining: AtomicU64::new(0),
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
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// The id a reconnect resumes from.
    pub fn last_id(&self) -> Option<String> {
        self.lock().last_id.clone().filter(|i| !i.is_empty())
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
    pub async fn catch_up_and_join(
        &self,
        gw: &Gateway,
        mut sub: Sub,
        cursor: String,
        _joining: Joining,
    ) {
        let mut at = cursor;
        let mut replayed = 0u64;
        loop {
            let batch = match self
                .journal
                .lock()
                .map(|mut j| j.after(&at, Instant::now()))
            {
                Ok(Some(b)) => b,
                _ => {
                    sub.end
                        .set(error_frame(ErrorCode::SlowConsumer, &sub.trace_id));
                    return;
                }
            };
            if batch.is_empty() {
                let mut st = self.lock();
                let still_empty = self
                    .journal
                    .lock()
                    .ok()
                    .and_then(|mut j| j.after(&at, Instant::now()))
                    .is_some_and(|b| b.is_empty());
                if still_empty {
                    if self.shared {
                        sub.dedupe = Some(Deduper::after(Some(&at)));
                    } else {
                        st.dedupe = Deduper::after(Some(&at));
                        st.last_id = Some(at);
                    }
                    st.subs.push(sub);
                    gw.metrics
                        .replayed_events_total
                        .with_label_values(&[&self.route.name, "journal"])
                        .inc_by(replayed);
                    return;
                }
                continue;
            }
            for ev in &batch {
                if let Some(b) = render(ev, &sub.stamp) {
                    match tokio::time::timeout(REPLAY_STALL, sub.tx.send(b.into())).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return,
                        Err(_) => {
                            self.cut_slow(gw, &sub);
                            return;
                        }
                    }
                }
                if let Some(id) = ev.id.as_deref() {
                    at = id.to_owned();
                }
                replayed += 1;
            }
        }
    }

    /// Queues a frame for one client; on overflow ends it as a slow consumer.
    fn push(&self, gw: &Gateway, sub: &mut Sub, frame: impl Into<Chunk>) -> bool {
        match sub.tx.try_send(frame.into()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.cut_slow(gw, sub);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Ends a client that fell behind: `stream.slow_consumer` after what it already has.
    fn cut_slow(&self, gw: &Gateway, sub: &Sub) {
        sub.end
            .set(error_frame(ErrorCode::SlowConsumer, &sub.trace_id));
        gw.metrics
            .slow_consumer_disconnects_total
            .with_label_values(&[&self.route.name, "sse"])
            .inc();
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
            s.end.set(error_frame(code, &s.trace_id));
        }
    }

    /// Called when the upstream answered 200.
    fn on_connected(&self, gw: &Gateway) {
        let mut st = self.lock();
        if let Some(c) = st.pending_resume.take() {
            let frame = resume_frame(&c, "upstream");
            let mut subs = std::mem::take(&mut st.subs);
            subs.retain_mut(|s| self.push(gw, s, frame.clone()));
            st.subs = subs;
        }
    }

    /// Delivers parsed upstream events to every client: one shared [`Batch`] per upstream read,
    /// finished by each client's own body. Foreign events are dropped here, once: every client of
    /// a hub passed the ownership check of the same thread, so they share one tenant and env.
    pub fn deliver(&self, gw: &Gateway, events: Vec<Event>, read_at: Instant) {
        let mut st = self.lock();
        let Some(owner) = st.subs.first().map(|s| s.stamp.clone()) else {
            return;
        };
        let now = Instant::now();
        let mut batch = Batch {
            events: Vec::with_capacity(events.len()),
            heads: Vec::with_capacity(events.len()),
        };
        let mut violations = 0u64;
        for ev in events {
            let prev = st.last_id.clone();
            if let Some(id) = ev.id.as_deref() {
                if !st.dedupe.is_new(id) {
                    continue;
                }
                st.last_id = Some(ev.last_event_id.clone());
            }
            let prepared = ev.data.as_deref().map(prepare);
            if prepared
                .as_ref()
                .is_some_and(|p| p.is_foreign(&owner.tenant, &owner.env))
            {
                violations += 1;
                continue;
            }
            let head = prepared
                .as_ref()
                .and_then(Prepared::shared_prefix)
                .map(|prefix| {
                    let mut head = Vec::with_capacity(prefix.len() + 64);
                    write_fields(&ev, &mut head);
                    head.extend_from_slice(b"data: ");
                    head.extend_from_slice(prefix.as_bytes());
                    Bytes::from(head)
                });
            drop(prepared);
            let ev = Arc::new(ev);
            if let Ok(mut j) = self.journal.lock() {
                j.append(&ev, prev.as_deref(), now);
            }
            batch.events.push(ev);
            batch.heads.push(head);
        }
        if violations > 0 {
            gw.metrics
                .isolation_violations_total
                .with_label_values(&[&self.route.name])
                .inc_by(violations);
            tracing::warn!(route = %self.route.name, thread_id = %self.thread, violations, "upstream events name a foreign tenant; dropped");
        }
        if batch.events.is_empty() {
            return;
        }
        let dispatching = batch.events.iter().filter(|e| e.dispatches()).count() as u64;
        let batch = Arc::new(batch);
        let mut forwarded = 0u64;
        let mut subs = std::mem::take(&mut st.subs);
        subs.retain_mut(|sub| {
            let chunk = match sub.dedupe.as_mut() {
                None => Chunk::Events(batch.clone()),
                Some(d) => {
                    // A client that replayed the journal: skip what it already got, then stop
                    // checking once a whole batch was new.
                    let keep: Vec<usize> = (0..batch.events.len())
                        .filter(|i| batch.events[*i].id.as_deref().is_none_or(|id| d.is_new(id)))
                        .collect();
                    if keep.len() == batch.events.len() {
                        sub.dedupe = None;
                        Chunk::Events(batch.clone())
                    } else if keep.is_empty() {
                        return true;
                    } else {
                        Chunk::Events(Arc::new(Batch {
                            events: keep.iter().map(|i| batch.events[*i].clone()).collect(),
                            heads: keep.iter().map(|i| batch.heads[*i].clone()).collect(),
                        }))
                    }
                }
            };
            let kept = self.push(gw, sub, chunk);
            if kept {
                forwarded += dispatching;
            }
            kept
        });
        st.subs = subs;
        self.forwarded.inc_by(forwarded);
        gw.metrics
            .event_relay_seconds
            .observe(read_at.elapsed().as_secs_f64());
    }
}

/// An upstream event stream: the response body and the connection that feeds it. Both are
/// driven by the hub's own task, so an upstream read reaches the parser without a hop through
/// another task (and a stream costs one task, not two).
pub struct Stream {
    body: Incoming,
    conn: UpstreamConn,
    conn_done: bool,
    // Dropping the sender would let the connection close once the response ends; kept for
    // the stream's life.
    _sender: http1::SendRequest<Body>,
}

type UpstreamConn = http1::Connection<TokioIo<TcpStream>, Body>;

/// The outcome of opening the upstream stream.
pub enum Connect {
    /// Streaming.
    Streaming(Box<Stream>),
    /// A terminal answer.
    Gone(ErrorCode),
    /// Try again later.
    Retry(String),
}

/// Opens the upstream stream on its own connection, resuming after `cursor`.
pub async fn connect(gw: &Gateway, spec: &UpstreamSpec, cursor: Option<&str>) -> Connect {
    let limits = &gw.config.limits;
    let Some(authority) = spec.uri.authority().cloned() else {
        return Connect::Gone(ErrorCode::UpstreamUnavailable);
    };
    let tcp = match connect_tcp(&authority, limits.upstream_connect_timeout).await {
        Ok(t) => t,
        Err(e) => return Connect::Retry(e),
    };
    let (mut sender, mut conn) = match http1::handshake(TokioIo::new(tcp)).await {
        Ok(pair) => pair,
        Err(e) => return Connect::Retry(format!("handshake: {e}")),
    };
    let mut req = Request::new(crate::body::empty());
    *req.uri_mut() = spec
        .uri
        .path_and_query()
        .map(|pq| Uri::from(pq.clone()))
        .unwrap_or_else(|| Uri::from_static("/"));
    *req.headers_mut() = spec.headers.clone();
    let h = req.headers_mut();
    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        h.insert(http::header::HOST, host);
    }
    h.insert(
        http::header::ACCEPT,
        HeaderValue::from_static("text/event-stream"),
    );
    h.remove("last-event-id");
    if let Some(v) = cursor.and_then(|c| HeaderValue::from_str(c).ok()) {
        h.insert("last-event-id", v);
    }
    let answer = async {
        tokio::select! {
            r = sender.send_request(req) => r.map_err(|e| e.to_string()),
            r = &mut conn => Err(format!("connection ended before the answer: {r:?}")),
        }
    };
    let resp = match tokio::time::timeout(limits.upstream_response_timeout, answer).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => return Connect::Retry(e),
        Err(_) => return Connect::Retry("no answer within the response timeout".into()),
    };
    match resp.status().as_u16() {
        200 => Connect::Streaming(Box::new(Stream {
            body: resp.into_body(),
            conn,
            conn_done: false,
            _sender: sender,
        })),
        404 => Connect::Gone(ErrorCode::ThreadNotFound),
        410 => Connect::Gone(ErrorCode::CursorInvalid),
        408 | 425 | 429 | 500..=599 => {
            Connect::Retry(format!("upstream answered {}", resp.status()))
        }
        _ => Connect::Gone(ErrorCode::UpstreamUnavailable),
    }
}

/// Runs a hub's upstream side until no client is left, the deadline passes, or drain. A shared
/// hub that a client joined while it was stopping keeps going.
pub async fn run(gw: Arc<Gateway>, hub: Arc<Hub>, spec: UpstreamSpec, first: Option<Box<Stream>>) {
    let mut first = first;
    loop {
        run_once(&gw, &hub, &spec, first.take()).await;
        if !hub.is_shared() || gw.relay.try_remove(&hub) || gw.draining.is_cancelled() {
            break;
        }
    }
}

async fn run_once(
    gw: &Arc<Gateway>,
    hub: &Arc<Hub>,
    spec: &UpstreamSpec,
    first: Option<Box<Stream>>,
) {
    let gw = gw.clone();
    let hub = hub.clone();
    let mut parser = Parser::new(gw.config.sse.max_event_bytes);
    let mut body = first;
    let mut down_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(50);
    let labels = [hub.route.name.clone(), "sse".to_owned()];
    if body.is_some() {
        hub.on_connected(&gw);
    }
    loop {
        if body.is_none() {
            if hub.is_empty() || gw.draining.is_cancelled() {
                break;
            }
            match connect(&gw, spec, hub.last_id().as_deref()).await {
                Connect::Streaming(b) => {
                    if down_since.is_some() {
                        gw.metrics
                            .upstream_reconnects_total
                            .with_label_values(&[&labels[0], &labels[1], "ok"])
                            .inc();
                    }
                    parser.reset_stream();
                    hub.on_connected(&gw);
                    body = Some(b);
                    down_since = None;
                    backoff = Duration::from_millis(50);
                }
                Connect::Gone(code) => {
                    hub.fail_all(code);
                    break;
                }
                Connect::Retry(why) => {
                    gw.metrics
                        .upstream_reconnects_total
                        .with_label_values(&[&labels[0], &labels[1], "failed"])
                        .inc();
                    tracing::debug!(route = %hub.route.name, thread_id = %hub.thread, reason = %why, "upstream stream unavailable");
                }
            }
        }
        if let Some(b) = body.as_mut() {
            match pump(&gw, &hub, &mut parser, b).await {
                Pumped::Broken => body = None,
                Pumped::Stop => break,
            }
        }
        if body.is_none() {
            let since = *down_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= hub.route.resume_deadline {
                gw.metrics
                    .upstream_reconnects_total
                    .with_label_values(&[&labels[0], &labels[1], "gave_up"])
                    .inc();
                hub.fail_all(ErrorCode::UpstreamUnavailable);
                break;
            }
            hub.comment(b": reconnecting\n\n");
            tokio::select! {
                _ = tokio::time::sleep(jittered(backoff)) => {}
                _ = gw.draining.cancelled() => break,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

enum Pumped {
    Broken,
    Stop,
}

/// Reads the upstream stream and delivers its events. Deliveries are at least `batch_window`
/// apart: events that arrive sooner wait for the window's end and go out as one batch (one
/// write per client instead of one per event). An event after a quiet spell goes out at once.
async fn pump(gw: &Gateway, hub: &Hub, parser: &mut Parser, up: &mut Stream) -> Pumped {
    let window = gw.config.sse.batch_window;
    let mut pending = Vec::new();
    let mut pending_since = Instant::now();
    let mut last_delivery: Option<Instant> = None;
    let flush_at = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(flush_at);
    let mut armed = false;
    let outcome = loop {
        tokio::select! {
            frame = up.body.frame() => match frame {
                Some(Ok(f)) => {
                    let Ok(data) = f.into_data() else { continue };
                    if pending.is_empty() {
                        pending_since = Instant::now();
                    }
                    if parser.feed(&data, &mut pending).is_err() {
                        tracing::warn!(route = %hub.route.name, thread_id = %hub.thread, "upstream event over the size limit; reconnecting");
                        break Pumped::Broken;
                    }
                    if pending.is_empty() || armed {
                        continue;
                    }
                    let now = Instant::now();
                    match last_delivery.map(|t| t + window).filter(|due| *due > now) {
                        Some(due) => {
                            flush_at.as_mut().reset(due.into());
                            armed = true;
                        }
                        None => {
                            hub.deliver(gw, std::mem::take(&mut pending), pending_since);
                            last_delivery = Some(now);
                            if hub.is_empty() {
                                break Pumped::Stop;
                            }
                        }
                    }
                }
                _ => break Pumped::Broken,
            },
            _ = &mut flush_at, if armed => {
                armed = false;
                hub.deliver(gw, std::mem::take(&mut pending), pending_since);
                last_delivery = Some(Instant::now());
                if hub.is_empty() {
                    break Pumped::Stop;
                }
            }
            // Reads the socket into the body; once it ends, the body still yields what was read.
            _ = &mut up.conn, if !up.conn_done => up.conn_done = true,
            _ = hub.left.notified() => if hub.is_empty() { break Pumped::Stop },
            _ = gw.draining.cancelled() => break Pumped::Stop,
        }
    };
    // What was read is delivered, whatever ends the stream.
    if !pending.is_empty() {
        hub.deliver(gw, pending, pending_since);
    }
    outcome
}

/// Shared hubs and the journals of every thread.
#[derive(Default)]
pub struct Relay {
    hubs: Mutex<HashMap<(String, String), Arc<Hub>>>,
    /// Per-thread journals.
    pub journals: crate::journal::Journals,
}

impl Relay {
    /// Attaches a client to the shared hub of a thread, creating the hub if needed. `attach` runs
    /// under the relay lock, so a hub is never removed between being found and being joined.
    /// Returns the hub, whether it is new (its task must be started), and what `attach` returned.
    pub fn join_shared<T>(
        &self,
        route: &str,
        thread: &str,
        make: impl FnOnce() -> Arc<Hub>,
        attach: impl FnOnce(&Arc<Hub>) -> T,
    ) -> (Arc<Hub>, bool, T) {
        let mut hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        let key = (route.to_owned(), thread.to_owned());
        let (hub, new) = match hubs.get(&key) {
            Some(h) => (h.clone(), false),
            None => (make(), true),
        };
        let attached = attach(&hub);
        if new {
            hubs.insert(key, hub.clone());
        }
        (hub, new, attached)
    }

    /// Removes a shared hub if it has no client; `false` when a client joined meanwhile.
    fn try_remove(&self, hub: &Arc<Hub>) -> bool {
        let mut hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        if !hub.is_empty() {
            return false;
        }
        let key = (hub.route.name.clone(), hub.thread.clone());
        if hubs.get(&key).is_some_and(|h| Arc::ptr_eq(h, hub)) {
            hubs.remove(&key);
        }
        true
    }
}
