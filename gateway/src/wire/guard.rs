//! [`Guarded`]: a connection's bytes on their way to hyper. Each request head is held until it
//! is complete, checked ([`super::head`]), then handed on; bodies go on as they arrive, followed
//! ([`super::chunked`]) only to find where the next head starts. After a head asking for a
//! protocol switch, bytes go through untouched.
//!
//! A refused head never reaches hyper: in its place hyper reads a stand-in request that only
//! this connection can produce (it carries the connection's random nonce), the service answers
//! it with the refusal's envelope and `Connection: close` ([`Refusal::claim`]), after any
//! earlier pipelined answers, and nothing the client sent after it is read.

use super::chunked::Chunked;
use super::head::{self, BodyLen, Framing, Refused, Scan};
use railgate_policy::Denial;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// The header naming a stand-in request.
const STAND_IN_HEADER: &str = "x-railgate-refusal";

/// The refusal a connection's guard decided, waiting for the service to answer it.
pub struct Refusal {
    nonce: String,
    pending: Mutex<Option<Denial>>,
    /// A stand-in was handed on: until then no request is one, and none is looked at.
    armed: AtomicBool,
}

impl Refusal {
    /// A connection's refusal slot, with a fresh nonce.
    pub fn new() -> Arc<Refusal> {
        Arc::new(Refusal {
            nonce: crate::mint::random_hex_id(),
            pending: Mutex::new(None),
            armed: AtomicBool::new(false),
        })
    }

    /// The refusal `headers` stand for, when they are this connection's stand-in.
    pub fn claim(&self, headers: &http::HeaderMap) -> Option<Denial> {
        // (A name made once: looking one up by its text parses the text on every request.)
        const NAME: http::HeaderName = http::HeaderName::from_static(STAND_IN_HEADER);
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        let nonce = headers.get(NAME)?;
        if nonce.as_bytes() != self.nonce.as_bytes() {
            return None;
        }
        self.pending.lock().ok()?.take()
    }

    fn stand_in(&self, refused: Refused) -> Vec<u8> {
        if let Ok(mut p) = self.pending.lock() {
            *p = Some(Denial::with_message(refused.code, refused.why));
        }
        self.armed.store(true, Ordering::Release);
        format!(
            "GET / HTTP/1.1\r\nhost: railgate\r\n{STAND_IN_HEADER}: {}\r\n\r\n",
            self.nonce
        )
        .into_bytes()
    }
}

/// Where the guard is in the byte stream.
enum State {
    /// Reading a head; its first `scanned` bytes were checked.
    Head { scanned: usize },
    /// Inside a body with this many bytes left.
    Length(u64),
    /// Inside a chunked body.
    Chunked(Chunked),
    /// After a protocol switch: no more HTTP/1 framing.
    Through,
    /// A chunked body broke its framing: reads fail.
    Broken(&'static str),
    /// A head was refused and its stand-in handed on: nothing more is read.
    Refused,
    /// The client closed its side.
    Eof,
}

/// What a read does next.
enum Next {
    /// Bytes are ready to hand on.
    Hand,
    /// Read from the socket into the buffer.
    Fill,
    /// Read from the socket straight into hyper's buffer.
    Direct,
    /// Never ready: the stand-in's answer closes the connection.
    Hold,
    /// Fail the read.
    Fail(&'static str),
    /// End of stream.
    Eof,
}

/// A client connection whose request framing is checked before hyper reads it.
pub struct Guarded<S> {
    inner: S,
    /// Bytes read and not yet handed on, from `start`.
    buf: Vec<u8>,
    start: usize,
    /// How many bytes from `start` may be handed on.
    ready: usize,
    state: State,
    max_head: usize,
    refusal: Arc<Refusal>,
}

impl<S> Guarded<S> {
    /// Guards `inner`; heads may take `max_head` bytes; refusals go to `refusal`.
    pub fn new(inner: S, max_head: usize, refusal: Arc<Refusal>) -> Self {
        Guarded {
            inner,
            buf: Vec::new(),
            start: 0,
            ready: 0,
            state: State::Head { scanned: 0 },
            max_head,
            refusal,
        }
    }

