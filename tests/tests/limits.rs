//! Capacity caps against the real binary: connections that have not authenticated (slow heads,
//! silent WebSockets) are capped per client address and in total and end at their deadlines
//! while other clients are served; a tenant's open streams are capped; every refusal is
//! `503 gateway.overloaded` (WS after the upgrade: the envelope and close 1013).

use railgate_tests::client::{
    next_response, ws_connect, ws_next, ws_next_json, ws_open, SseStream, WsEvent,
};
use railgate_tests::eventually;
use railgate_tests::stack::{full_headers, refs, token, Stack};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to the gateway from the loopback address `from` (127.0.0.0/8 is all local).
async fn connect_from(s: &Stack, from: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("addr"))
        .expect("bind source address");
    socket
        .connect(s.addr().parse().expect("addr"))
        .await
        .expect("connect")
}

/// Sends `head` (with `Connection: close`) and reads the answer to the end.
async fn exchange(mut conn: TcpStream, head: &str) -> String {
    conn.write_all(head.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out))
        .await
        .expect("answered and closed in time")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

fn get_head(path: &str, token: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nX-Tenant-Id: t_a\r\nConnection: close\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_are_capped_per_address_and_end_at_their_deadlines() {
    let s = Stack::start(
        "[limits]\nmax_unauthenticated_per_address = 20\nheader_read_timeout_s = 2\n[ws]\nhello_timeout_s = 1\n",
    );
    let th = s.thread("t_a").await;
    let tok = token("t_a", "u1", json!({}));
    // Ten slow heads and ten silent WebSockets from one address.
    let mut heads = Vec::new();
    for _ in 0..10 {
        let mut c = connect_from(&s, "127.0.0.1").await;
        c.write_all(b"GET /chat/threads/x/messages HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("partial head");
        heads.push(c);
    }
    let bearer = format!("Bearer {tok}");
    let mut sockets = Vec::new();
    for _ in 0..10 {
        let ws = ws_connect(
            &s.addr(),
            &format!("/ws/chat/{th}"),
            &[("authorization", bearer.as_str())],
        )
        .await
        .expect("upgrade");
        sockets.push(ws);
    }
    let refused = exchange(connect_from(&s, "127.0.0.1").await, &get_head("/", &tok)).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.contains("\"code\":\"gateway.overloaded\""),
        "{refused}"
    );
    // Another address is served meanwhile.
    let path = format!("/chat/threads/{th}/messages");
    let other = exchange(connect_from(&s, "127.0.0.2").await, &get_head(&path, &tok)).await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    // The silent WebSockets end at the hello deadline, the heads at the header deadline.
    for mut ws in sockets {
        let env: Value = ws_next_json(&mut ws).await;
        assert_eq!(env["error"]["code"], "auth.token_missing");
    }
    for mut c in heads {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut rest))
            .await
            .expect("the slow head is closed at its deadline")
            .expect("read");
    }
    let sample = "railgate_capacity_refusals_total{cap=\"unauthenticated_per_address\"}";
    assert!(s.metric(sample).await >= 1.0);
    eventually!(10, "the address has room again", {
        let again = exchange(connect_from(&s, "127.0.0.1").await, &get_head(&path, &tok)).await;
        again.starts_with("HTTP/1.1 200")
    });
}

