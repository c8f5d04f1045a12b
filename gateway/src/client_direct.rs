//! The HTTP rail's bodiless requests (most of them a `GET`) spoken directly over a pooled
//! HTTP/1.1 connection: the request head goes out as the gateway wrote it (no header map in
//! between), the answer's head is read by [`crate::wire::response`] and its body is handed to
//! the client's connection as it arrives — all in the request's own task, with no connection
//! task and no channel between the two. Requests with a body go through hyper's client
//! ([`crate::client_pool`]), which reads an early answer (a `413` before a large upload is
//! sent) while the body is still going out.
//!
//! A connection goes back to the pool once its answer's body has been read to its end, when the
//! answer allows it (HTTP/1.1 without `Connection: close`, a body with a length or chunked,
//! nothing after its end). A pooled connection that has anything to read while idle is not
//! reused. A request whose reused connection ended before a byte of its answer came is sent
//! again on a new one when its method is idempotent. The trailers of a chunked answer are read
//! and not passed on.

use crate::body::BoxError;
use crate::client_pool::{key_of, Key, Pool};
use crate::outbound::UpstreamIo;
use crate::wire::response::{head_too_large, parse_head, take_length, Framing, Head};
use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode, Uri};
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Room given to each read.
const READ_ROOM: usize = 8 * 1024;

/// Gives `buf` a read's room when less than a quarter of it is left.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_ROOM / 4 {
        buf.reserve(READ_ROOM);
    }
}

/// An answer's body, read from its connection as the client's side asks for it.
pub struct DirectBody {
    io: Option<UpstreamIo>,
    /// Bytes read and not yet handed on.
    buf: BytesMut,
    framing: Framing,
    ended: bool,
    /// The connection may carry another request once the body has ended.
    keep_alive: bool,
    back: Option<(Weak<Pool>, Key)>,
}

/// Why an exchange failed, and whether no byte of an answer had come.
struct Failed {
    why: String,
    unanswered: bool,
}

/// Sends the complete request `head` for `uri` (absolute: its upstream is the pool's key) on a
/// pooled or new connection and reads the answer's head.
pub async fn exchange(
    pool: &Arc<Pool>,
    uri: &Uri,
    method: &Method,
    head: &[u8],
) -> Result<Response<DirectBody>, String> {
    let key = key_of(uri)?;
    loop {
        let (mut io, reused) = match pool.take_raw(&key) {
            Some(io) => (io, true),
            // Boxed: opening (TLS included) is a large future, and rare.
            None => (Box::pin(pool.open_raw(uri)).await?, false),
        };
        match send_and_read(&mut io, head, method == Method::HEAD).await {
            Ok((parts, framing, keep_alive, buf)) => {
                let body = DirectBody {
                    io: Some(io),
                    ended: framing == Framing::Length(0),
                    buf,
                    framing,
                    keep_alive,
                    back: Some((Arc::downgrade(pool), key)),
                };
                return Ok(Response::from_parts(parts, body));
            }
            // The upstream closed an idle connection as it was taken: the same request again.
            Err(f) if f.unanswered && reused && method.is_idempotent() => continue,
            Err(f) => return Err(f.why),
        }
    }
}

/// The answer's parts, its body's framing, whether its connection may be kept, and the bytes
/// read after its head.
type Answered = (http::response::Parts, Framing, bool, BytesMut);

/// Writes `head` and reads the answer's head, skipping interim (1xx) answers.
async fn send_and_read(
    io: &mut UpstreamIo,
    head: &[u8],
    head_request: bool,
) -> Result<Answered, Failed> {
    let sent = async {
        io.write_all(head).await?;
        io.flush().await
    };
    sent.await.map_err(|e| Failed {
        why: format!("write: {e}"),
        unanswered: true,
    })?;
    let mut buf = BytesMut::with_capacity(READ_ROOM);
    let mut fields = Vec::with_capacity(16);
    let mut read = 0;
    loop {
        fields.clear();
        let base = buf.as_ptr() as usize;
        let parsed = parse_head(&buf, head_request, |name, value| {
            // Within the buffer (httparse's values, even empty ones, are slices of it).
            let at = (value.as_ptr() as usize).wrapping_sub(base);
            fields.push((HeaderName::from_bytes(name.as_bytes()), at, value.len()));
        });
        let failed = |why: String| Failed {
            why,
            unanswered: false,
        };
        match parsed.map_err(failed)? {
            Some(h) if h.status < 200 => drop(buf.split_to(h.used)),
            Some(h) => return answered(h, buf, &mut fields).map_err(failed),
            None if head_too_large(buf.len()) => {
                return Err(failed("response head too large".into()))
            }
            None => {
                make_room(&mut buf);
                let n = io.read_buf(&mut buf).await.map_err(|e| Failed {
                    why: format!("read: {e}"),
                    unanswered: read == 0,
                })?;
                if n == 0 {
                    return Err(Failed {
                        why: "connection ended before the answer".into(),
                        unanswered: read == 0,
                    });
                }
                read += n;
            }
        }
    }
}

