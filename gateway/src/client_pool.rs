//! Pooled HTTP/1.1 connections to upstreams: hyper's connection handles, and the raw connections
//! of the gateway's own exchanges (the HTTP rail's bodiless requests), each kind pooled apart. A
//! request takes an idle connection of its upstream (scheme and authority) or opens one, and the
//! connection goes back to the pool when the answer's body has been read to its end — in the
//! request's own task, with no task spawned per request to wait for the connection to become
//! free. A connection the upstream closed while it sat idle is skipped, and a request that found
//! its connection closed before a byte of it was sent is sent again on a new one. Idle
//! connections are closed after the idle timeout (a reaper task, started with the first idle
//! connection, ends with the pool).

use crate::body::Body;
use crate::outbound::{self, UpstreamIo, UpstreamTls, Writes};
use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response, Uri};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::AsyncRead;

/// Where a pooled connection goes: TLS or not, and the upstream's authority, compared and
/// hashed as the text it is (`Authority`'s own hash feeds its bytes one at a time, lowercased).
#[derive(Clone)]
pub struct Key {
    tls: bool,
    authority: Authority,
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.tls == other.tls && self.authority.as_str() == other.authority.as_str()
    }
}

impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.tls.hash(state);
        self.authority.as_str().hash(state);
    }
}

struct Idle<T> {
    conn: T,
    since: Instant,
}

/// How long ago `since` was, by the coarse clock an idle connection is stamped with.
fn age(since: Instant) -> Duration {
    crate::clock::coarse().saturating_duration_since(since)
}

/// Idle connections of one kind, by upstream, the most recently used last.
struct Idles<T>(Mutex<HashMap<Key, Vec<Idle<T>>, foldhash::fast::RandomState>>);

impl<T> Idles<T> {
    fn new() -> Self {
        Idles(Mutex::new(HashMap::default()))
    }

    /// The most recently used idle connection of `key` younger than `limit` that `open` says
    /// is still open; those found closed or too old are dropped.
    fn take(&self, key: &Key, limit: Duration, mut open: impl FnMut(&mut T) -> bool) -> Option<T> {
        let mut map = self.0.lock().ok()?;
        let list = map.get_mut(key)?;
        let mut found = None;
        while let Some(mut idle) = list.pop() {
            if age(idle.since) < limit && open(&mut idle.conn) {
                found = Some(idle.conn);
                break;
            }
        }
        if list.is_empty() {
            map.remove(key);
        }
        found
    }

    /// Keeps `conn` unless `key` already has `max` idle connections.
    fn put(&self, key: Key, conn: T, max: usize) {
        if let Ok(mut map) = self.0.lock() {
            let list = map.entry(key).or_default();
            if list.len() < max {
                let since = crate::clock::coarse();
                list.push(Idle { conn, since });
            }
        }
    }

    /// Drops the connections older than `limit` or closed.
    fn prune(&self, limit: Duration, mut open: impl FnMut(&mut T) -> bool) {
        if let Ok(mut map) = self.0.lock() {
            map.retain(|_, list| {
                list.retain_mut(|i| age(i.since) < limit && open(&mut i.conn));
                !list.is_empty()
            });
        }
    }

    #[cfg(test)]
    fn count(&self) -> usize {
        self.0
            .lock()
            .map_or(0, |map| map.values().map(Vec::len).sum())
    }
}

/// The pool's settings.
#[derive(Clone)]
pub struct Settings {
    /// TLS for `https://` upstreams.
    pub tls: UpstreamTls,
    /// Limit on opening a connection (TCP, then TLS).
    pub connect_timeout: Duration,
    /// An idle connection is closed after this long.
    pub idle_timeout: Duration,
    /// Most idle connections kept per upstream.
    pub max_idle: usize,
}

/// Idle connections by upstream.
pub struct Pool {
    idle: Idles<SendRequest<Body>>,
    raw: Idles<UpstreamIo>,
    reaper: std::sync::Once,
    settings: Settings,
}

/// An answer's body; its connection returns to the pool once the body has been read to its end.
pub struct PooledBody {
    inner: Incoming,
    back: Option<(Weak<Pool>, Key, SendRequest<Body>)>,
}

impl Pool {
    /// An empty pool.
    pub fn new(settings: Settings) -> Arc<Pool> {
        Arc::new(Pool {
            idle: Idles::new(),
            raw: Idles::new(),
            reaper: std::sync::Once::new(),
            settings,
        })
    }

