//! The client listener with TLS and HTTP/2, against the binary: ALPN `h2` and `http/1.1`, 20
//! SSE streams on one HTTP/2 connection (a browser's HTTP/1.1 limit is six per origin), the drain
//! as GOAWAY with `gateway.draining` on open streams, certificate files replaced while streams
//! stay open (a bad new pair keeps the old one), `check` on a key that does not match, and h2c
//! with prior knowledge on the plain listener.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use railgate_tests::client::bytes_until_closed;
use railgate_tests::eventually;
use railgate_tests::stack::{full_headers, token, Stack};
use railgate_tests::tls::{h2_client, tls_connect, TestCa};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// An HTTP/2 connection with prior knowledge to the stack's plain listener.
async fn h2c(s: &Stack) -> SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(s.addr())
        .await
        .expect("connect");
    h2_client(tcp).await
}

/// A certificate pair of `ca` written to `dir`: the `[tls]` table naming it, and the key's path.
fn write_pair(dir: &Path, ca: &TestCa) -> (String, String) {
    let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]);
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert).expect("cert");
    std::fs::write(&k, key).expect("key");
    let (c, k) = (c.display().to_string(), k.display().to_string());
    (
        format!("[tls]\ncert_file = \"{c}\"\nkey_file = \"{k}\"\n"),
        k,
    )
}

fn request(path: &str, headers: &[(String, String)]) -> hyper::Request<Full<Bytes>> {
    let mut b = hyper::Request::builder()
        .uri(format!("https://localhost{path}"))
        .version(http::Version::HTTP_2);
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(Full::new(Bytes::new())).expect("request")
}

async fn send(
    h2: &mut SendRequest<Full<Bytes>>,
    path: &str,
    headers: &[(String, String)],
) -> hyper::Response<Incoming> {
    h2.ready().await.expect("h2 ready");
    tokio::time::timeout(
        Duration::from_secs(10),
        h2.send_request(request(path, headers)),
    )
    .await
    .expect("answer in time")
    .expect("answer")
}

/// Reads an SSE body until `n` chat messages arrived (or an `event: error`); returns their
/// `seq`s and the error event's data, if any.
async fn sse_messages(body: &mut Incoming, n: usize) -> (Vec<u64>, Option<String>) {
    let mut buf = String::new();
    let mut seqs = Vec::new();
    while seqs.len() < n {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("an SSE frame in time");
        let Some(Ok(frame)) = frame else {
            break;
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or_default()
                .to_owned();
            if block.contains("event: error") {
                return (seqs, Some(data));
            }
            if block.contains("event: chat_message") {
                let v: serde_json::Value = serde_json::from_str(&data).expect("json");
                seqs.push(v["seq"].as_u64().expect("seq"));
            }
        }
    }
    (seqs, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_h2_and_http1_serves_every_stream_and_follows_its_certificate_files() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tmp");
    let (tls, key) = write_pair(dir.path(), &ca);
    let mut s = Stack::start(&tls);
    let th = s.thread("t_a").await;
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");

    // HTTP/1.1 over TLS.
    let (io, alpn) = tls_connect(&s.addr(), &ca.pem, &[b"http/1.1"])
        .await
        .expect("tls");
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (mut h1, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .expect("h1");
    tokio::spawn(conn);
    let mut req = request(&format!("/chat/threads/{th}/messages"), &h);
    *req.version_mut() = http::Version::HTTP_11;
    *req.uri_mut() = format!("/chat/threads/{th}/messages").parse().expect("uri");
    req.headers_mut()
        .insert("host", "localhost".parse().expect("host"));
    let r = h1.send_request(req).await.expect("h1 answer");
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, http::Version::HTTP_11)
    );

    // HTTP/2 over TLS: 20 SSE streams on one connection, every one gets every event.
    let (io, alpn) = tls_connect(&s.addr(), &ca.pem, &[b"h2", b"http/1.1"])
        .await
        .expect("tls");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let mut h2 = h2_client(io).await;
    let r = send(&mut h2, &format!("/chat/threads/{th}/messages"), &h).await;
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, http::Version::HTTP_2)
    );
    let mut streams = Vec::new();
    for _ in 0..20 {
        let r = send(&mut h2, &format!("/sse/chat/{th}"), &h).await;
        assert_eq!(r.status(), 200);
        streams.push(r.into_body());
    }
    s.publish(&th, 3).await;
    for body in &mut streams {
        assert_eq!(sse_messages(body, 3).await, (vec![1, 2, 3], None));
    }

    assert_eq!(
        s.metric("railgate_client_connections_total{protocol=\"h2\",tls=\"true\"}")
            .await,
        1.0
    );
    assert_eq!(
        s.metric("railgate_client_connections_total{protocol=\"http/1.1\",tls=\"true\"}")
            .await,
        1.0
    );
    // Requests by rail and HTTP version: one HTTP request each way, 20 SSE streams over h2.
    for (series, n) in [
        ("protocol=\"http/1.1\",transport=\"http\"", 1.0),
        ("protocol=\"h2\",transport=\"http\"", 1.0),
        ("protocol=\"h2\",transport=\"sse\"", 20.0),
        ("protocol=\"http/1.1\",transport=\"sse\"", 0.0),
    ] {
        let name = format!("railgate_requests_by_protocol_total{{{series}}}");
        let text = s.metrics().await;
        assert!(
            text.contains(&format!("{name} {n}\n")),
            "{name} {n} in:\n{text}"
        );
    }
    // New certificate files (another CA): new handshakes use them, open streams go on.
    let ca2 = TestCa::new();
    write_pair(dir.path(), &ca2);
    eventually!(10, "the new certificate is in use", {
        tls_connect(&s.addr(), &ca2.pem, &[b"h2"]).await.is_ok()
    });
    assert!(
        tls_connect(&s.addr(), &ca.pem, &[b"h2"]).await.is_err(),
        "the old one is gone"
    );
    s.publish(&th, 1).await;
    assert_eq!(sse_messages(&mut streams[0], 1).await, (vec![4], None));
    // A pair whose key does not match: refused, the current one stays.
    let (_, other_key) = ca2.issue(&["localhost"]);
    std::fs::write(&key, other_key).expect("key");
    eventually!(10, "the bad pair is refused and logged", {
        s.gw.logs()
            .iter()
            .any(|l| l.contains("TLS certificate not reloaded") && l.contains("does not match"))
    });
    assert!(tls_connect(&s.addr(), &ca2.pem, &[b"h2"]).await.is_ok());

    // The drain: open HTTP/2 streams get `gateway.draining`.
    s.gw.signal(15);
    let (_, error) = sse_messages(&mut streams[1], 10).await;
    assert!(error.expect("an error event").contains("gateway.draining"));
    assert_eq!(
        s.gw.wait_exit(Duration::from_secs(30))
            .and_then(|c| c.code()),
        Some(0)
    );
}

