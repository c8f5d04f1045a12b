//! One client connection, until it ends or the gateway drains: TLS when the listener has a
//! certificate (`[tls]`), then HTTP/2 when ALPN chose `h2` — or, on a plain listener, when the
//! client opens with the HTTP/2 preface (h2c with prior knowledge, as a front proxy may) — and
//! HTTP/1.1 otherwise, behind the request-framing guard ([`crate::wire`]). WebSockets are
//! HTTP/1.1 upgrades; an HTTP/1.1 SSE stream is written by the connection itself once hyper has
//! sent its head ([`crate::stream_out`]).

use crate::app::Gateway;
use crate::caps::Connection;
use crate::conn_timer::ConnTimer;
use crate::drain::Drain;
use crate::stream_out::{self, Handover, Streaming, Watched};
use crate::wire::{prefixed, Guarded, Prefixed, Refusal};
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::WaitForCancellationFutureOwned;

/// What every connection of the listener shares.
#[derive(Clone)]
pub struct Listener {
    /// The gateway.
    pub gw: Arc<Gateway>,
    /// The TLS acceptor, when the listener speaks TLS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Serves one accepted connection; `slot` holds its place under the connection caps.
///
/// Each way of serving is boxed: a task keeps a slot the size of its largest state for its whole
/// life, and the TLS and HTTP/2 states are several KiB larger than a plain HTTP/1.1 connection's
/// (measured: 5.7 KiB for this future unboxed, 1 KiB for plain HTTP/1.1). The TLS path is a
/// function of its own: a TLS stream held here, even moved on, would keep its room in the task.
pub async fn serve(l: Listener, mut stream: TcpStream, peer: SocketAddr, slot: Arc<Connection>) {
    let header_timeout = l.gw.live().config.limits.header_read_timeout;
    let Some(tls) = l.tls.clone() else {
        // Boxed too: its timers and first read would otherwise keep their room in the task.
        let Some((h2, first)) = Box::pin(first_bytes(&l.gw, &mut stream, header_timeout)).await
        else {
            return;
        };
        let stream = Prefixed::new(first, stream);
        if h2 {
            l.gw.metrics.client_connection("h2", false);
            return Box::pin(serve_h2(l.gw, stream, peer, slot)).await;
        }
        l.gw.metrics.client_connection("http/1.1", false);
        return stream_on(Box::pin(serve_h1(l.gw, stream, peer, slot))).await;
    };
    Box::pin(serve_tls(l.gw, tls, stream, peer, slot)).await
}

/// Serves an HTTP/1.1 connection (`h1`), then writes the stream it handed over, if any. The
/// connection's box is freed before the stream's is made.
async fn stream_on<F, S>(h1: Pin<Box<F>>)
where
    F: Future<Output = Option<Streaming<S>>>,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handed = h1.await.map(Box::pin);
    if let Some(streaming) = handed {
        streaming.await;
    }
}

/// A connection to the TLS listener: the handshake (within the header timeout), then HTTP/2 or
/// HTTP/1.1 as ALPN chose.
async fn serve_tls(
    gw: Arc<Gateway>,
    tls: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    slot: Arc<Connection>,
) {
    let header_timeout = gw.live().config.limits.header_read_timeout;
    let accept = tokio::time::timeout(header_timeout, tls.accept(stream));
    let accepted = Box::pin(unless_draining(&gw, async { accept.await.ok()?.ok() }));
    let Some(stream) = accepted.await else {
        return;
    };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        gw.metrics.client_connection("h2", true);
        Box::pin(serve_h2(gw, stream, peer, slot)).await
    } else {
        gw.metrics.client_connection("http/1.1", true);
        stream_on(Box::pin(serve_h1(gw, stream, peer, slot))).await
    }
}

/// What a plain connection opens with ([`prefixed::opening`]), read within `header_timeout`.
///
/// A connection that has not begun a request when the drain starts is closed unanswered, as
/// hyper's graceful shutdown closes an idle one or one it has read nothing from (this read comes
/// before hyper's). A client retries such a request on a new connection; a browser's
/// preconnected socket would otherwise carry its EventSource's reconnect to the draining
/// gateway, and a 503 ends an EventSource for good.
async fn first_bytes<S: AsyncRead + Unpin>(
    gw: &Gateway,
    io: &mut S,
    header_timeout: Duration,
) -> Option<(bool, bytes::Bytes)> {
    let deadline = tokio::time::Instant::now() + header_timeout;
    unless_draining(gw, prefixed::opening(io, deadline)).await
}