    /// Sends `req` (absolute URI) on a pooled or new connection; the request goes out in origin
    /// form, its `Host` as the caller set it.
    #[allow(
        clippy::manual_async_fn,
        reason = "an `async fn` keeps the request it was given beside the local it moves into"
    )]
    pub fn send(
        self: &Arc<Self>,
        mut req: Request<Body>,
    ) -> impl Future<Output = Result<Response<PooledBody>, String>> + Send + '_ {
        async move {
            let uri = req.uri().clone();
            let key = key_of(&uri)?;
            *req.uri_mut() = origin_form(&uri);
            let mut fresh = false;
            loop {
                let mut sender = match self.checkout(&key).await {
                    Some(s) => s,
                    None => {
                        fresh = true;
                        Box::pin(self.open(&uri)).await?
                    }
                };
                match sender.try_send_request(req).await {
                    Ok(resp) => {
                        let back = Some((Arc::downgrade(self), key, sender));
                        return Ok(resp.map(|inner| PooledBody { inner, back }));
                    }
                    // Closed before the request went out: the same request, on a new connection.
                    Err(mut e) => match e.take_message() {
                        Some(unsent) if !fresh => req = unsent,
                        _ => return Err(with_causes(e.error())),
                    },
                }
            }
        }
    }

    /// The most recently used idle connection of `key` that is still open and ready.
    async fn checkout(&self, key: &Key) -> Option<SendRequest<Body>> {
        let limit = self.settings.idle_timeout;
        loop {
            let mut sender = self.idle.take(key, limit, |s| !s.is_closed())?;
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// The most recently used idle raw connection of `key` that is still open.
    pub fn take_raw(&self, key: &Key) -> Option<UpstreamIo> {
        self.raw.take(key, self.settings.idle_timeout, still_open)
    }

    /// A new raw connection to `uri`'s upstream (TLS for `https`), within the connect timeout.
    pub async fn open_raw(&self, uri: &Uri) -> Result<UpstreamIo, String> {
        let s = &self.settings;
        outbound::connect(uri, &s.tls, s.connect_timeout, Writes::Many).await
    }

    /// Keeps a raw connection whose last answer was read to its end.
    pub fn put_raw(self: &Arc<Self>, key: Key, io: UpstreamIo) {
        self.raw.put(key, io, self.settings.max_idle);
        self.start_reaper();
    }

    async fn open(&self, uri: &Uri) -> Result<SendRequest<Body>, String> {
        let io = self.open_raw(uri).await?;
        let (sender, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| with_causes(&e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %with_causes(&e), "upstream connection ended");
            }
        });
        Ok(sender)
    }

    fn put(self: &Arc<Self>, key: Key, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        self.idle.put(key, sender, self.settings.max_idle);
        self.start_reaper();
    }

    fn start_reaper(self: &Arc<Self>) {
        self.reaper.call_once(|| {
            let pool = Arc::downgrade(self);
            let every = (self.settings.idle_timeout / 2).max(Duration::from_secs(1));
            tokio::spawn(reap(pool, every));
        });
    }

    /// Closes idle connections past the idle timeout or closed by their upstream.
    fn prune(&self) {
        let limit = self.settings.idle_timeout;
        self.idle.prune(limit, |s| !s.is_closed());
        self.raw.prune(limit, still_open);
    }

    /// Idle connections held, all upstreams together.
    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.idle.count() + self.raw.count()
    }
}

async fn reap(pool: Weak<Pool>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(p) => p.prune(),
            None => return,
        }
    }
}

/// Whether a raw idle connection is still open: nothing to read and no end read. An idle
/// connection that has something to read (an end, an error, bytes nobody asked for) is not
/// reused.
fn still_open(io: &mut UpstreamIo) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    let mut buf = tokio::io::ReadBuf::uninit(&mut byte);
    Pin::new(io).poll_read(&mut cx, &mut buf).is_pending()
}

/// The pool key of `uri`'s upstream.
pub fn key_of(uri: &Uri) -> Result<Key, String> {
    let authority = uri.authority().ok_or("the upstream URI has no host")?;
    Ok(Key {
        tls: uri.scheme_str() == Some("https"),
        authority: authority.clone(),
    })
}

/// `uri`'s path and query alone (already parsed: shared, not parsed again).
fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query()
        .cloned()
        .map_or_else(|| Uri::from_static("/"), Uri::from)
}

/// An error with its chain of causes (`TLS: invalid peer certificate: …`), so a failure says
/// what failed.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl PooledBody {
    fn give_back(&mut self) {
        if let Some((pool, key, sender)) = self.back.take() {
            if let Some(pool) = pool.upgrade() {
                pool.put(key, sender);
            }
        }
    }
}

impl Drop for PooledBody {
    /// An answer whose body was complete without being read to its end (an empty one, say)
    /// still frees its connection.
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            // A broken answer leaves its connection unusable: it is not given back.
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[path = "client_pool_tests.rs"]
mod tests;
