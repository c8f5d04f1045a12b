//! Minimal clients that record what the wire carried. Every wait has a timeout.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Default timeout of one request or one wait.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A complete response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

impl HttpResponse {
    /// The body as JSON (panics with the body text if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn send(addr: &str, req: Request<Full<Bytes>>) -> hyper::Response<Incoming> {
    let stream = timeout(TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect timeout")
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    timeout(TIMEOUT, sender.send_request(req))
        .await
        .expect("response timeout")
        .expect("response")
}

fn build(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body))).expect("request")
}

/// One request; reads the whole body.
pub async fn request(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> HttpResponse {
    let resp = send(addr, build(method, addr, path, headers, body)).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = timeout(TIMEOUT, resp.into_body().collect())
        .await
        .expect("body timeout")
        .expect("body")
        .to_bytes();
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// GET.
pub async fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    request("GET", addr, path, headers, Vec::new()).await
}

/// POST a JSON value.
pub async fn post_json(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> HttpResponse {
    let mut h = headers.to_vec();
    h.push(("content-type", "application/json"));
    request("POST", addr, path, &h, body.to_string().into_bytes()).await
}

/// One SSE event as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// `event:` (empty if absent).
    pub event: String,
    /// `id:` if present.
    pub id: Option<String>,
    /// Joined `data:` lines.
    pub data: String,
}

impl SseEvent {
    /// `data` as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("data is not JSON ({e}): {}", self.data))
    }
}

/// An open SSE stream. Parses LF-delimited events (what railgate and the mock write).
pub struct SseStream {
    /// Response status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    body: Option<Incoming>,
    buf: BytesMut,
    /// Every byte received, in order.
    pub raw: Vec<u8>,
    /// Comment lines seen (without the colon).
    pub comments: Vec<String>,
    /// Bytes of `buf` already searched for a blank line.
    scanned: usize,
}

impl SseStream {
    /// Opens `GET path`; the body stays open.
    pub async fn open(addr: &str, path: &str, headers: &[(&str, &str)]) -> SseStream {
        let resp = send(addr, build("GET", addr, path, headers, Vec::new())).await;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        SseStream {
            status,
            headers,
            body: Some(resp.into_body()),
            buf: BytesMut::new(),
            raw: Vec::new(),
            comments: Vec::new(),
            scanned: 0,
        }
    }

    /// The whole body of a non-stream answer (error responses).
    pub async fn body_json(mut self) -> Value {
        let body = self.body.take().expect("body");
        let bytes = timeout(TIMEOUT, body.collect())
            .await
            .expect("timeout")
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("json body")
    }

    /// The next event within `wait`; `None` if the stream ended first.
    pub async fn next_event_within(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(ev) = self.take_event() {
                return Some(ev);
            }
            let body = self.body.as_mut()?;
            let frame = tokio::time::timeout_at(deadline, body.frame())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no SSE event within {wait:?}; got so far: {:?}",
                        String::from_utf8_lossy(&self.raw)
                    )
                });
            match frame {
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        self.raw.extend_from_slice(&data);
                        self.buf.extend_from_slice(&data);
                    }
                }
                _ => {
                    self.body = None;
                    return None;
                }
            }
        }
    }

    /// Reads frames until at least `at_least` bytes arrived in total (or the stream ends).
    pub async fn read_raw(&mut self, at_least: usize, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        while self.raw.len() < at_least {
            let Some(body) = self.body.as_mut() else {
                return false;
            };
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(f))) => {
                    if let Ok(data) = f.into_data() {
                        self.raw.extend_from_slice(&data);
                        self.buf.extend_from_slice(&data);
                    }
                }
                _ => {
                    self.body = None;
                    return false;
                }
            }
        }
        true
    }

    /// The next event within [`TIMEOUT`].
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        self.next_event_within(TIMEOUT).await
    }

    /// Reads `n` events (panics if the stream ends first).
    pub async fn take(&mut self, n: usize) -> Vec<SseEvent> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next_event().await {
                Some(ev) => out.push(ev),
                None => panic!("stream ended after {} of {n} events: {out:?}", out.len()),
            }
        }
        out
    }

    /// The ids of the next `n` events (panics if the stream ends first).
    pub async fn ids(&mut self, n: usize) -> Vec<Option<String>> {
        self.take(n).await.into_iter().map(|e| e.id).collect()
    }

    fn take_event(&mut self) -> Option<SseEvent> {
        loop {
            let from = self.scanned.saturating_sub(1);
            let Some(rel) = self.buf[from..].windows(2).position(|w| w == b"\n\n") else {
                self.scanned = self.buf.len();
                return None;
            };
            let end = from + rel;
            self.scanned = 0;
            let block = self.buf.split_to(end + 2);
            let text = String::from_utf8_lossy(&block[..end]).into_owned();
            let mut ev = SseEvent::default();
            let mut data: Vec<String> = Vec::new();
            let mut any_field = false;
            for line in text.split('\n') {
                if let Some(c) = line.strip_prefix(':') {
                    self.comments.push(c.trim_start().to_owned());
                    continue;
                }
                any_field = true;
                let (name, value) = line
                    .split_once(':')
                    .map(|(n, v)| (n, v.strip_prefix(' ').unwrap_or(v)))
                    .unwrap_or((line, ""));
                match name {
                    "event" => ev.event = value.to_owned(),
                    "id" => ev.id = Some(value.to_owned()),
                    "data" => data.push(value.to_owned()),
                    _ => {}
                }
            }
            if any_field {
                ev.data = data.join("\n");
                return Some(ev);
            }
        }
    }
}

