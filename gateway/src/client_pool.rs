//! Pooled HTTP/1.1 connections to upstreams, over hyper's connection handles: a request takes
//! an idle connection of its upstream (scheme and authority) or opens one, and the connection
//! goes back to the pool when the answer's body has been read to its end — in the request's own
//! task, with no task spawned per request to wait for the connection to become free. A
//! connection the upstream closed while it sat idle is skipped, and a request that found its
//! connection closed before a byte of it was sent is sent again on a new one. Idle connections
//! are closed after the idle timeout (a reaper task, started with the first idle connection,
//! ends with the pool).

use crate::body::Body;
use crate::outbound::{self, UpstreamTls};
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

/// Where a pooled connection goes: TLS or not, and the upstream's authority, compared and
/// hashed as the text it is (`Authority`'s own hash feeds its bytes one at a time, lowercased).
#[derive(Clone)]
struct Key {
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

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
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
    idle: Mutex<HashMap<Key, Vec<Idle>, foldhash::fast::RandomState>>,
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
            idle: Mutex::new(HashMap::default()),
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
        loop {
            let idle = {
                let mut map = self.idle.lock().ok()?;
                let list = map.get_mut(key)?;
                let idle = list.pop();
                if list.is_empty() {
                    map.remove(key);
                }
                idle?
            };
            if idle.since.elapsed() >= self.settings.idle_timeout || idle.sender.is_closed() {
                continue;
            }
            let mut sender = idle.sender;
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn open(&self, uri: &Uri) -> Result<SendRequest<Body>, String> {
        let s = &self.settings;
        let io = outbound::connect(uri, &s.tls, s.connect_timeout).await?;
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
        if let Ok(mut map) = self.idle.lock() {
            let list = map.entry(key).or_default();
            if list.len() < self.settings.max_idle {
                let since = Instant::now();
                list.push(Idle { sender, since });
            }
        }
        self.reaper.call_once(|| {
            let pool = Arc::downgrade(self);
            let every = (self.settings.idle_timeout / 2).max(Duration::from_secs(1));
            tokio::spawn(reap(pool, every));
        });
    }

    /// Closes idle connections past the idle timeout or closed by their upstream.
    fn prune(&self) {
        if let Ok(mut map) = self.idle.lock() {
            let limit = self.settings.idle_timeout;
            map.retain(|_, list| {
                list.retain(|i| i.since.elapsed() < limit && !i.sender.is_closed());
                !list.is_empty()
            });
        }
    }

    /// Idle connections held, all upstreams together.
    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .map_or(0, |map| map.values().map(Vec::len).sum())
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

fn key_of(uri: &Uri) -> Result<Key, String> {
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
