//! An HTTP/1.1 event stream written by its connection once hyper has sent the response head.
//!
//! hyper serves a connection with two buffers of 8 KiB (one to read, one for response heads),
//! neither of which can be made smaller, and keeps its parser's and dispatcher's state beside
//! them for as long as a response lasts — for an SSE stream, its whole life. A response marked
//! [`Streams`] is handed over instead: the service keeps its body in the connection's
//! [`Handover`] and gives hyper a stand-in body that never yields, hyper writes the head (with
//! `Transfer-Encoding: chunked`, as for any body of unknown length), and once the head has been
//! flushed to the socket the connection takes its socket back from hyper and writes the body's
//! chunks itself ([`Streaming`]); hyper's state and buffers are freed. The head, and every
//! answer that is not an SSE stream, are hyper's as before.
//!
//! The connection closes when the stream ends (after the last chunk): what a client sends after
//! its SSE request is read and dropped (up to [`MAX_AFTER`] bytes; past that the connection is
//! closed), and a request pipelined behind it is not answered — a client sends it again on a
//! new connection. A client that takes no byte for four keep-alive intervals (at least 10 s;
//! [`stall_limit`]) while bytes wait for it is gone too: its connection is closed, and what its
//! stream held (up to `client_queue_bytes`) with it.

use crate::body::{Body, BoxError};
use crate::caps::Connection;
use bytes::{Buf, Bytes};
use http::{Method, Request, Response, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Duration, Sleep};

/// Marks a response whose body is a long-lived event stream, which an HTTP/1.1 connection
/// writes itself once hyper has sent the head.
#[derive(Clone, Copy, Debug)]
pub struct Streams;

/// Most bytes read and dropped after the request of a handed-over stream before its
/// connection is closed.
pub const MAX_AFTER: usize = 64 * 1024;

/// How long a client may take no byte while bytes wait for it: four keep-alive intervals
/// (`sse.keepalive_s`), at least 10 s.
pub fn stall_limit(keepalive: Duration) -> Duration {
    (keepalive * 4).max(Duration::from_secs(10))
}

/// Where a connection's handover stands.
const NONE: u8 = 0;
/// A body waits in the slot; hyper has the response.
const PLACED: u8 = 1;
/// hyper has queued the head (it polled the stand-in body, which it does after queuing it).
const HEAD_QUEUED: u8 = 2;
/// The socket was flushed after that: hyper's write buffer was empty (hyper flushes the socket
/// only once its buffer is written out), so the whole head has been sent.
const HEAD_SENT: u8 = 3;

/// One HTTP/1.1 connection's handover slot, shared by its service, the stand-in body and the
/// socket wrapper ([`Watched`]).
#[derive(Default)]
pub struct Handover {
    body: Mutex<Option<Body>>,
    step: AtomicU8,
}

impl Handover {
    /// A connection's empty slot.
    pub fn new() -> Arc<Handover> {
        Arc::default()
    }

    /// Whether the answer to `req` may be handed over: a `GET` (hyper writes no body for
    /// `HEAD`) in HTTP/1.1 (an HTTP/1.0 body is not chunked).
    pub fn eligible<B>(req: &Request<B>) -> bool {
        req.version() == Version::HTTP_11 && req.method() == Method::GET
    }

    /// `resp`, with its body kept here and a stand-in in its place when it is marked
    /// [`Streams`] and no other stream was handed over on this connection.
    pub fn take(self: &Arc<Self>, mut resp: Response<Body>) -> Response<Body> {
        if resp.extensions_mut().remove::<Streams>().is_none() {
            return resp;
        }
        let Ok(mut slot) = self.body.lock() else {
            return resp;
        };
        let placed = self
            .step
            .compare_exchange(NONE, PLACED, Ordering::AcqRel, Ordering::Acquire);
        if placed.is_err() {
            return resp;
        }
        let stand_in = http_body_util::BodyExt::boxed(StandIn(self.clone()));
        *slot = Some(std::mem::replace(resp.body_mut(), stand_in));
        resp
    }

    /// Whether the head of the handed-over response has been sent.
    pub fn head_sent(&self) -> bool {
        self.step.load(Ordering::Acquire) == HEAD_SENT
    }

    /// The handed-over body.
    pub fn body(&self) -> Option<Body> {
        self.body.lock().ok()?.take()
    }

