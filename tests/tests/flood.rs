//! Floods against the real binary: many idle connections that never authenticate (WebSockets
//! that only ping after their upgrade, heads that never finish) all end at their deadlines while an
//! authenticated client is served; and a gateway out of file descriptors backs off and logs once
//! instead of spinning, then serves again once descriptors are free.

use railgate_tests::client::get;
use railgate_tests::eventually;
use railgate_tests::stack::{token, Stack};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `addr` from the loopback address `from`.
async fn connect_from(addr: &str, from: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("addr"))
        .expect("bind source address");
    tokio::time::timeout(
        Duration::from_secs(10),
        socket.connect(addr.parse().expect("addr")),
    )
    .await
    .expect("connect in time")
    .expect("connect")
}

/// Opens one idle connection: a WebSocket upgraded and then silent (`ws`), or a head that
/// never ends. Returns it once the gateway holds it, and when it started.
async fn idle(addr: &str, from: &str, path: &str, ws: bool) -> (TcpStream, Instant) {
    let mut c = connect_from(addr, from).await;
    let started = Instant::now();
    if ws {
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        c.write_all(head.as_bytes()).await.expect("upgrade");
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
                .await
                .expect("101 in time")
                .expect("read");
            assert!(n > 0, "closed before the 101");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 101"), "{got:?}");
    } else {
        c.write_all(b"GET /chat/threads/x/messages HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("partial head");
    }
    (c, started)
}

/// An empty masked ping frame.
const PING: [u8; 6] = [0x89, 0x80, 0, 0, 0, 0];

/// How long after `started` the gateway closed `c` (reading and dropping what it sent). A
/// WebSocket pings every 700 ms meanwhile: pings do not extend the hello deadline.
async fn closed_after(mut c: TcpStream, started: Instant, ws: bool) -> Duration {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut ping = tokio::time::interval(Duration::from_millis(700));
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            read = c.read(&mut buf) => match read {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            },
            _ = ping.tick(), if ws => {
                let _ = c.write_all(&PING).await;
            }
            _ = tokio::time::sleep_until(deadline) => panic!("not closed within 30 s"),
        }
    }
}

/// `n` idle connections; with `served_within`, the authenticated client's slowest answer must
/// come within it (the load variant only: the default suite asserts no timings).
async fn flood(n: usize, served_within: Option<Duration>) {
    let hello = Duration::from_secs(3);
    let header = Duration::from_secs(4);
    let s = Stack::start(&format!(
        "[limits]\nheader_read_timeout_s = {}\n[ws]\nhello_timeout_s = {}\n",
        header.as_secs(),
        hello.as_secs()
    ));
    let th = s.thread("t_a").await;
    let tok = token("t_a", "u1", json!({}));
    let addr = s.addr();
    // Spread over source addresses: the per-address cap (512) is not what is tested here.
    let mut opened = Vec::new();
    for i in 0..n {
        let from = format!("127.0.{}.{}", 1 + i / 250, 1 + i % 250);
        let ws = i % 2 == 0;
        let (c, t) = idle(&addr, &from, &format!("/ws/chat/{th}"), ws).await;
        opened.push((c, t, ws));
    }
    let setup = opened[0].1.elapsed();
    // An authenticated client while all of them are held.
    let bearer = format!("Bearer {tok}");
    let path = format!("/chat/threads/{th}/messages");
    let mut waits = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let r = get(
            &addr,
            &path,
            &[("authorization", &bearer), ("x-tenant-id", "t_a")],
        )
        .await;
        waits.push(t.elapsed());
        assert_eq!(r.status, 200);
    }
    waits.sort();
    let still_open = opened
        .iter()
        .filter(|(_, t, ws)| t.elapsed() < if *ws { hello } else { header })
        .count();
    println!(
        "{n} idle connections opened in {setup:?}; authenticated GET while held \
         ({still_open} still before their deadline): p50 {:?}, max {:?}",
        waits[waits.len() / 2],
        waits[waits.len() - 1]
    );
    if let Some(bound) = served_within {
        assert!(waits[waits.len() - 1] < bound, "served in {waits:?}");
    }
    let closes: Vec<_> = opened
        .into_iter()
        .map(|(c, t, ws)| tokio::spawn(async move { (closed_after(c, t, ws).await, ws) }))
        .collect();
    let mut late = Duration::ZERO;
    for c in closes {
        let (after, ws) = c.await.expect("task");
        let deadline = if ws { hello } else { header };
        assert!(
            after + Duration::from_millis(50) >= deadline,
            "closed at {after:?}, before its {deadline:?} deadline"
        );
        late = late.max(after - deadline.min(after));
    }
    println!("all {n} closed at their deadlines; the latest {late:?} after it");
    assert!(late < Duration::from_secs(10), "closed {late:?} late");
    for cap in [
        "unauthenticated",
        "unauthenticated_per_address",
        "connections",
    ] {
        let sample = format!("railgate_capacity_refusals_total{{cap=\"{cap}\"}}");
        assert_eq!(
            s.metric(&sample).await,
            0.0,
            "{cap}: no cap was what ended them"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_unauthenticated_connections_end_at_their_deadlines_while_others_are_served() {
    flood(200, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load: 3,000 idle connections (tests/run-long)"]
async fn three_thousand_idle_unauthenticated_connections_end_at_their_deadlines() {
    flood(3000, Some(Duration::from_millis(100))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_gateway_backs_off_logs_once_and_recovers() {
    let s = Stack::start_with_nofile("[limits]\nheader_read_timeout_s = 60\n", 64);
    let th = s.thread("t_a").await;
    let tok = token("t_a", "u1", json!({}));
    let addr = s.addr();
    // More idle connections than the gateway has descriptors: the rest wait in the backlog.
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(connect_from(&addr, "127.0.0.1").await);
    }
    eventually!(10, "accept fails for lack of descriptors", {
        s.gw.logs().iter().any(|l| l.contains("accept failed"))
    });
    // An observation window, not a synchronisation: a spinning accept loop logs thousands of
    // lines in it; the backoff logs once per 10 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lines =
        s.gw.logs()
            .iter()
            .filter(|l| l.contains("accept failed"))
            .count();
    assert_eq!(lines, 1, "one log line per interval");
    drop(held);
    let bearer = format!("Bearer {tok}");
    let path = format!("/chat/threads/{th}/messages");
    eventually!(20, "served again once descriptors are free", {
        get(
            &addr,
            &path,
            &[("authorization", &bearer), ("x-tenant-id", "t_a")],
        )
        .await
        .status
            == 200
    });
}
