use super::{Guarded, Refusal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What hyper would read from a client that sent `sent` and closed its side.
async fn read_through(sent: &[u8]) -> (Vec<u8>, std::io::Result<()>, std::sync::Arc<Refusal>) {
    let (mut client, server) = tokio::io::duplex(64);
    let refusal = Refusal::new();
    let mut g = Guarded::new(server, 1024, refusal.clone());
    let sent = sent.to_vec();
    let writer = tokio::spawn(async move {
        // Small writes: every boundary falls somewhere in the middle of something.
        for piece in sent.chunks(7) {
            client.write_all(piece).await.expect("write");
        }
        client.shutdown().await.expect("shutdown");
        client
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 5];
    let res = loop {
        let read = tokio::time::timeout(std::time::Duration::from_millis(500), g.read(&mut buf));
        match read.await {
            Err(_) => break Ok(()), // held: the stand-in was handed on
            Ok(Ok(0)) => break Ok(()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => break Err(e),
        }
    };
    drop(writer);
    (got, res, refusal)
}

#[tokio::test]
async fn valid_pipelined_messages_pass_unchanged() {
    let sent = b"\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n\
        POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
        POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
        GET /d HTTP/1.1\r\n\r\n";
    let (got, res, _) = read_through(sent).await;
    assert!(res.is_ok());
    assert_eq!(
        got,
        &sent[2..],
        "the leading empty line dropped, the rest unchanged"
    );
}

#[tokio::test]
async fn a_refused_head_after_a_good_one_becomes_the_stand_in() {
    let good = b"GET /a HTTP/1.1\r\n\r\n";
    let mut sent = good.to_vec();
    sent.extend_from_slice(b"POST /b HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /hidden HTTP/1.1\r\n\r\n");
    let (got, res, refusal) = read_through(&sent).await;
    assert!(res.is_ok());
    let stand_in = String::from_utf8(got[good.len()..].to_vec()).expect("utf8");
    assert_eq!(&got[..good.len()], good);
    assert!(stand_in.starts_with("GET / HTTP/1.1\r\nhost: railgate\r\nx-railgate-refusal: "));
    assert!(!stand_in.contains("hidden"));
    let nonce =
        stand_in.lines().nth(2).expect("nonce line")["x-railgate-refusal: ".len()..].to_owned();
    let mut forged = http::HeaderMap::new();
    forged.insert("x-railgate-refusal", "0123".parse().expect("value"));
    assert!(
        refusal.claim(&forged).is_none(),
        "a guessed nonce claims nothing"
    );
    let mut headers = http::HeaderMap::new();
    headers.insert("x-railgate-refusal", nonce.parse().expect("value"));
    let d = refusal.claim(&headers).expect("claimed");
    assert_eq!(d.code, railgate_policy::ErrorCode::Malformed);
    assert_eq!(d.message, "Content-Length together with Transfer-Encoding");
    assert!(refusal.claim(&headers).is_none(), "claimed once");
}

#[tokio::test]
async fn bytes_after_an_upgrade_head_go_through() {
    let sent = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x81\x85\n\nraw\r\n\r\n";
    let (got, res, _) = read_through(sent).await;
    assert!(res.is_ok());
    assert_eq!(got, sent);
}

#[tokio::test]
async fn a_broken_chunk_fails_the_read_after_the_good_bytes() {
    let sent = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n";
    let (got, res, _) = read_through(sent).await;
    assert_eq!(got, &sent[..sent.len() - 4]);
    assert_eq!(
        res.expect_err("fails").kind(),
        std::io::ErrorKind::InvalidData
    );
}

#[tokio::test]
async fn an_unfinished_head_at_end_of_stream_is_dropped() {
    let (got, res, _) = read_through(b"GET /a HTTP/1.1\r\nHost: x\r\n").await;
    assert!(res.is_ok());
    assert!(got.is_empty());
}

/// An idle connection (its request handed on, the client quiet while its stream runs) holds no
/// read buffer in the guard: hyper keeps polling it to notice the client leaving.
#[tokio::test]
async fn an_idle_connection_holds_no_buffer_between_requests() {
    let (mut client, server) = tokio::io::duplex(4096);
    let mut g = Guarded::new(server, 1024, Refusal::new());
    client
        .write_all(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 256];
    let n = g.read(&mut buf).await.expect("read");
    assert_eq!(&buf[..n], b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n");
    let idle = tokio::time::timeout(std::time::Duration::from_millis(50), g.read(&mut buf));
    assert!(idle.await.is_err(), "nothing more to read");
    assert_eq!(g.buf.capacity(), 0);
    client
        .write_all(b"GET /next HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let n = g.read(&mut buf).await.expect("read");
    assert_eq!(&buf[..n], b"GET /next HTTP/1.1\r\n\r\n");
}