pub use crate::ws_client::{
    chat_context, ws_connect, ws_hello, ws_next, ws_next_json, ws_open, Ws, WsEvent,
};

/// What a raw exchange got back: every complete response, and whether the gateway closed the
/// connection (rather than the wait timing out).
#[derive(Debug)]
pub struct RawExchange {
    /// The responses, in order.
    pub responses: Vec<HttpResponse>,
    /// The connection ended from the gateway's side within the wait.
    pub closed: bool,
    /// Bytes after the last complete response.
    pub rest: Vec<u8>,
}

/// Writes `bytes` as they are (no framing fixed up), then reads until the gateway closes or
/// `wait` passes, and parses what came back.
pub async fn raw_exchange(addr: &str, bytes: &[u8], wait: Duration) -> RawExchange {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = timeout(TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect timeout")
        .expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut buf = Vec::new();
    let closed = matches!(timeout(wait, s.read_to_end(&mut buf)).await, Ok(Ok(_)));
    let (responses, rest) = parse_responses(&buf);
    RawExchange {
        responses,
        closed,
        rest,
    }
}

/// The next response on a kept-alive connection (nothing after it), read within 10 s.
pub async fn next_response(conn: &mut TcpStream) -> HttpResponse {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = conn.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed before a whole answer: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
            let (mut got, rest) = parse_responses(&buf);
            if let Some(r) = got.pop() {
                assert!(got.is_empty() && rest.is_empty(), "more than one answer");
                return r;
            }
        }
    };
    timeout(TIMEOUT, read).await.expect("answered in time")
}

/// Splits HTTP/1.1 responses (`Content-Length` or chunked bodies) off `buf`.
pub fn parse_responses(mut buf: &[u8]) -> (Vec<HttpResponse>, Vec<u8>) {
    let mut out = Vec::new();
    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .expect("status line");
        let mut headers = HeaderMap::new();
        for l in lines {
            let (k, v) = l.split_once(':').expect("header line");
            headers.append(
                http::HeaderName::from_bytes(k.trim().as_bytes()).expect("name"),
                v.trim().parse().expect("value"),
            );
        }
        let mut rest = &buf[end + 4..];
        let body = if let Some(n) = headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        {
            let Some(b) = rest.get(..n) else { break };
            rest = &rest[n..];
            b.to_vec()
        } else if headers
            .get("transfer-encoding")
            .is_some_and(|v| v == "chunked")
        {
            let mut body = Vec::new();
            loop {
                let Some(l) = rest.windows(2).position(|w| w == b"\r\n") else {
                    return (out, buf.to_vec());
                };
                let size = usize::from_str_radix(&String::from_utf8_lossy(&rest[..l]), 16)
                    .expect("chunk size");
                rest = &rest[l + 2..];
                if size == 0 {
                    rest = rest.get(2..).unwrap_or_default();
                    break;
                }
                body.extend_from_slice(&rest[..size]);
                rest = &rest[size + 2..];
            }
            body
        } else {
            Vec::new()
        };
        out.push(HttpResponse {
            status,
            headers,
            body: Bytes::from(body),
        });
        buf = rest;
    }
    (out, buf.to_vec())
}

/// What `io` sends before it closes, read within 10 s (a test fails if it stays open). A TLS
/// stream closed without `close_notify` counts as closed.
pub async fn bytes_until_closed<S: tokio::io::AsyncRead + Unpin>(
    io: &mut S,
    what: &str,
) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = timeout(Duration::from_secs(10), async {
        loop {
            let mut buf = [0u8; 512];
            match io.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    read.unwrap_or_else(|_| panic!("{what}: still open after 10 s"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    got
}