#[tokio::test]
async fn check_refuses_a_key_that_does_not_match_its_certificate() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tmp");
    let (tls, key) = write_pair(dir.path(), &ca);
    let (_, other) = ca.issue(&["localhost"]);
    std::fs::write(&key, other).expect("key");
    let config = dir.path().join("railgate.toml");
    std::fs::write(&config, tls).expect("config");
    let out = std::process::Command::new(railgate_tests::bins::path("railgate"))
        .args(["check", "--config", config.to_str().expect("utf8")])
        .env("AUTH_JWT_SIGNING", "x")
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the key does not match the certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_served_on_the_plain_listener() {
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
    let mut h2 = h2c(&s).await;
    let r = send(&mut h2, &format!("/chat/threads/{th}/messages"), &h).await;
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, http::Version::HTTP_2)
    );
    let mut body = send(&mut h2, &format!("/sse/chat/{th}"), &h)
        .await
        .into_body();
    s.publish(&th, 2).await;
    assert_eq!(sse_messages(&mut body, 2).await, (vec![1, 2], None));
    eventually!(10, "the access line names the protocol", {
        s.gw.logs().iter().any(|l| {
            l.contains(&format!("\"path\":\"/chat/threads/{th}/messages\""))
                && l.contains("\"http_version\":\"HTTP/2.0\"")
        })
    });
    assert_eq!(
        s.metric("railgate_client_connections_total{protocol=\"h2\",tls=\"false\"}")
            .await,
        1.0
    );
    // HTTP/1.1 on the same listener is unchanged.
    let bearer = format!("Bearer {}", token("t_a", "u1", json!({})));
    let r = railgate_tests::client::get(
        &s.addr(),
        &format!("/chat/threads/{th}/messages"),
        &[("authorization", bearer.as_str()), ("x-tenant-id", "t_a")],
    )
    .await;
    assert_eq!(r.status, 200);
}

