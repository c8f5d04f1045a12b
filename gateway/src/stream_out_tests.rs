use super::*;
use crate::caps::{Bounds, Caps};
use http_body_util::BodyExt;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

/// A body fed by a channel, which records being dropped.
struct Fed {
    rx: mpsc::UnboundedReceiver<Bytes>,
    dropped: Arc<AtomicBool>,
}

impl HttpBody for Fed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

impl Drop for Fed {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

struct Setup {
    tx: mpsc::UnboundedSender<Bytes>,
    dropped: Arc<AtomicBool>,
    client: DuplexStream,
    caps: Arc<Caps>,
    task: tokio::task::JoinHandle<()>,
}

/// A handed-over stream on a pipe of `pipe` bytes, its connection the only one `caps` allows.
fn streaming(pipe: usize) -> Setup {
    stalling(pipe, Duration::from_secs(60))
}

/// The same, letting a client go after `stall_limit` without taking a byte.
fn stalling(pipe: usize, stall_limit: Duration) -> Setup {
    let (tx, rx) = mpsc::unbounded_channel();
    let dropped = Arc::new(AtomicBool::new(false));
    let body = Fed {
        rx,
        dropped: dropped.clone(),
    }
    .boxed();
    let caps = Caps::new(Bounds {
        connections: 1,
        unauthenticated: 1,
        unauthenticated_per_address: 1,
        streams_per_tenant: 1,
    });
    let slot = caps.connect([127, 0, 0, 1].into()).expect("a slot");
    let (client, server) = tokio::io::duplex(pipe);
    let task = tokio::spawn(Streaming::new(server, body, stall_limit, slot));
    Setup {
        tx,
        dropped,
        client,
        caps,
        task,
    }
}

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("within 10 s")
}

async fn read_exactly(client: &mut DuplexStream, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    within(client.read_exact(&mut got)).await.expect("read");
    got
}

#[test]
fn a_chunk_is_framed_with_its_size_in_hex() {
    let framed = |len: usize| {
        let out = Out::chunk(Bytes::from(vec![b'x'; len]));
        let (slices, n) = out.slices();
        let mut all = Vec::new();
        for s in &slices[..n] {
            all.extend_from_slice(s);
        }
        all
    };
    assert_eq!(framed(1), b"1\r\nx\r\n");
    assert_eq!(&framed(10)[..4], b"a\r\nx");
    assert_eq!(&framed(16)[..4], b"10\r\n");
    assert_eq!(&framed(4096)[..6], b"1000\r\n");
    assert_eq!(&framed(65_535)[..6], b"ffff\r\n");
    assert_eq!(framed(65_535).len(), 6 + 65_535 + 2);
    let last = Out::chunk(Bytes::new());
    let (slices, n) = last.slices();
    assert_eq!(n, 2);
    assert_eq!((&*slices[0], &*slices[1]), (&b"0\r\n"[..], &b"\r\n"[..]));
}

#[test]
fn a_size_line_is_the_size_in_hex_as_format_writes_it() {
    let sizes = (0..20).map(|s| 1usize << s).flat_map(|p| [p - 1, p, p + 1]);
    for len in sizes.chain([0, 255, 4096, 65_535, usize::MAX]) {
        let (line, n) = size_line(len);
        assert_eq!(&line[..n], format!("{len:x}\r\n").as_bytes(), "{len}");
    }
}

#[test]
fn what_is_left_of_a_chunk_skips_what_was_written() {
    let mut out = Out::chunk(Bytes::from_static(b"abcdef"));
    out.written = 4;
    let (slices, n) = out.slices();
    assert_eq!(n, 2);
    assert_eq!((&*slices[0], &*slices[1]), (&b"bcdef"[..], &b"\r\n"[..]));
    out.written = 10;
    let (slices, n) = out.slices();
    assert_eq!((n, &*slices[0]), (1, &b"\n"[..]));
    assert!(!out.done());
    out.written = 11;
    assert!(out.done());
}

#[tokio::test]
async fn a_stream_is_written_as_chunks_then_its_last_chunk_then_closed() {
    // A 3-byte pipe: every chunk goes out in several partial writes.
    let mut s = streaming(3);
    s.tx.send(Bytes::from_static(b"ab")).expect("send");
    s.tx.send(Bytes::new()).expect("send");
    s.tx.send(Bytes::from_static(b"data: 1\n\n")).expect("send");
    drop(s.tx);
    let mut all = Vec::new();
    within(s.client.read_to_end(&mut all)).await.expect("read");
    assert_eq!(all, b"2\r\nab\r\n9\r\ndata: 1\n\n\r\n0\r\n\r\n");
    within(s.task).await.expect("the stream ends");
    assert!(s.dropped.load(Ordering::SeqCst));
    s.caps
        .connect([127, 0, 0, 1].into())
        .expect("the connection's slot was given back");
}

#[tokio::test]
async fn a_client_that_leaves_ends_the_stream_and_drops_its_body() {
    let mut s = streaming(1024);
    s.tx.send(Bytes::from_static(b"a")).expect("send");
    assert_eq!(read_exactly(&mut s.client, 6).await, b"1\r\na\r\n");
    drop(s.client);
    within(s.task).await.expect("the stream ends");
    assert!(s.dropped.load(Ordering::SeqCst), "the body was dropped");
    assert!(s.tx.send(Bytes::from_static(b"b")).is_err());
}

