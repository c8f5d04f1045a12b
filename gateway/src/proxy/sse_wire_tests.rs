use super::exchange;
use crate::outbound::UpstreamIo;
use crate::wire::chunked::Chunked;
use crate::wire::response::MAX_TRAILERS;
use std::future::poll_fn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::either::Either;

/// Decodes `raw` split at every position (and byte by byte), expecting `data` and the end.
fn decodes_at_every_split(raw: &[u8], data: &[u8]) {
    for cut in 0..=raw.len() {
        let (mut c, mut out) = (Chunked::new(MAX_TRAILERS), Vec::new());
        let first = c
            .decode(&raw[..cut], |d| out.extend_from_slice(d))
            .expect("first part");
        let done = first
            || c.decode(&raw[cut..], |d| out.extend_from_slice(d))
                .expect("second part");
        assert!(done, "ended, cut at {cut}");
        assert_eq!(out, data, "cut at {cut}");
    }
    let (mut c, mut out) = (Chunked::new(MAX_TRAILERS), Vec::new());
    let mut done = false;
    for b in raw {
        done = c
            .decode(std::slice::from_ref(b), |d| out.extend_from_slice(d))
            .expect("byte");
    }
    assert!(done);
    assert_eq!(out, data);
}

#[test]
fn chunked_bodies_decode_whatever_the_reads() {
    decodes_at_every_split(
        b"5\r\nhello\r\n7;name=v\r\n, world\r\nA\r\n0123456789\r\n0\r\n\r\n",
        b"hello, world0123456789",
    );
    decodes_at_every_split(b"3\r\nabc\r\n0\r\nx-trailer: 1\r\nother: 2\r\n\r\n", b"abc");
}

#[test]
fn broken_chunked_framing_is_an_error() {
    for bad in [
        &b"g\r\n"[..],
        b"\r\n",
        b"5\nhello",
        b"3\r\nabcX",
        b"3\r\nabc\rX",
        b"1234567890abcdef0\r\n",
    ] {
        let (mut c, mut out) = (Chunked::new(MAX_TRAILERS), Vec::new());
        assert!(
            c.decode(bad, |d| out.extend_from_slice(d)).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // The data before the break is handed on.
    let (mut c, mut out) = (Chunked::new(MAX_TRAILERS), Vec::new());
    assert!(c
        .decode(b"3\r\nabcX", |d| out.extend_from_slice(d))
        .is_err());
    assert_eq!(out, b"abc");
}

/// A server that answers one request with `answer` (in pieces), then closes — or, with
/// `hold_open`, keeps the connection open.
async fn serve_once(
    answer: Vec<u8>,
    hold_open: bool,
) -> (UpstreamIo, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut req = vec![0u8; 4096];
        let n = s.read(&mut req).await.expect("read");
        req.truncate(n);
        for piece in answer.chunks(5) {
            s.write_all(piece).await.expect("write");
            s.flush().await.expect("flush");
            tokio::task::yield_now().await;
        }
        if hold_open {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        }
        req
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    (Either::Left(tcp), server)
}

#[tokio::test]
async fn a_stream_is_requested_and_read_to_its_end() {
    let answer =
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        e\r\nid: 1\ndata: a\n\r\ne\r\nid: 2\ndata: b\n\r\n0\r\n\r\n"
            .to_vec();
    let (io, server) = serve_once(answer, false).await;
    let head = b"GET /sse/x?y=1 HTTP/1.1\r\nhost: up\r\nlast-event-id: 0\r\n\r\n";
    let mut got = exchange(io, head).await.expect("answer");
    assert_eq!(got.status, 200);
    let mut body = Vec::new();
    while let Some(piece) =
        poll_fn(|cx| got.body.poll_data(cx, |d| body.extend_from_slice(d))).await
    {
        piece.expect("data");
    }
    assert_eq!(body, b"id: 1\ndata: a\nid: 2\ndata: b\n");
    let sent = server.await.expect("server");
    assert_eq!(
        String::from_utf8(sent).expect("utf8"),
        "GET /sse/x?y=1 HTTP/1.1\r\nhost: up\r\nlast-event-id: 0\r\n\r\n"
    );
}

#[tokio::test]
async fn a_stream_cut_inside_a_chunk_is_an_error() {
    let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nid: 1\n".to_vec();
    let (io, _server) = serve_once(answer, false).await;
    let mut got = exchange(io, b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("answer");
    let (mut pieces, mut data) = (Vec::new(), Vec::new());
    while let Some(piece) =
        poll_fn(|cx| got.body.poll_data(cx, |d| data.extend_from_slice(d))).await
    {
        pieces.push(piece);
    }
    assert_eq!(pieces.last().map(Result::is_err), Some(true));
    // What arrived before the cut is handed on (the parser keeps an unfinished block to itself).
    assert_eq!(data, b"id: 1\n");
}

proptest::proptest! {
    /// Any data, cut into any chunks (some with extensions), read in any pieces, decodes back.
    #[test]
    fn chunked_round_trip(
        data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        sizes in proptest::collection::vec(1usize..80, 1..20),
        reads in proptest::collection::vec(1usize..40, 1..30),
        ext in proptest::prelude::any::<bool>(),
    ) {
        let mut raw = Vec::new();
        let (mut at, mut k) = (0, 0);
        while at < data.len() {
            let n = sizes[k % sizes.len()].min(data.len() - at);
            raw.extend_from_slice(format!("{n:x}{}\r\n", if ext && k % 2 == 0 { ";a=b" } else { "" }).as_bytes());
            raw.extend_from_slice(&data[at..at + n]);
            raw.extend_from_slice(b"\r\n");
            at += n;
            k += 1;
        }
        raw.extend_from_slice(b"0\r\n\r\n");
        let (mut c, mut out, mut pos, mut r, mut done) = (Chunked::new(MAX_TRAILERS), Vec::new(), 0, 0, false);
        while pos < raw.len() {
            let n = reads[r % reads.len()].min(raw.len() - pos);
            done = c.decode(&raw[pos..pos + n], |d| out.extend_from_slice(d)).expect("valid framing");
            pos += n;
            r += 1;
        }
        proptest::prop_assert!(done);
        proptest::prop_assert_eq!(out, data);
    }
}

#[tokio::test]
async fn an_empty_body_ends_at_once_while_the_connection_stays_open() {
    // Held open: the body's end must come from its length, not from the connection.
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
    let (io, server) = serve_once(answer, true).await;
    let mut got = exchange(io, b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("answer");
    let next = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        poll_fn(|cx| got.body.poll_data(cx, |_| {})),
    )
    .await
    .expect("the end, not a wait");
    assert!(next.is_none());
    server.abort();
}

#[tokio::test]
async fn a_head_over_the_limit_is_refused() {
    let mut answer = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    answer.resize(answer.len() + crate::wire::response::MAX_HEAD, b'a');
    let (io, _server) = serve_once(answer, true).await;
    let got = exchange(io, b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(got.err(), Some("response head too large".to_string()));
}