    /// The connection, without what was read and not handed on.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn after_head(&self, framing: Framing) -> State {
        if framing.upgrade {
            return State::Through;
        }
        match framing.body {
            BodyLen::None => State::Head { scanned: 0 },
            BodyLen::Length(n) => State::Length(n),
            BodyLen::Chunked => State::Chunked(Chunked::new(self.max_head)),
        }
    }

    fn refuse(&mut self, refused: Refused) -> Next {
        self.buf = self.refusal.stand_in(refused);
        self.start = 0;
        self.ready = self.buf.len();
        self.state = State::Refused;
        Next::Hand
    }

    /// Decides what the buffered bytes are (called with nothing ready).
    fn classify(&mut self) -> Next {
        let pending = &self.buf[self.start..];
        match &mut self.state {
            State::Head { scanned } => {
                let scanned = *scanned;
                if scanned == 0 {
                    match head::leading_empty_lines(pending) {
                        Err(r) => return self.refuse(r),
                        Ok(0) => {}
                        Ok(n) => {
                            self.start += 2 * n;
                            return self.classify();
                        }
                    }
                }
                match head::scan(pending, scanned, self.max_head) {
                    Scan::More { scanned } => {
                        self.state = State::Head { scanned };
                        Next::Fill
                    }
                    Scan::Refused(r) => self.refuse(r),
                    Scan::Complete { end } => match head::check(&pending[..end]) {
                        Ok(framing) => {
                            self.ready = end;
                            self.state = self.after_head(framing);
                            Next::Hand
                        }
                        Err(r) => self.refuse(r),
                    },
                }
            }
            State::Length(left) => {
                let take = (*left).min(pending.len() as u64);
                if take == 0 {
                    return Next::Fill;
                }
                *left -= take;
                self.ready = take as usize;
                if *left == 0 {
                    self.state = State::Head { scanned: 0 };
                }
                Next::Hand
            }
            State::Chunked(body) => {
                let (n, end) = body.advance(pending);
                match end {
                    Ok(true) => self.state = State::Head { scanned: 0 },
                    Ok(false) => {}
                    // The good bytes before the break are handed on first.
                    Err(why) => self.state = State::Broken(why),
                }
                self.ready = n;
                match self.state {
                    _ if n > 0 => Next::Hand,
                    State::Broken(why) => Next::Fail(why),
                    _ => Next::Fill,
                }
            }
            State::Through if pending.is_empty() => Next::Direct,
            State::Through => {
                self.ready = pending.len();
                Next::Hand
            }
            State::Broken(why) => Next::Fail(why),
            State::Refused => Next::Hold,
            State::Eof => Next::Eof,
        }
    }

    /// Hands ready bytes to `out`; frees the buffer once it is empty between messages.
    fn hand(&mut self, out: &mut ReadBuf<'_>) {
        let n = self.ready.min(out.remaining());
        out.put_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        self.ready -= n;
        if self.start == self.buf.len() {
            self.start = 0;
            if matches!(self.state, State::Head { .. } | State::Through) {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
        }
    }
}

impl<S: AsyncRead + Unpin> Guarded<S> {
    /// Reads more from the socket into the buffer; `Ok(false)` at end of stream. The read goes
    /// to a chunk on the stack and only what arrived joins the buffer: hyper polls an idle
    /// connection (to notice the client leaving), and a buffer sized for a read would be held,
    /// empty, for as long as the connection stays idle.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let buf = &mut self.buf;
        super::poll_read_chunk(&mut self.inner, cx, |got| {
            buf.extend_from_slice(got);
            !got.is_empty()
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready > 0 {
                this.hand(out);
                return Poll::Ready(Ok(()));
            }
            match this.classify() {
                Next::Hand => continue,
                Next::Direct => return Pin::new(&mut this.inner).poll_read(cx, out),
                Next::Hold => return Poll::Pending,
                Next::Fail(why) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)))
                }
                Next::Eof => return Poll::Ready(Ok(())),
                Next::Fill => {
                    if !ready!(this.fill(cx))? {
                        // What is left of an unfinished head is dropped; an unfinished body
                        // ends short and hyper reports it.
                        this.state = State::Eof;
                        this.buf = Vec::new();
                        this.start = 0;
                    }
                }
            }
        }
    }
}

write_through!(Guarded);

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
