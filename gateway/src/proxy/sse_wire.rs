//! An upstream SSE stream on its own connection, spoken directly: the request head written once,
//! the response head parsed with `httparse`, the body (chunked, with a length, or to the end of
//! the connection) decoded as it arrives. An HTTP client library would hold a request channel
//! and 8 KiB read and write buffers for the stream's whole life; here a read goes to a chunk on
//! the stack and only the decoded bytes are kept, so an idle stream holds its socket and a few
//! words of state.

use crate::outbound::UpstreamIo;
use bytes::Bytes;
use http::Request;
use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

/// How much is read from the socket at once.
const READ_CHUNK: usize = 8 * 1024;
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most response headers accepted.
const MAX_HEADERS: usize = 100;

/// How the response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Chunked(Chunked),
    Length(u64),
    ToEnd,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// In a chunk-size line: the size so far, its digits, and whether an extension began.
    Size {
        n: u64,
        digits: u8,
        ext: bool,
    },
    /// After the size line's CR.
    SizeLf {
        n: u64,
    },
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CR, then LF.
    DataCr,
    DataLf,
    /// In the trailer section, `len` bytes into a line (a line of 0 ends the body).
    Trailer {
        len: usize,
    },
    TrailerLf {
        len: usize,
    },
    /// The last chunk and its trailers were read.
    Done,
}

impl Chunked {
    const START: Chunked = Chunked::Size {
        n: 0,
        digits: 0,
        ext: false,
    };

    /// Decodes `input`, appending chunk data to `out`; `Ok(true)` once the body ended.
    fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<bool, &'static str> {
        let mut i = 0;
        while i < input.len() {
            if let Chunked::Data(left) = self {
                let take = (*left).min((input.len() - i) as u64) as usize;
                out.extend_from_slice(&input[i..i + take]);
                i += take;
                *left -= take as u64;
                if *left == 0 {
                    *self = Chunked::DataCr;
                }
                continue;
            }
            *self = self.step(input[i])?;
            i += 1;
            if *self == Chunked::Done {
                return Ok(true);
            }
        }
        Ok(*self == Chunked::Done)
    }

    /// One framing byte.
    fn step(self, b: u8) -> Result<Chunked, &'static str> {
        Ok(match (self, b) {
            (Chunked::Size { n, digits, .. }, b'\r') if digits > 0 => Chunked::SizeLf { n },
            (Chunked::Size { .. }, b'\r' | b'\n') => return Err("bad chunk size"),
            (
                Chunked::Size {
                    n,
                    digits,
                    ext: true,
                },
                _,
            ) => Chunked::Size {
                n,
                digits,
                ext: true,
            },
            (Chunked::Size { n, digits, .. }, b';' | b' ' | b'\t') if digits > 0 => Chunked::Size {
                n,
                digits,
                ext: true,
            },
            (Chunked::Size { n, digits, .. }, _) => {
                let d = (b as char).to_digit(16).ok_or("bad chunk size")?;
                if digits >= 15 {
                    return Err("chunk size too large");
                }
                Chunked::Size {
                    n: n * 16 + u64::from(d),
                    digits: digits + 1,
                    ext: false,
                }
            }
            (Chunked::SizeLf { n: 0 }, b'\n') => Chunked::Trailer { len: 0 },
            (Chunked::SizeLf { n }, b'\n') => Chunked::Data(n),
            (Chunked::DataCr, b'\r') => Chunked::DataLf,
            (Chunked::DataLf, b'\n') => Chunked::START,
            (Chunked::Trailer { len }, b'\r') => Chunked::TrailerLf { len },
            (Chunked::Trailer { len }, _) if b != b'\n' => Chunked::Trailer { len: len + 1 },
            (Chunked::TrailerLf { len: 0 }, b'\n') => Chunked::Done,
            (Chunked::TrailerLf { .. }, b'\n') => Chunked::Trailer { len: 0 },
            (Chunked::Done, _) => Chunked::Done,
            _ => return Err("bad chunked framing"),
        })
    }
}

/// A response's status and the start of its body.
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body, when the status is 200.
    pub body: Wire,
}

/// The body side of an upstream SSE response.
pub struct Wire {
    io: UpstreamIo,
    framing: Framing,
    /// Bytes read with the head that belong to the body.
    early: Vec<u8>,
    ended: bool,
}