/// `work`'s answer, or `None` once the gateway drains (what has already arrived wins).
async fn unless_draining<T>(gw: &Gateway, work: impl Future<Output = Option<T>>) -> Option<T> {
    tokio::select! {
        biased;
        done = work => done,
        _ = gw.draining.cancelled() => None,
    }
}

type Served = Pin<
    Box<
        dyn Future<Output = Result<http::Response<crate::body::Body>, std::convert::Infallible>>
            + Send,
    >,
>;

/// What the service of an HTTP/1.1 connection has that an HTTP/2 one has not: the guard's
/// refusals, the stream handover, and the connection's one timer (its requests run in its task).
#[derive(Clone)]
struct H1 {
    refusal: Arc<Refusal>,
    handover: Arc<Handover>,
    timer: ConnTimer,
}

/// The service of one connection: every request goes to [`crate::dispatch::handle`], except the
/// stand-in of a head the HTTP/1 guard refused.
fn service(
    gw: Arc<Gateway>,
    peer: SocketAddr,
    slot: Arc<Connection>,
    h1: Option<H1>,
) -> impl Fn(Request<Incoming>) -> Served + Clone {
    move |req: Request<Incoming>| {
        let (gw, slot) = (gw.clone(), slot.clone());
        let refused = h1.as_ref().and_then(|h| h.refusal.claim(req.headers()));
        let handover = h1
            .as_ref()
            .filter(|_| Handover::eligible(&req))
            .map(|h| h.handover.clone());
        let timer = h1.as_ref().map(|h| h.timer.clone());
        // Boxed: hyper keeps a slot the size of this future for the connection's whole life; a
        // box in it is 16 bytes, and the request's own state is freed once the response (or the
        // stream body) is handed over. The paths a plain request does not take (a registry
        // miss, a JWKS refetch, a ticket's book, a new upstream connection, the SSE rail) are
        // boxed where they are awaited, so that this future stays a small allocation (~6 KiB
        // instead of ~14: moved in one copy, and not a page-sized block whose pages later hold
        // a connection's long-lived state).
        Box::pin(async move {
            let resp = match refused {
                Some(denial) => crate::dispatch::refused(&gw, &denial),
                None => crate::dispatch::handle(gw, req, peer, slot, timer).await,
            };
            Ok(match handover {
                Some(h) => h.take(resp),
                None => resp,
            })
        })
    }
}

/// HTTP/1.1 with upgrades, behind the framing guard; an SSE stream's body is handed back to be
/// written by the connection itself once hyper has sent its head ([`crate::stream_out`]).
///
/// Not an `async fn`: its arguments and setup locals would keep their room in its state, held
/// for as long as the connection stays open (1,072 bytes that way, in the next allocation size
/// class up; [`UntilDrained`] is the connection, the drain signal and the handover only).
fn serve_h1<S>(
    gw: Arc<Gateway>,
    io: S,
    peer: SocketAddr,
    slot: Arc<Connection>,
) -> impl Future<Output = Option<Streaming<S>>> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (header_bytes, header_timeout, stall_limit) = {
        let live = gw.live();
        let limits = &live.config.limits;
        let stall = stream_out::stall_limit(live.config.sse.keepalive);
        (limits.max_header_bytes, limits.header_read_timeout, stall)
    };
    let drain = gw.draining.clone();
    let stopped = drain.clone().cancelled_owned();
    let refusal = Refusal::new();
    let handover = Handover::new();
    let io = Watched::new(
        Guarded::new(io, header_bytes, refusal.clone()),
        handover.clone(),
    );
    let timer = ConnTimer::new();
    let h1 = H1 {
        refusal,
        handover: handover.clone(),
        timer: timer.clone(),
    };
    let svc = service(gw, peer, slot.clone(), Some(h1));
    let conn = http1::Builder::new()
        .timer(timer)
        .header_read_timeout(header_timeout)
        .max_buf_size((header_bytes * 2).max(8192))
        .serve_connection(TokioIo::new(io), service_fn(svc))
        .with_upgrades();
    UntilDrained {
        conn: Some(conn),
        drain,
        stopped,
        waiting: false,
        shutdown: Some(|conn| conn.graceful_shutdown()),
        release: |conn| Some(conn.into_parts()?.io.into_inner().into_inner().into_inner()),
        handover,
        stall_limit,
        slot,
    }
}

