//! CT-11 backpressure: a consumer that pauses, one that reads one byte per second, slow consumers
//! beside fast ones. Fast clients are unaffected; slow ones are cut with `stream.slow_consumer`
//! (never silently skipped) and get everything on resume; the gateway's memory stays bounded.

use railgate_tests::chaos::{complete_events, dechunk};
use railgate_tests::client::{post_json, SseEvent, SseStream};
use railgate_tests::stack::{full_headers, refs, rss_kib, token, Stack};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str =
    "[sse]\nclient_queue_events = 16\njournal_events = 4096\njournal_bytes = 33554432\n";
/// Generous ceiling for the gateway's resident memory in these suites.
const RSS_CEILING_KIB: u64 = 256 * 1024;

async fn open(s: &Stack, th: &str, cursor: &str) -> SseStream {
    let tok = token("t_a", "u1", json!({}));
    let mut h = full_headers(&tok, "t_a");
    h.push(("last-event-id".into(), cursor.into()));
    let st = SseStream::open(&s.addr(), &format!("/sse/chat/{th}"), &refs(&h)).await;
    assert_eq!(st.status, 200);
    st
}

/// Reads `n` messages or fails.
async fn read_n(st: &mut SseStream, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.len() < n {
        let ev: SseEvent = st
            .next_event_within(Duration::from_secs(20))
            .await
            .expect("event");
        assert_ne!(ev.event, "error", "{}", ev.data);
        if ev.event == "chat_message" {
            seqs.push(ev.json()["seq"].as_u64().expect("seq"));
        }
    }
    seqs
}