/// Runs curl with `args`; returns its stdout (fails saying curl is needed when it is missing).
fn curl(args: &[&str]) -> String {
    let out = std::process::Command::new("curl")
        .args(args)
        .output()
        .expect("this test needs curl with HTTP/2 (apt-get install curl)");
    assert!(
        out.status.success() || out.status.code() == Some(28),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs curl built with nghttp2 (tests/run-long)"]
async fn curl_speaks_http2_over_tls_and_h2c_with_prior_knowledge() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tmp");
    let (table, _) = write_pair(dir.path(), &ca);
    let ca_file = ca.write(dir.path());
    let tls = Stack::start(&table);
    let plain = Stack::start("");
    let tok = token("t_a", "u1", json!({}));
    let auth = format!("Authorization: Bearer {tok}");
    for (s, scheme, flag) in [
        (&tls, "https", "--http2"),
        (&plain, "http", "--http2-prior-knowledge"),
    ] {
        let th = s.thread("t_a").await;
        let port = s.addr().rsplit(':').next().expect("port").to_owned();
        let base = format!("{scheme}://localhost:{port}");
        let ca_arg = ca_file.to_str().expect("utf8");
        let got = curl(&[
            "-sS",
            flag,
            "--cacert",
            ca_arg,
            "-H",
            &auth,
            "-H",
            "X-Tenant-Id: t_a",
            "-w",
            "\n%{http_version}",
            &format!("{base}/chat/threads/{th}/messages"),
        ]);
        assert_eq!(got, "[]\n2", "{scheme}");
        let sse_url = format!("{base}/sse/chat/{th}");
        let mut args = vec![
            "-sS",
            "-N",
            flag,
            "--cacert",
            ca_arg,
            "--max-time",
            "4",
            "-H",
            &auth,
            "-H",
            "X-Tenant-Id: t_a",
            "-H",
            "X-Mode: lab",
            "-H",
            "X-Project-Id: p_chat",
            "-H",
            "X-App-Id: app-chat",
            "-H",
            "Last-Event-ID: 0",
        ];
        args.push(&sse_url);
        s.publish(&th, 2).await;
        let stream = curl(&args);
        assert_eq!(
            stream.matches("event: chat_message").count(),
            2,
            "{scheme}: {stream}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_a_stalled_stream_is_cut_without_holding_up_the_others() {
    // Default queues (4 MiB): the reader has seconds of slack on a busy machine; the stalled
    // stream still overflows its window and queue (12 MB are published at 2 MB/s).
    let s = Stack::start("[sse]\njournal_events = 4096\njournal_bytes = 67108864\n");
    let th = s.thread("t_a").await;
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
    let mut h2 = h2c(&s).await;
    // Two streams on one connection: one is read, the other never.
    let mut stalled = send(&mut h2, &format!("/sse/chat/{th}"), &h)
        .await
        .into_body();
    let mut read = send(&mut h2, &format!("/sse/chat/{th}"), &h)
        .await
        .into_body();
    let r = railgate_tests::client::post_json(
        &s.mock_addr(),
        "/_mock/publish",
        &[],
        &json!({"thread_id": th, "count": 1500, "payload_bytes": 8192, "rate_per_s": 250}),
    )
    .await;
    assert_eq!(r.status, 202);
    let (seqs, error) = sse_messages(&mut read, 1500).await;
    assert_eq!(error, None);
    assert_eq!(
        seqs,
        (1..=1500).collect::<Vec<u64>>(),
        "the read stream got everything"
    );
    // The stalled one was cut (12 MB cannot wait in its window and its queue) — it says so
    // once read, after the events that fitted, none skipped.
    let (got, error) = sse_messages(&mut stalled, 1500).await;
    assert!(
        error.is_some_and(|e| e.contains("stream.slow_consumer")),
        "the stalled stream is cut"
    );
    assert_eq!(got, (1..=got.len() as u64).collect::<Vec<u64>>());
    assert!(got.len() < 1500);
}

/// Over HTTP/2 a stream whose client grants no window is cut once events have waited for it
/// the stall limit (four keep-alive intervals, at least 10 s), long before its queue would fill,
/// and what waited is dropped then: read again, it ends with `stream.slow_consumer` after the
/// few events its window took; resumed from there, it gets the rest, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_a_stream_that_takes_nothing_is_cut_at_the_stall_limit() {
    let s = Stack::start("[sse]\nkeepalive_s = 1\n");
    let th = s.thread("t_a").await;
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
    let tcp = tokio::net::TcpStream::connect(s.addr())
        .await
        .expect("connect");
    let (mut h2, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(4096)
            .handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let path = format!("/sse/chat/{th}");
    let mut stalled = send(&mut h2, &path, &h).await.into_body();
    // 150 events of 2 KiB over 15 s: 300 KiB, far below the queue's bounds.
    let r = railgate_tests::client::post_json(
        &s.mock_addr(),
        "/_mock/publish",
        &[],
        &json!({"thread_id": th, "count": 150, "payload_bytes": 2048, "rate_per_s": 10}),
    )
    .await;
    assert_eq!(r.status, 202);
    let slow = "railgate_slow_consumer_disconnects_total{route=\"chat-sse\",transport=\"sse\"}";
    eventually!(30, "the stalled stream is cut", s.metric(slow).await == 1.0);
    let (got, error) = sse_messages(&mut stalled, 150).await;
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("stream.slow_consumer")),
        "{error:?} after {got:?}"
    );
    assert!(
        !got.is_empty() && got.len() <= 8,
        "the events the window took, not the ~100 that waited: {got:?}"
    );
    assert_eq!(got, (1..=got.len() as u64).collect::<Vec<u64>>());
    let mut resume = h.clone();
    resume.push(("last-event-id".to_owned(), got.len().to_string()));
    let mut body = send(&mut h2, &path, &resume).await.into_body();
    let (rest, error) = sse_messages(&mut body, 150 - got.len()).await;
    assert_eq!(error, None);
    assert_eq!(rest, (got.len() as u64 + 1..=150).collect::<Vec<u64>>());
}

#[tokio::test]
async fn over_http2_a_ticket_opens_a_stream_once_and_its_grant_resumes_it() {
    let s = Stack::start("[auth]\ncookie_secure = false\n");
    let th = s.thread("t_a").await;
    let t = railgate_tests::stack::ticket("t_a", "u1", &th, "tid-h2");
    let mut h2 = h2c(&s).await;
    let path = format!("/sse/chat/{th}?ticket={t}");
    let first = send(&mut h2, &path, &[]).await;
    assert_eq!(first.status(), 200);
    let cookie = first
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("the resume grant")
        .to_owned();
    let mut body = first.into_body();
    s.publish(&th, 2).await;
    assert_eq!(sse_messages(&mut body, 2).await, (vec![1, 2], None));
    drop(body);
    let again = send(&mut h2, &path, &[]).await;
    assert_eq!(again.status(), 401, "the ticket is spent");
    let resumed = send(
        &mut h2,
        &path,
        &[
            ("cookie".to_owned(), cookie),
            ("last-event-id".to_owned(), "2".to_owned()),
        ],
    )
    .await;
    assert_eq!(resumed.status(), 200, "the grant resumes the stream");
    let mut body = resumed.into_body();
    s.publish(&th, 1).await;
    assert_eq!(sse_messages(&mut body, 1).await, (vec![3], None));
}

#[tokio::test]
async fn an_http2_connection_that_authenticates_nothing_is_closed_at_the_head_deadline() {
    let s = Stack::start("[limits]\nheader_read_timeout_s = 1\n");
    let tcp = tokio::net::TcpStream::connect(s.addr())
        .await
        .expect("connect");
    let (_sender, conn) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    let started = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(ended.is_ok(), "closed by the gateway");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before its deadline"
    );
    // One that authenticates a request stays.
    let th = s.thread("t_a").await;
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
    let mut h2 = h2c(&s).await;
    let r = send(&mut h2, &format!("/chat/threads/{th}/messages"), &h).await;
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = send(&mut h2, &format!("/chat/threads/{th}/messages"), &h).await;
    assert_eq!(r.status(), 200, "still open past the deadline");
}

