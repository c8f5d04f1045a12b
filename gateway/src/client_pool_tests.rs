use super::{Pool, Settings};
use crate::body::{empty, Body};
use crate::outbound::UpstreamTls;
use http::Request;
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How a test upstream answers each request of a connection.
#[derive(Clone, Copy)]
enum Answer {
    /// `hello`, keep-alive.
    Hello,
    /// `hello`, then the socket closed without a `Connection: close`.
    HelloThenHangUp,
    /// A 2 MB body (more than a socket buffer), keep-alive.
    Large,
    /// 204, no body.
    NoContent,
}

/// An upstream on a free port answering every request with `answer`; counts connections.
async fn upstream(answer: Answer) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut have = Vec::new();
                loop {
                    while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                        have.drain(..end + 4);
                        let reply: Vec<u8> = match answer {
                            Answer::Hello | Answer::HelloThenHangUp => {
                                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".to_vec()
                            }
                            Answer::Large => {
                                let mut r =
                                    b"HTTP/1.1 200 OK\r\ncontent-length: 2000000\r\n\r\n".to_vec();
                                r.resize(r.len() + 2_000_000, b'x');
                                r
                            }
                            Answer::NoContent => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
                        };
                        if s.write_all(&reply).await.is_err() {
                            return;
                        }
                        if matches!(answer, Answer::HelloThenHangUp) {
                            return;
                        }
                    }
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => have.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    (addr.to_string(), accepted)
}

fn pool(idle_timeout: Duration) -> Arc<Pool> {
    Pool::new(Settings {
        tls: UpstreamTls {
            config: crate::outbound::client_config(None, &[]).expect("tls"),
            server_name: None,
        },
        connect_timeout: Duration::from_secs(5),
        idle_timeout,
        max_idle: 8,
    })
}

fn get(addr: &str) -> Request<Body> {
    Request::get(format!("http://{addr}/x"))
        .header("host", addr)
        .body(empty())
        .expect("request")
}

/// Sends a GET and reads the whole answer, within a deadline.
async fn fetch(pool: &Arc<Pool>, addr: &str) -> (u16, Vec<u8>) {
    let work = async {
        let resp = pool.send(get(addr)).await.expect("answer");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body.to_vec())
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .expect("within the deadline")
}

/// Waits until `cond` holds, failing after a deadline.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_connection_serves_request_after_request() {
    let (addr, accepted) = upstream(Answer::Hello).await;
    let pool = pool(Duration::from_secs(60));
    for _ in 0..5 {
        assert_eq!(fetch(&pool, &addr).await, (200, b"hello".to_vec()));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(pool.idle_count(), 1);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_not_used_again() {
    let (addr, accepted) = upstream(Answer::HelloThenHangUp).await;
    let pool = pool(Duration::from_secs(60));
    for n in 1..=3 {
        // Whether the close is seen before the next request or by it, the request goes out
        // again on a new connection and is answered.
        assert_eq!(fetch(&pool, &addr).await, (200, b"hello".to_vec()));
        assert_eq!(accepted.load(Ordering::SeqCst), n);
    }
}

#[tokio::test]
async fn an_answer_left_unread_keeps_its_connection_out_of_the_pool() {
    let (addr, accepted) = upstream(Answer::Large).await;
    let pool = pool(Duration::from_secs(60));
    let resp = tokio::time::timeout(Duration::from_secs(10), pool.send(get(&addr)))
        .await
        .expect("in time")
        .expect("answer");
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("in time")
        .expect("a frame")
        .expect("data");
    assert!(first.is_data());
    drop(body);
    assert_eq!(pool.idle_count(), 0, "half-read: not reusable");
    let (status, bytes) = fetch(&pool, &addr).await;
    assert_eq!((status, bytes.len()), (200, 2_000_000));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(pool.idle_count(), 1, "read to its end: back in the pool");
}

#[tokio::test]
async fn an_empty_answer_frees_its_connection_unread() {
    let (addr, accepted) = upstream(Answer::NoContent).await;
    let pool = pool(Duration::from_secs(60));
    for _ in 0..3 {
        let resp = tokio::time::timeout(Duration::from_secs(10), pool.send(get(&addr)))
            .await
            .expect("in time")
            .expect("answer");
        assert_eq!(resp.status(), 204);
        drop(resp);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (addr, accepted) = upstream(Answer::Hello).await;
    let pool = pool(Duration::from_millis(200));
    assert_eq!(fetch(&pool, &addr).await.0, 200);
    assert_eq!(pool.idle_count(), 1);
    until("the reaper", || pool.idle_count() == 0).await;
    assert_eq!(fetch(&pool, &addr).await.0, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_upstream_that_is_not_there_is_an_error_not_a_hang() {
    let free = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = free.local_addr().expect("addr").to_string();
    drop(free);
    let pool = pool(Duration::from_secs(60));
    let sent = tokio::time::timeout(Duration::from_secs(10), pool.send(get(&addr)))
        .await
        .expect("in time");
    let err = sent.err().expect("refused");
    assert!(err.starts_with("connect: "), "{err}");
}