/// Writes `req`'s head (a GET without a body) on `io`.
async fn send_head(io: &mut UpstreamIo, req: &Request<crate::body::Body>) -> io::Result<()> {
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"GET ");
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    io.write_all(&head).await?;
    io.flush().await
}

/// Reads once from `io` into a stack chunk, appending what arrived to `out`; `Ok(0)` at the end.
fn poll_read_into(
    io: &mut UpstreamIo,
    cx: &mut Context<'_>,
    out: &mut Vec<u8>,
) -> Poll<io::Result<usize>> {
    let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
    let mut rb = ReadBuf::uninit(&mut chunk);
    ready!(Pin::new(io).poll_read(cx, &mut rb))?;
    out.extend_from_slice(rb.filled());
    Poll::Ready(Ok(rb.filled().len()))
}

/// Sends `req` and reads the response head (skipping interim 1xx answers).
pub async fn exchange(
    mut io: UpstreamIo,
    req: Request<crate::body::Body>,
) -> Result<Answer, String> {
    send_head(&mut io, &req)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    loop {
        match parse_head(&buf)? {
            Some((status, _, used)) if (100..200).contains(&status) => {
                buf.drain(..used);
            }
            Some((status, framing, used)) => {
                buf.drain(..used);
                return Ok(Answer {
                    status,
                    body: Wire {
                        io,
                        framing,
                        early: buf,
                        ended: framing == Framing::Length(0),
                    },
                });
            }
            None => {
                if buf.len() > MAX_HEAD {
                    return Err("response head too large".into());
                }
                let n = poll_fn(|cx| poll_read_into(&mut io, cx, &mut buf))
                    .await
                    .map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("connection ended before the answer".into());
                }
            }
        }
    }
}

/// A complete response head at the start of `buf`: its status, its body's framing and its length.
fn parse_head(buf: &[u8]) -> Result<Option<(u16, Framing, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let used = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response head: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let mut framing = Framing::ToEnd;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let chunked = std::str::from_utf8(h.value)
                .map(|v| v.trim().to_ascii_lowercase().ends_with("chunked"))
                .unwrap_or(false);
            if !chunked {
                return Err("unsupported transfer-encoding".into());
            }
            framing = Framing::Chunked(Chunked::START);
        } else if h.name.eq_ignore_ascii_case("content-length") && framing == Framing::ToEnd {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or("bad content-length")?;
            framing = Framing::Length(n);
        }
    }
    Ok(Some((status, framing, used)))
}

impl Wire {
    /// The next piece of the body: `None` at its end, an error when the connection broke or the
    /// framing did (both end the stream like a broken connection).
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            let raw = if self.early.is_empty() {
                let mut raw = Vec::new();
                match ready!(poll_read_into(&mut self.io, cx, &mut raw)) {
                    Err(e) => return Poll::Ready(Some(Err(format!("read: {e}")))),
                    Ok(0) => return Poll::Ready(self.at_eof()),
                    Ok(_) => raw,
                }
            } else {
                std::mem::take(&mut self.early)
            };
            match self.decode(raw) {
                Ok(data) if data.is_empty() => continue,
                Ok(data) => return Poll::Ready(Some(Ok(Bytes::from(data)))),
                Err(why) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(why.into())));
                }
            }
        }
    }

    /// Decodes raw body bytes into data.
    fn decode(&mut self, raw: Vec<u8>) -> Result<Vec<u8>, &'static str> {
        match &mut self.framing {
            Framing::ToEnd => Ok(raw),
            Framing::Length(left) => {
                let mut raw = raw;
                raw.truncate((*left).min(raw.len() as u64) as usize);
                *left -= raw.len() as u64;
                self.ended = *left == 0;
                Ok(raw)
            }
            Framing::Chunked(state) => {
                let mut out = Vec::new();
                self.ended = state.decode(&raw, &mut out)?;
                Ok(out)
            }
        }
    }

    /// The connection ended: the body's end when it has no framing, an error otherwise.
    fn at_eof(&mut self) -> Option<Result<Bytes, String>> {
        self.ended = true;
        match self.framing {
            Framing::ToEnd => None,
            _ => Some(Err("the connection ended inside the body".into())),
        }
    }
}

#[cfg(test)]
#[path = "sse_wire_tests.rs"]
mod tests;
