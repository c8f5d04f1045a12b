use super::exchange;
use crate::client_pool::{Pool, Settings};
use crate::outbound::UpstreamTls;
use http::{Method, Uri};
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a test upstream does with the `n`th request (from 0) of a connection: the bytes it
/// answers with, and whether it then closes the connection; `None`: it closes the connection
/// without an answer. An answer goes out in pieces of at most 7 bytes, unless it starts with
/// `!` (dropped): then in one write.
type Script = fn(n: usize) -> Option<(Vec<u8>, bool)>;

/// A scripted upstream on a free port: counts connections, records each request head.
struct Upstream {
    uri: Uri,
    accepted: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<Vec<u8>>>>,
}

async fn upstream(script: Script) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (count, seen) = (accepted.clone(), heads.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                let (mut have, mut buf, mut n) = (Vec::new(), vec![0u8; 4096], 0);
                loop {
                    while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = have.drain(..end + 4).collect();
                        seen.lock().expect("lock").push(head);
                        let Some((answer, close)) = script(n) else {
                            return;
                        };
                        n += 1;
                        let pieces: Vec<&[u8]> = match answer.split_first() {
                            Some((b'!', whole)) => vec![whole],
                            _ => answer.chunks(7).collect(),
                        };
                        for piece in pieces {
                            if s.write_all(piece).await.is_err() {
                                return;
                            }
                            tokio::task::yield_now().await;
                        }
                        if close {
                            return;
                        }
                    }
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => have.extend_from_slice(&buf[..k]),
                    }
                }
            });
        }
    });
    let uri = format!("http://{addr}/things?x=1").parse().expect("uri");
    Upstream {
        uri,
        accepted,
        heads,
    }
}

fn pool() -> Arc<Pool> {
    Pool::new(Settings {
        tls: UpstreamTls {
            config: crate::outbound::client_config(None, &[]).expect("tls"),
            server_name: None,
        },
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        max_idle: 8,
    })
}

fn head(method: &str) -> Vec<u8> {
    format!("{method} /things?x=1 HTTP/1.1\r\nhost: up\r\nx-a: 1\r\n\r\n").into_bytes()
}