#[tokio::test]
async fn bytes_after_the_request_are_dropped_up_to_a_limit_then_the_connection_closes() {
    let mut s = streaming(256 * 1024);
    s.client.write_all(&[b'x'; 1000]).await.expect("write");
    s.tx.send(Bytes::from_static(b"a")).expect("send");
    assert_eq!(read_exactly(&mut s.client, 6).await, b"1\r\na\r\n");
    assert!(!s.task.is_finished());
    s.client
        .write_all(&vec![b'x'; MAX_AFTER - 1000])
        .await
        .expect("write");
    s.tx.send(Bytes::from_static(b"b")).expect("send");
    assert_eq!(
        read_exactly(&mut s.client, 6).await,
        b"1\r\nb\r\n",
        "up to the limit, the stream goes on"
    );
    s.client.write_all(b"y").await.expect("write");
    within(s.task)
        .await
        .expect("past the limit, the stream ends");
    let mut rest = Vec::new();
    within(s.client.read_to_end(&mut rest)).await.expect("read");
    assert_eq!(rest, b"", "closed without a last chunk");
    assert!(s.dropped.load(Ordering::SeqCst));
}

fn marked(body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    resp.extensions_mut().insert(Streams);
    resp
}

#[tokio::test]
async fn only_a_marked_response_is_taken_and_only_one_per_connection() {
    let h = Handover::new();
    let plain = h.take(Response::new(crate::body::full("x")));
    assert!(h.body().is_none(), "an unmarked response keeps its body");
    let got = plain.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&got[..], b"x");

    let first = h.take(marked(crate::body::full("first")));
    assert!(first.extensions().get::<Streams>().is_none());
    let second = h.take(marked(crate::body::full("second")));
    let got = second.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&got[..], b"second", "a second stream stays hyper's");
    let kept = h.body().expect("the first body is kept");
    let got = kept.collect().await.expect("body").to_bytes();
    assert_eq!(&got[..], b"first");
    drop(first);
}

#[tokio::test]
async fn the_head_counts_as_sent_after_the_stand_in_was_polled_and_the_socket_flushed() {
    let h = Handover::new();
    let (_client, server) = tokio::io::duplex(1024);
    let mut io = Watched::new(server, h.clone());
    io.flush().await.expect("flush");
    let mut resp = h.take(marked(crate::body::full("x")));
    io.flush().await.expect("flush");
    assert!(
        !h.head_sent(),
        "hyper has not polled the stand-in: no head queued yet"
    );
    let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(resp.body_mut()).poll_frame(cx)));
    assert!(polled.await.is_pending(), "the stand-in never yields");
    assert!(!h.head_sent(), "queued, not flushed");
    io.flush().await.expect("flush");
    assert!(h.head_sent());
}

#[test]
fn only_a_get_in_http_1_1_is_eligible() {
    let req = |method: Method, version: Version| {
        Request::builder()
            .method(method)
            .version(version)
            .body(())
            .expect("request")
    };
    assert!(Handover::eligible(&req(Method::GET, Version::HTTP_11)));
    assert!(!Handover::eligible(&req(Method::HEAD, Version::HTTP_11)));
    assert!(!Handover::eligible(&req(Method::GET, Version::HTTP_10)));
    assert!(!Handover::eligible(&req(Method::GET, Version::HTTP_2)));
}

#[tokio::test]
async fn a_client_that_takes_nothing_while_bytes_wait_is_let_go() {
    let mut s = stalling(64, Duration::from_millis(300));
    for _ in 0..4 {
        s.tx.send(Bytes::from(vec![b'x'; 100])).expect("send");
    }
    within(s.task).await.expect("the stalled stream ends");
    assert!(s.dropped.load(Ordering::SeqCst), "its body was dropped");
    let mut got = Vec::new();
    within(s.client.read_to_end(&mut got)).await.expect("read");
    assert_eq!(&got[..6], b"64\r\nxx", "what the pipe held, then the close");
    assert!(got.len() < 4 * 106, "not every chunk went out");
}

#[tokio::test]
async fn a_client_that_keeps_taking_bytes_is_not_stalled() {
    let mut s = stalling(64, Duration::from_secs(2));
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let _ = s.client.read_to_end(&mut got).await;
        got
    });
    for _ in 0..10 {
        s.tx.send(Bytes::from(vec![b'x'; 100])).expect("send");
    }
    drop(s.tx);
    within(s.task).await.expect("the stream ends with its body");
    let got = within(reader).await.expect("reader");
    assert_eq!(
        got.len(),
        10 * (4 + 100 + 2) + 5,
        "every chunk and the last one"
    );
    assert!(got.ends_with(b"\r\n0\r\n\r\n"));
}

#[test]
fn the_stall_limit_is_four_keep_alive_intervals_and_at_least_ten_seconds() {
    assert_eq!(
        stall_limit(Duration::from_secs(15)),
        Duration::from_secs(60)
    );
    assert_eq!(stall_limit(Duration::from_secs(1)), Duration::from_secs(10));
    assert_eq!(stall_limit(Duration::ZERO), Duration::from_secs(10));
}