/// One header as the head parse found it: its name, where its value starts and its length.
type Field = (
    Result<HeaderName, http::header::InvalidHeaderName>,
    usize,
    usize,
);

/// The answer's parts from its parsed head at the start of `buf`; the header values share the
/// head's bytes (no copy). `buf` keeps what follows the head.
fn answered(h: Head, mut buf: BytesMut, fields: &mut Vec<Field>) -> Result<Answered, String> {
    let head: Bytes = buf.split_to(h.used).freeze();
    // Room for one more: the HTTP rail adds `X-Request-Id`, and a map filled to its capacity
    // would grow (both its tables reallocated) for it.
    let mut headers = HeaderMap::with_capacity(fields.len() + 1);
    for (name, at, len) in fields.drain(..) {
        let name = name.map_err(|e| format!("bad response header name: {e}"))?;
        if at.checked_add(len).is_none_or(|end| end > head.len()) {
            return Err("bad response header value".into());
        }
        let value = HeaderValue::from_maybe_shared(head.slice(at..at + len))
            .map_err(|e| format!("bad response header value: {e}"))?;
        headers.append(name, value);
    }
    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::from_u16(h.status).map_err(|e| e.to_string())?;
    *resp.headers_mut() = headers;
    let (parts, ()) = resp.into_parts();
    Ok((parts, h.framing, h.keep_alive, buf))
}

impl DirectBody {
    /// A broken body's connection is closed, never reused.
    fn broken(&mut self, e: BoxError) -> BoxError {
        self.ended = true;
        self.keep_alive = false;
        self.io = None;
        e
    }

    /// Hands the connection back to the pool when the answer left it reusable.
    fn finish(&mut self) {
        let io = self.io.take();
        if let (Some(io), Some((pool, key))) = (io, self.back.take()) {
            if self.keep_alive && self.buf.is_empty() {
                if let Some(pool) = pool.upgrade() {
                    pool.put_raw(key, io);
                }
            }
        }
    }

    /// The next data from the bytes already read: `None` when they hold none yet.
    fn data_from_buf(&mut self) -> Result<Option<Bytes>, BoxError> {
        let data = match &mut self.framing {
            Framing::Length(left) => {
                let take;
                (take, self.ended) = take_length(left, self.buf.len());
                self.buf.split_to(take).freeze()
            }
            Framing::ToEnd => self.buf.split().freeze(),
            Framing::Chunked(state) => {
                let mut out = BytesMut::new();
                let (used, outcome) = state.walk(&self.buf, |d| out.extend_from_slice(d));
                self.ended = outcome?;
                drop(self.buf.split_to(used));
                out.freeze()
            }
        };
        Ok((!data.is_empty()).then_some(data))
    }
}

impl Drop for DirectBody {
    /// An answer whose body ended without being read (an empty one) still frees its connection.
    fn drop(&mut self) {
        if self.ended {
            self.finish();
        }
    }
}

impl http_body::Body for DirectBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.ended {
                self.finish();
                return Poll::Ready(None);
            }
            if !self.buf.is_empty() {
                match self.data_from_buf() {
                    Ok(Some(data)) => {
                        if self.ended {
                            self.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Some(Err(self.broken(e)))),
                }
                if self.ended {
                    continue;
                }
            }
            let this = &mut *self;
            let Some(io) = this.io.as_mut() else {
                return Poll::Ready(None);
            };
            make_room(&mut this.buf);
            let n = match ready!(tokio_util::io::poll_read_buf(
                Pin::new(io),
                cx,
                &mut this.buf
            )) {
                Ok(n) => n,
                Err(e) => return Poll::Ready(Some(Err(this.broken(e.into())))),
            };
            if n == 0 {
                if this.framing == Framing::ToEnd {
                    this.ended = true;
                    this.keep_alive = false;
                    continue;
                }
                let e = "the connection ended inside the body".into();
                return Poll::Ready(Some(Err(this.broken(e))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
#[path = "client_direct_tests.rs"]
mod tests;