    fn advance(&self, from: u8, to: u8) {
        let _ = self
            .step
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// The body hyper is given for a handed-over response: it never yields. hyper polls it only
/// after queuing the response head, which is what the poll records.
struct StandIn(Arc<Handover>);

impl HttpBody for StandIn {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.advance(PLACED, HEAD_QUEUED);
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A connection's socket as hyper sees it: a flush after the stand-in body was polled tells
/// the slot that the head has gone out.
pub struct Watched<S> {
    inner: S,
    handover: Arc<Handover>,
}

impl<S> Watched<S> {
    /// `inner`, reporting to `handover`.
    pub fn new(inner: S, handover: Arc<Handover>) -> Watched<S> {
        Watched { inner, handover }
    }

    /// The socket.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.handover.advance(HEAD_QUEUED, HEAD_SENT);
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// What follows a chunk's data.
const CRLF: &[u8] = b"\r\n";

/// A chunk's size line: the size in lowercase hex (no leading zeros), then CRLF. Written by
/// hand: `write!` with `{:x}` was a visible share of a delivery's work.
fn size_line(len: usize) -> ([u8; 20], usize) {
    // A usize is at most 16 hex digits; with CRLF, 18 bytes.
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    let mut line = [0u8; 20];
    crate::mint::write_hex(&mut line[..digits], len as u128);
    line[digits..digits + 2].copy_from_slice(b"\r\n");
    (line, digits + 2)
}

/// One chunk on its way out: its size line, its data, and the CRLF after the data.
struct Out {
    line: [u8; 20],
    line_len: usize,
    data: Bytes,
    /// Bytes of the three already written.
    written: usize,
}

impl Out {
    /// The chunk carrying `data`; with no data, the last chunk, which ends the body.
    fn chunk(data: Bytes) -> Out {
        let (line, line_len) = size_line(data.len());
        Out {
            line,
            line_len,
            data,
            written: 0,
        }
    }

    /// What is left to write, as up to three slices.
    fn slices(&self) -> ([IoSlice<'_>; 3], usize) {
        let parts: [&[u8]; 3] = [&self.line[..self.line_len], &self.data, CRLF];
        let mut out = [IoSlice::new(&[]); 3];
        let (mut skip, mut n) = (self.written, 0);
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            out[n] = IoSlice::new(&part[skip..]);
            skip = 0;
            n += 1;
        }
        (out, n)
    }

    fn done(&self) -> bool {
        self.written == self.line_len + self.data.len() + CRLF.len()
    }
}

/// A handed-over stream: its socket, its body, and the connection's place under the caps.
pub struct Streaming<S> {
    io: S,
    body: Body,
    out: Option<Out>,
    unflushed: bool,
    ended: bool,
    after: usize,
    /// How long the client may take no byte while bytes wait for it.
    stall_limit: Duration,
    /// Running while the socket takes nothing (made when first needed).
    stalled: Option<Pin<Box<Sleep>>>,
    _slot: Arc<Connection>,
}

impl<S> Streaming<S> {
    /// Writes `body` to `io` as the chunks of a response whose head was sent; a client that
    /// takes no byte for `stall_limit` while bytes wait is let go.
    pub fn new(io: S, body: Body, stall_limit: Duration, slot: Arc<Connection>) -> Streaming<S> {
        Streaming {
            io,
            body,
            out: None,
            unflushed: false,
            ended: false,
            after: 0,
            stall_limit,
            stalled: None,
            _slot: slot,
        }
    }

    /// Whether a socket that is not taking bytes has done so for too long (`Pending` else).
    fn stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let limit = self.stall_limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Streaming<S> {
    /// Reads what the client sends, to see it leave: `Ready` once it has (or sent too much).
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let read = ready!(crate::wire::poll_read_chunk(&mut self.io, cx, |b| b.len()));
            match read {
                Ok(n) if n > 0 && self.after + n <= MAX_AFTER => self.after += n,
                _ => return Poll::Ready(()),
            }
        }
    }

    /// Writes out what the body yields until the socket or the body has to wait: `Ready`
    /// once the body has ended and its last chunk is sent, or the stream broke.
    fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if let Some(out) = &mut self.out {
                let (slices, n) = out.slices();
                let wrote = match Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n]) {
                    Poll::Ready(wrote) => wrote?,
                    Poll::Pending => return self.stall(cx),
                };
                self.stalled = None;
                if wrote == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                out.written += wrote;
                if !out.done() {
                    continue;
                }
                self.out = None;
                self.unflushed = true;
            }
            if self.unflushed {
                if Pin::new(&mut self.io).poll_flush(cx)?.is_pending() {
                    return self.stall(cx);
                }
                self.stalled = None;
                self.unflushed = false;
            }
            if self.ended {
                return Pin::new(&mut self.io).poll_shutdown(cx);
            }
            self.out = match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => {
                    self.ended = true;
                    Some(Out::chunk(Bytes::new()))
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.has_remaining() => Some(Out::chunk(data)),
                    _ => None,
                },
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            };
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Streaming<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.poll_gone(cx).is_ready() {
            return Poll::Ready(());
        }
        this.poll_out(cx).map(|_| ())
    }
}

#[cfg(test)]
#[path = "stream_out_tests.rs"]
mod tests;