/// TLS connections with no request begun when the drain starts are closed unanswered at once,
/// one with its handshake done and one still in it (not held to the 60 s head deadline).
#[tokio::test]
async fn drain_closes_tls_connections_that_have_not_begun_a_request_unanswered() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tmp");
    let (tls, _) = write_pair(dir.path(), &ca);
    let mut s = Stack::start(&format!(
        "drain_timeout_s = 30\n[limits]\nheader_read_timeout_s = 60\n{tls}"
    ));
    let mut silent = tokio::net::TcpStream::connect(s.addr())
        .await
        .expect("connect");
    // A later connection's handshake is answered: the listener took the silent one first.
    let (mut idle, alpn) = tls_connect(&s.addr(), &ca.pem, &[b"http/1.1"])
        .await
        .expect("tls");
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    s.gw.signal(15);
    let got = bytes_until_closed(
        &mut silent,
        "handshake cut by the drain, not at the 60 s deadline",
    )
    .await;
    assert_eq!(got, b"", "nothing sent");
    let got = bytes_until_closed(
        &mut idle,
        "closed by the drain, not at the 60 s head deadline",
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&got), "", "no answer");
    let status = s.gw.wait_exit(Duration::from_secs(10)).expect("exited");
    assert_eq!(status.code(), Some(0));
}