/// One exchange within 10 s: status, the headers' text, the body (or why it broke).
async fn call(
    pool: &Arc<Pool>,
    up: &Upstream,
    method: Method,
) -> Result<(u16, String, Result<Vec<u8>, String>), String> {
    let work = async {
        let resp = exchange(pool, &up.uri, &method, &head(method.as_str())).await?;
        let (parts, body) = resp.into_parts();
        let mut headers = String::new();
        for (n, v) in &parts.headers {
            headers.push_str(&format!("{n}={};", v.to_str().unwrap_or("?")));
        }
        let body = body.collect().await.map(|c| c.to_bytes().to_vec());
        Ok((
            parts.status.as_u16(),
            headers,
            body.map_err(|e| e.to_string()),
        ))
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .expect("an exchange within 10 s")
}

fn hello(_: usize) -> Option<(Vec<u8>, bool)> {
    Some((
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-B: 2\r\nX-Empty:\r\nX-Blank:   \r\n\r\nhello"
            .to_vec(),
        false,
    ))
}

#[tokio::test]
async fn answers_come_back_whole_and_one_connection_carries_them_all() {
    let (up, pool) = (upstream(hello).await, pool());
    for _ in 0..3 {
        let got = call(&pool, &up, Method::GET).await.expect("answer");
        let headers = "content-length=5;x-b=2;x-empty=;x-blank=;";
        assert_eq!(got, (200, headers.into(), Ok(b"hello".to_vec())));
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    let heads = up.heads.lock().expect("lock").clone();
    assert_eq!(heads, vec![head("GET"); 3]);
    assert_eq!(pool.idle_count(), 1);
}

#[tokio::test]
async fn chunked_bodies_are_decoded_and_interim_answers_skipped() {
    fn chunked(_: usize) -> Option<(Vec<u8>, bool)> {
        let a = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n\
            5\r\nhello\r\n6;x=y\r\n world\r\n0\r\ntrailer: 1\r\n\r\n";
        Some((a.to_vec(), false))
    }
    let (up, pool) = (upstream(chunked).await, pool());
    for _ in 0..2 {
        let got = call(&pool, &up, Method::GET).await.expect("answer");
        let want = (
            201,
            "transfer-encoding=chunked;".into(),
            Ok(b"hello world".to_vec()),
        );
        assert_eq!(got, want);
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_to_the_end_of_the_connection_is_read_and_its_connection_not_kept() {
    fn to_end(_: usize) -> Option<(Vec<u8>, bool)> {
        Some((b"HTTP/1.1 200 OK\r\n\r\nall of it".to_vec(), true))
    }
    let (up, pool) = (upstream(to_end).await, pool());
    for _ in 0..2 {
        let got = call(&pool, &up, Method::GET).await.expect("answer");
        assert_eq!(got, (200, String::new(), Ok(b"all of it".to_vec())));
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test]
async fn answers_to_head_and_204_have_no_body_and_keep_their_connection() {
    fn bodiless(n: usize) -> Option<(Vec<u8>, bool)> {
        let a: &[u8] = if n == 0 {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        } else {
            b"HTTP/1.1 204 No Content\r\n\r\n"
        };
        Some((a.to_vec(), false))
    }
    let (up, pool) = (upstream(bodiless).await, pool());
    let got = call(&pool, &up, Method::HEAD).await.expect("answer");
    assert_eq!(got, (200, "content-length=5;".into(), Ok(Vec::new())));
    let got = call(&pool, &up, Method::GET).await.expect("answer");
    assert_eq!(got, (204, String::new(), Ok(Vec::new())));
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_upstream_closes_is_not_reused() {
    // Answered, then closed without a `Connection: close`.
    fn then_closed(_: usize) -> Option<(Vec<u8>, bool)> {
        Some((
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            true,
        ))
    }
    let (up, pool) = (upstream(then_closed).await, pool());
    let first = call(&pool, &up, Method::GET).await.expect("answer");
    assert_eq!(first.2, Ok(b"hello".to_vec()));
    // The close reaches the pooled connection before the next request takes it, or the
    // request finds it closed before any answer: a GET goes out again on a new connection
    // either way.
    let second = call(&pool, &up, Method::GET).await.expect("answer");
    assert_eq!(second.2, Ok(b"hello".to_vec()));
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

/// Answers the first request of a connection, closes it unanswered at the second.
fn once_per_connection(n: usize) -> Option<(Vec<u8>, bool)> {
    (n == 0).then(|| {
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            false,
        )
    })
}

#[tokio::test]
async fn a_get_whose_reused_connection_ends_unanswered_is_sent_again() {
    let (up, pool) = (upstream(once_per_connection).await, pool());
    let first = call(&pool, &up, Method::GET).await.expect("first");
    assert_eq!(first.2, Ok(b"ok".to_vec()));
    let got = call(&pool, &up, Method::GET).await.expect("sent again");
    assert_eq!(got.2, Ok(b"ok".to_vec()));
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(up.heads.lock().expect("lock").len(), 3);
}

#[tokio::test]
async fn a_post_whose_reused_connection_ends_unanswered_is_not_sent_again() {
    let (up, pool) = (upstream(once_per_connection).await, pool());
    let first = call(&pool, &up, Method::POST).await.expect("first");
    assert_eq!(first.2, Ok(b"ok".to_vec()));
    let got = call(&pool, &up, Method::POST).await;
    assert_eq!(got, Err("connection ended before the answer".into()));
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn broken_answers_are_errors_and_their_connections_are_not_kept() {
    fn broken(n: usize) -> Option<(Vec<u8>, bool)> {
        let a: Vec<u8> = match n {
            0 => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec(),
            _ => return None,
        };
        Some((a, false))
    }
    let (up, pool) = (upstream(broken).await, pool());
    let got = call(&pool, &up, Method::GET).await;
    assert_eq!(got, Err("both content-length and transfer-encoding".into()));
    assert_eq!(pool.idle_count(), 0);

    fn too_large(_: usize) -> Option<(Vec<u8>, bool)> {
        let mut a = b"!HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        a.resize(a.len() + 70 * 1024, b'a');
        Some((a, false))
    }
    let up = upstream(too_large).await;
    assert_eq!(
        call(&pool, &up, Method::GET).await,
        Err("response head too large".into())
    );

    fn cut(_: usize) -> Option<(Vec<u8>, bool)> {
        Some((
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhell".to_vec(),
            true,
        ))
    }
    let up = upstream(cut).await;
    let got = call(&pool, &up, Method::GET).await.expect("head");
    assert_eq!(got.2, Err("the connection ended inside the body".into()));
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test]
async fn bytes_after_the_body_keep_the_connection_out_of_the_pool() {
    fn extra(_: usize) -> Option<(Vec<u8>, bool)> {
        Some((
            b"!HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA".to_vec(),
            false,
        ))
    }
    let (up, pool) = (upstream(extra).await, pool());
    for _ in 0..2 {
        let got = call(&pool, &up, Method::GET).await.expect("answer");
        assert_eq!(got.2, Ok(b"hello".to_vec()));
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

/// An answer with `data` as its body, chunked (in chunks of `sizes`, cycled) or with a length.
fn answer_of(data: &[u8], chunked: bool, sizes: &[usize]) -> Vec<u8> {
    if !chunked {
        let mut a =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", data.len()).into_bytes();
        a.extend_from_slice(data);
        return a;
    }
    let mut a = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let (mut at, mut k) = (0, 0);
    while at < data.len() {
        let n = sizes[k % sizes.len()].min(data.len() - at);
        a.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        a.extend_from_slice(&data[at..at + n]);
        a.extend_from_slice(b"\r\n");
        (at, k) = (at + n, k + 1);
    }
    a.extend_from_slice(b"0\r\n\r\n");
    a
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        cases: 32,
        rng_seed: proptest::test_runner::RngSeed::Fixed(11),
        ..proptest::test_runner::Config::default()
    })]

    /// Any body, chunked or with a length, written in any pieces: read back whole, and its
    /// connection kept for the next request.
    #[test]
    fn a_body_arrives_whole_whatever_the_pieces(
        data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
        chunked in proptest::prelude::any::<bool>(),
        sizes in proptest::collection::vec(1usize..500, 1..8),
        cuts in proptest::collection::vec(1usize..300, 1..16),
    ) {
        let answer = answer_of(&data, chunked, &sizes);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let (body, idle) = rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let uri: Uri = format!("http://{}/x", listener.local_addr().expect("addr"))
                .parse()
                .expect("uri");
            let server = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut b = [0u8; 1];
                    s.read_exact(&mut b).await.expect("request");
                    head.push(b[0]);
                }
                let (mut at, mut k) = (0, 0);
                while at < answer.len() {
                    let n = cuts[k % cuts.len()].min(answer.len() - at);
                    s.write_all(&answer[at..at + n]).await.expect("write");
                    s.flush().await.expect("flush");
                    tokio::task::yield_now().await;
                    (at, k) = (at + n, k + 1);
                }
                s
            });
            let pool = pool();
            let work = async {
                let resp = exchange(&pool, &uri, &Method::GET, &head("GET")).await.expect("answer");
                resp.into_body().collect().await.expect("body").to_bytes().to_vec()
            };
            let body = tokio::time::timeout(Duration::from_secs(10), work).await.expect("in time");
            let _held_open = server.await.expect("server");
            (body, pool.idle_count())
        });
        proptest::prop_assert_eq!(body, data);
        proptest::prop_assert_eq!(idle, 1);
    }
}