pin_project_lite::pin_project! {
    /// A connection served until it ends or hands its stream over; once the gateway drains, it
    /// is told to finish the exchange under way and close (`shutdown`, taken when called).
    struct UntilDrained<C, S> {
        conn: Option<C>,
        drain: Drain,
        // Polled once to hold the task's waker, then again only once the drain has started
        // (polling the wait takes a lock every clone of the drain token shares).
        #[pin]
        stopped: WaitForCancellationFutureOwned,
        waiting: bool,
        shutdown: Option<fn(Pin<&mut C>)>,
        release: fn(C) -> Option<S>,
        handover: Arc<Handover>,
        stall_limit: Duration,
        slot: Arc<Connection>,
    }
}

impl<C: Future + Unpin, S> Future for UntilDrained<C, S> {
    type Output = Option<Streaming<S>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if Pin::new(&mut *conn).poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            // Checked after every poll of the connection: nothing wakes it once the head is out.
            if this.handover.head_sent() {
                let io = this.conn.take().and_then(*this.release);
                let body = this.handover.body();
                return Poll::Ready(io.zip(body).map(|(io, body)| {
                    Streaming::new(io, body, *this.stall_limit, this.slot.clone())
                }));
            }
            if this.shutdown.is_none() || (*this.waiting && !this.drain.is_started()) {
                return Poll::Pending;
            }
            *this.waiting = true;
            if this.stopped.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if let Some(shutdown) = this.shutdown.take() {
                shutdown(Pin::new(conn));
            }
        }
    }
}

/// HTTP/2: every request a stream of its own, each with its own flow control (a stalled SSE
/// stream does not hold up the connection's others); the drain sends GOAWAY, and so does a
/// connection that has not authenticated a request within `header_read_timeout_s` (as an
/// HTTP/1 connection must send its head in that time).
async fn serve_h2<S>(gw: Arc<Gateway>, io: S, peer: SocketAddr, slot: Arc<Connection>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = gw.live().config.limits.clone();
    let stop = gw.draining.clone();
    let watched = slot.clone();
    let svc = service(gw, peer, slot, None);
    let conn = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(H2_MAX_STREAMS)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .serve_connection(TokioIo::new(io), service_fn(svc));
    tokio::pin!(conn);
    let deadline = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(deadline);
    let mut waited = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stop.cancelled() => break,
            _ = &mut deadline, if !waited => {
                waited = true;
                if !watched.is_authenticated() {
                    break;
                }
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// Most concurrent streams on one HTTP/2 connection.
const H2_MAX_STREAMS: u32 = 256;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::{Bounds, Caps};
    use crate::stream_out::Streams;
    use http::Response;
    use http_body::Body as _;
    use tokio::io::DuplexStream;

    /// A connection whose response head goes out in the poll that follows its shutdown.
    struct HeadAtShutdown {
        shut: bool,
        resp: Response<crate::body::Body>,
        io: Watched<DuplexStream>,
    }

    impl Future for HeadAtShutdown {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let this = self.get_mut();
            if this.shut {
                assert!(Pin::new(this.resp.body_mut()).poll_frame(cx).is_pending());
                assert!(Pin::new(&mut this.io).poll_flush(cx).is_ready());
            }
            Poll::Pending
        }
    }

    #[test]
    fn a_head_sent_in_the_poll_that_starts_the_drain_is_handed_over() {
        let handover = Handover::new();
        let mut marked = Response::new(crate::body::full("x"));
        marked.extensions_mut().insert(Streams);
        let (_client, server) = tokio::io::duplex(64);
        let conn = HeadAtShutdown {
            shut: false,
            resp: handover.take(marked),
            io: Watched::new(server, handover.clone()),
        };
        let caps = Caps::new(Bounds {
            connections: 1,
            unauthenticated: 1,
            unauthenticated_per_address: 1,
            streams_per_tenant: 1,
        });
        let drain = Drain::default();
        drain.start();
        let served = UntilDrained {
            conn: Some(conn),
            drain: drain.clone(),
            stopped: drain.cancelled_owned(),
            waiting: false,
            shutdown: Some(|c: Pin<&mut HeadAtShutdown>| c.get_mut().shut = true),
            release: |c: HeadAtShutdown| Some(c.io.into_inner()),
            handover,
            stall_limit: Duration::from_secs(60),
            slot: caps.connect([127, 0, 0, 1].into()).expect("slot"),
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let polled = std::pin::pin!(served).poll(&mut cx);
        assert!(
            matches!(polled, Poll::Ready(Some(_))),
            "handed over in the same poll: nothing would wake the connection again"
        );
    }
}