/// The next answer on a kept-alive connection: status and body.
async fn answer(conn: &mut TcpStream) -> (u16, String) {
    let r = next_response(conn).await;
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// Reads until the gateway closes `conn`, which must stay open for `open_for` first.
async fn closed_after(conn: &mut TcpStream, open_for: Duration) {
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(open_for, conn.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "closed (or answered) before its deadline: {early:?}"
    );
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut byte))
        .await
        .expect("closed at its deadline")
        .unwrap_or(0);
    assert_eq!(n, 0, "the connection sent more instead of closing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connections_deadlines_hold_request_after_request() {
    let s = Stack::start("[limits]\nheader_read_timeout_s = 2\nupstream_response_timeout_s = 1\n");
    let th = s.thread("t_a").await;
    let tok = token("t_a", "u1", json!({}));
    let head = format!(
        "GET /chat/threads/{th}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nX-Tenant-Id: t_a\r\n\r\n"
    );
    let mut conn = connect_from(&s, "127.0.0.1").await;
    for _ in 0..3 {
        conn.write_all(head.as_bytes()).await.expect("write");
        assert_eq!(answer(&mut conn).await, (200, "[]".into()));
    }
    // The upstream answers after the response timeout: 504, and the connection goes on.
    s.faults(json!({"latency_ms": 2500})).await;
    conn.write_all(head.as_bytes()).await.expect("write");
    let (status, body) = answer(&mut conn).await;
    assert_eq!(status, 504, "{body}");
    let env: Value = serde_json::from_str(&body).expect("envelope");
    assert_eq!(env["error"]["code"], "upstream.timeout");
    s.faults(json!({})).await;
    conn.write_all(head.as_bytes()).await.expect("write");
    assert_eq!(answer(&mut conn).await, (200, "[]".into()));
    // An idle kept-alive connection ends at the header deadline, not before (a second of the
    // two is checked: the check only ever waits longer on a busy machine).
    closed_after(&mut conn, Duration::from_secs(1)).await;
    // So does one whose next head stops halfway.
    let mut conn = connect_from(&s, "127.0.0.1").await;
    conn.write_all(head.as_bytes()).await.expect("write");
    assert_eq!(answer(&mut conn).await, (200, "[]".into()));
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    closed_after(&mut conn, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_open_streams_are_capped_and_other_tenants_are_not() {
    let s = Stack::start("[limits]\nmax_streams_per_tenant = 2\n");
    let th = s.thread("t_a").await;
    let tb = s.thread("t_b").await;
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
    let path = format!("/sse/chat/{th}");
    let first = SseStream::open(&s.addr(), &path, &refs(&h)).await;
    let second = SseStream::open(&s.addr(), &path, &refs(&h)).await;
    assert_eq!((first.status, second.status), (200, 200));
    let third = SseStream::open(&s.addr(), &path, &refs(&h)).await;
    assert_eq!(third.status, 503);
    assert_eq!(
        third.body_json().await["error"]["code"],
        "gateway.overloaded"
    );
    // A WebSocket of the same tenant: refused after its hello, with close 1013.
    let tok = token("t_a", "u1", json!({}));
    let mut ws = ws_open(&s.addr(), &format!("/ws/chat/{th}"), &tok, "t_a", None).await;
    let env = ws_next_json(&mut ws).await;
    assert_eq!(env["error"]["code"], "gateway.overloaded");
    assert_eq!(
        ws_next(&mut ws).await,
        WsEvent::Close(1013, "gateway.overloaded".into())
    );
    // Another tenant is unaffected.
    let hb = full_headers(&token("t_b", "u2", json!({})), "t_b");
    let b = SseStream::open(&s.addr(), &format!("/sse/chat/{tb}"), &refs(&hb)).await;
    assert_eq!(b.status, 200);
    // A stream that ends gives its slot back.
    drop(first);
    eventually!(20, "the slot is freed", {
        s.publish(&th, 1).await;
        SseStream::open(&s.addr(), &path, &refs(&h)).await.status == 200
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_global_cap_get_503() {
    let s = Stack::start("[limits]\nmax_connections = 3\n");
    let tok = token("t_a", "u1", json!({}));
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(&s, "127.0.0.1").await);
    }
    let refused = exchange(connect_from(&s, "127.0.0.1").await, &get_head("/", &tok)).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too many connections"), "{refused}");
    assert_eq!(
        s.metric("railgate_capacity_refusals_total{cap=\"connections\"}")
            .await,
        1.0
    );
}