/// Resumes after a cut until all `total` events arrived.
async fn recover(s: &Stack, th: &str, mut seen: Vec<u64>, total: u64) -> Vec<u64> {
    let cursor = seen
        .last()
        .map(|l| l.to_string())
        .unwrap_or_else(|| "0".into());
    let mut st = open(s, th, &cursor).await;
    seen.extend(read_n(&mut st, (total as usize) - seen.len()).await);
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_pausing_5_s_gets_everything_after_at_most_one_resume() {
    let s = Stack::start(CONFIG);
    let th = s.thread("t_a").await;
    let mut st = open(&s, &th, "0").await;
    s.publish(&th, 1).await;
    read_n(&mut st, 1).await;
    let r = post_json(
        &s.mock_addr(),
        "/_mock/publish",
        &[],
        &json!({"thread_id": th, "count": 3000, "payload_bytes": 4096, "rate_per_s": 1000}),
    )
    .await;
    assert_eq!(r.status, 202);
    // The behaviour under test: this consumer stops reading for five seconds.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (mut seen, cut) = drain_until(&mut st, 3001).await;
    seen.insert(0, 1);
    if cut {
        seen = recover(&s, &th, seen, 3001).await;
    }
    assert_eq!(seen, (1..=3001).collect::<Vec<_>>(), "cut = {cut}");
    assert!(rss_kib(s.gw.pid()) < RSS_CEILING_KIB);
}

/// Reads until `total` messages or the stream ends.
async fn drain_until(st: &mut SseStream, total: usize) -> (Vec<u64>, bool) {
    let mut seqs = Vec::new();
    while seqs.len() + 1 < total {
        match st.next_event_within(Duration::from_secs(20)).await {
            Some(ev) if ev.event == "chat_message" => {
                seqs.push(ev.json()["seq"].as_u64().expect("seq"))
            }
            Some(ev) if ev.event == "error" => {
                assert_eq!(ev.json()["error"]["code"], "stream.slow_consumer");
                return (seqs, true);
            }
            Some(_) => {}
            None => return (seqs, true),
        }
    }
    (seqs, false)
}

/// Publishes `count` events of 4 KiB each to thread `th`, as fast as the mock goes.
async fn publish(s: &Stack, th: &str, count: u64) {
    let r = post_json(
        &s.mock_addr(),
        "/_mock/publish",
        &[],
        &json!({"thread_id": th, "count": count, "payload_bytes": 4096}),
    )
    .await;
    assert_eq!(r.status, 200);
}

/// An SSE request on a raw socket with a small receive buffer (from the start of the thread).
async fn raw_stream(s: &Stack, th: &str, rcvbuf: u32) -> tokio::net::TcpStream {
    let tok = token("t_a", "u1", json!({}));
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(rcvbuf).expect("rcvbuf");
    let mut conn = socket
        .connect(s.addr().parse().expect("addr"))
        .await
        .expect("connect");
    let req = format!(
        "GET /sse/chat/{th} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nX-Tenant-Id: t_a\r\nX-Mode: lab\r\nX-Project-Id: p_chat\r\nX-App-Id: app-chat\r\nLast-Event-ID: 0\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.expect("request");
    conn
}

/// A raw 200 response's complete events, and the seqs of its chat messages.
fn stream_of(raw: &[u8]) -> (Vec<SseEvent>, Vec<u64>) {
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw[..raw.len().min(200)])
    );
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head")
        + 4;
    let events = complete_events(&dechunk(&raw[head_end..]));
    let seen = events
        .iter()
        .filter(|e| e.event == "chat_message")
        .map(|e| e.json()["seq"].as_u64().expect("seq"))
        .collect();
    (events, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_byte_per_second_reader_is_cut_then_recovers_without_loss() {
    let s = Stack::start(CONFIG);
    let th = s.thread("t_a").await;
    let mut conn = raw_stream(&s, &th, 2048).await;
    publish(&s, &th, 3000).await;
    let mut raw = Vec::new();
    let mut peak = 0;
    for _ in 0..5 {
        let mut b = [0u8; 1];
        conn.read_exact(&mut b).await.expect("a byte");
        raw.push(b[0]);
        peak = peak.max(rss_kib(s.gw.pid()));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut rest))
        .await
        .expect("the cut stream ends")
        .expect("read");
    raw.extend(rest);
    let (events, seen) = stream_of(&raw);
    let last = events.last().expect("events");
    assert_eq!(last.event, "error", "the stream ends with an error event");
    assert_eq!(last.json()["error"]["code"], "stream.slow_consumer");
    assert!(seen.len() < 3000, "it was cut before the end");
    assert_eq!(
        seen,
        (1..=seen.len() as u64).collect::<Vec<_>>(),
        "nothing skipped before the cut"
    );
    let all = recover(&s, &th, seen, 3000).await;
    assert_eq!(all, (1..=3000).collect::<Vec<_>>());
    eprintln!("gateway RSS peak during the slow read: {peak} KiB");
    assert!(peak < RSS_CEILING_KIB, "gateway RSS {peak} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_beside_fast_ones() {
    // 8 MiB queues at 2 MB/s: a fast client descheduled for seconds on a busy machine does not
    // look slow; a client that never reads overflows (16 MB are published) or, when the
    // kernel's buffers absorbed its backlog, gets everything. Memory stays bounded either way.
    const N: u64 = 4000;
    let s = Stack::start(
        "[sse]\nclient_queue_events = 4096\nclient_queue_bytes = 8388608\n\
         journal_events = 8192\njournal_bytes = 33554432\n",
    );
    let th = s.thread("t_a").await;
    let mut slow = Vec::new();
    for _ in 0..3 {
        slow.push(open(&s, &th, "0").await);
    }
    let mut fast = Vec::new();
    for _ in 0..5 {
        let mut st = open(&s, &th, "0").await;
        fast.push(tokio::spawn(
            async move { read_n(&mut st, N as usize).await },
        ));
    }
    let r = post_json(
        &s.mock_addr(),
        "/_mock/publish",
        &[],
        &json!({"thread_id": th, "count": N, "payload_bytes": 4096, "rate_per_s": 500}),
    )
    .await;
    assert_eq!(r.status, 202);
    for f in fast {
        assert_eq!(
            f.await.expect("fast client"),
            (1..=N).collect::<Vec<_>>(),
            "fast clients unaffected"
        );
    }
    let rss = rss_kib(s.gw.pid());
    eprintln!("gateway RSS with three stalled clients: {rss} KiB");
    assert!(rss < RSS_CEILING_KIB, "gateway RSS {rss} KiB");
    for mut st in slow {
        let (seen, cut) = drain_until(&mut st, N as usize + 1).await;
        assert!(cut || seen.len() as u64 == N);
        assert_eq!(seen, (1..=seen.len() as u64).collect::<Vec<_>>());
        assert_eq!(recover(&s, &th, seen, N).await, (1..=N).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_reader_is_cut_by_the_byte_bound_of_its_queue() {
    let s = Stack::start("[sse]\nclient_queue_bytes = 65536\n");
    let th = s.thread("t_a").await;
    let mut conn = raw_stream(&s, &th, 4096).await;
    // 2,000 × 4 KiB while the reader reads nothing: far more than 64 KiB plus socket buffers.
    publish(&s, &th, 2000).await;
    let slow = "railgate_slow_consumer_disconnects_total{route=\"chat-sse\",transport=\"sse\"}";
    railgate_tests::eventually!(30, "the paused reader is cut", s.metric(slow).await >= 1.0);
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut raw))
        .await
        .expect("the cut stream ends")
        .expect("read");
    let (events, seen) = stream_of(&raw);
    let last = events.last().expect("events");
    assert_eq!(last.json()["error"]["code"], "stream.slow_consumer");
    assert!(seen.len() < 2000, "cut before the end");
    assert_eq!(
        seen,
        (1..=seen.len() as u64).collect::<Vec<_>>(),
        "nothing skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_takes_nothing_is_let_go_once_the_stall_limit_passes() {
    // Queues big enough never to fill: only the stall deadline (4 × keepalive_s, at least
    // 10 s) can end this stream.
    let s = Stack::start(
        "[sse]\nkeepalive_s = 1\nclient_queue_bytes = 1073741824\nclient_queue_events = 1000000\n\
         journal_events = 100000\njournal_bytes = 1073741824\n",
    );
    let th = s.thread("t_a").await;
    let _conn = raw_stream(&s, &th, 4096).await;
    let active = "railgate_connections_active{route=\"chat-sse\",transport=\"sse\"}";
    railgate_tests::eventually!(10, "the stream is open", s.metric(active).await == 1.0);
    // 3,000 × 4 KiB while the reader reads nothing: more than both sockets' buffers hold.
    publish(&s, &th, 3000).await;
    railgate_tests::eventually!(
        60,
        "the stalled reader is let go",
        s.metric(active).await == 0.0
    );
    let slow = "railgate_slow_consumer_disconnects_total{route=\"chat-sse\",transport=\"sse\"}";
    assert_eq!(s.metric(slow).await, 0.0, "not cut by its queue's bounds");
}
