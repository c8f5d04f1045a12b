//! Request framing at the gateway's ports, byte for byte: smuggling shapes, heads hyper would
//! have refused on its own (or normalised), pipelining around a refusal, refused switches, and
//! the admin listener. Every refusal carries the envelope and ends the connection; nothing
//! after a refused head reaches the upstream.

use railgate_tests::client::{get, raw_exchange, HttpResponse};
use railgate_tests::stack::{assert_envelope, token, Stack, ADMIN_TOKEN};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);

fn assert_refused(r: &HttpResponse, status: u16, code: &str, why: &str) {
    assert_envelope(r, status, code);
    assert_eq!(r.json()["error"]["message"], why);
    assert_eq!(r.header("connection"), Some("close"));
}

#[tokio::test]
async fn every_ambiguous_or_broken_head_is_refused_with_the_envelope() {
    let s = Stack::start("");
    let addr = s.addr();
    let th = s.thread("t_a").await;
    let tok = token("t_a", "u1", json!({}));
    let head = format!(
        "POST /chat/threads/{th}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\
         X-Tenant-Id: t_a\r\n"
    );
    let hidden = format!(
        "GET /chat/threads/{th}/smuggled HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\
         X-Tenant-Id: t_a\r\n\r\n"
    );
    let body = r#"{"text":"smuggled"}"#;
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n{hidden}", body.len());
    let n = body.len();
    let malformed = "request.malformed";
    let cases: Vec<(String, u16, &str, &str)> = vec![
        (
            format!("{head}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}"),
            400,
            malformed,
            "Content-Length together with Transfer-Encoding",
        ),
        (
            format!("{head}Content-Length: {n}\r\nContent-Length: {n}\r\n\r\n{body}{hidden}"),
            400,
            malformed,
            "Content-Length sent more than once",
        ),
        (
            format!("{head}Content-Length: 2\r\nContent-Length: 7\r\n\r\n{body}"),
            400,
            malformed,
            "Content-Length sent more than once",
        ),
        (
            format!("{head}Content-Length: {n}\r\n\r\n{body}").replace("\r\n", "\n"),
            400,
            malformed,
            "bare LF line end in the request head",
        ),
        (
            format!("{head}X-Note: a\nContent-Length: {n}\r\n\r\n{body}"),
            400,
            malformed,
            "bare LF line end in the request head",
        ),
        (
            format!("{head}X-Note: a\r\n b\r\nContent-Length: {n}\r\n\r\n{body}"),
            400,
            malformed,
            "obs-fold (a header line starting with whitespace)",
        ),
        (
            format!("{head}X-Note: a\0b\r\nContent-Length: {n}\r\n\r\n{body}"),
            400,
            malformed,
            "NUL byte in the request head",
        ),
        (
            format!("{head}Transfer-Encoding: gzip\r\n\r\n{body}"),
            400,
            malformed,
            "Transfer-Encoding other than chunked",
        ),
        (
            format!(
                "{head}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}"
            ),
            400,
            malformed,
            "Transfer-Encoding sent more than once",
        ),
        (
            format!("{head}Content-Length : {n}\r\n\r\n{body}"),
            400,
            malformed,
            "header name is not a token (whitespace before the colon?)",
        ),
        (
            "GET /chat/threads HTTP/1.1 extra\r\nHost: x\r\n\r\n".into(),
            400,
            malformed,
            "request line is not METHOD SP TARGET SP VERSION",
        ),
        (
            // (The HTTP/2 preface itself is h2c with prior knowledge: listener_tls.rs.)
            "GET /chat/threads HTTP/2.0\r\nHost: x\r\n\r\n".into(),
            400,
            malformed,
            "only HTTP/1.0 and HTTP/1.1 requests are read here",
        ),
        (
            format!(
                "GET /chat/{} HTTP/1.1\r\nHost: x\r\n\r\n",
                "a".repeat(100 * 1024)
            ),
            431,
            "request.too_large",
            "request head is over limits.max_header_bytes",
        ),
        (
            format!(
                "GET / HTTP/1.1\r\n{}\r\n",
                (0..5000)
                    .map(|i| format!("X-{i}: v\r\n"))
                    .collect::<String>()
            ),
            431,
            "request.too_large",
            "request head is over limits.max_header_bytes",
        ),
        (
            format!(
                "GET / HTTP/1.1\r\n{}\r\n",
                (0..101)
                    .map(|i| format!("X-{i}: v\r\n"))
                    .collect::<String>()
            ),
            431,
            "request.too_large",
            "more header fields than the gateway reads",
        ),
    ];
    for (bytes, status, code, why) in &cases {
        let got = raw_exchange(&addr, bytes.as_bytes(), WAIT).await;
        assert_eq!(got.responses.len(), 1, "{why}: {got:?}");
        assert_refused(&got.responses[0], *status, code, why);
        assert!(
            got.closed,
            "{why}: the connection is closed after the refusal"
        );
        assert!(got.rest.is_empty(), "{why}: nothing after the refusal");
    }
    let reqs = s.mock_requests().await;
    assert!(
        reqs.iter()
            .all(|r| r["path"] == "/chat/threads" && r["method"] == "POST"),
        "a refused request reached the upstream: {reqs:?}"
    );
    let malformed_count = cases.iter().filter(|c| c.1 == 400).count() as f64;
    assert_eq!(
        s.metric(
            "railgate_requests_total{code=\"request.malformed\",route=\"-\",transport=\"http\"}"
        )
        .await,
        malformed_count
    );
}

#[tokio::test]
async fn a_head_with_as_many_fields_as_the_gateway_reads_is_served() {
    // The guard refuses a 101st field; hyper, which parses what passes, must take 100.
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    let tok = token("t_a", "u1", json!({}));
    // Named in `Connection`, the extra fields are hop-by-hop: the upstream (whose own limit is
    // the same 100) does not get them.
    let fields: String = (0..96).map(|i| format!("X-{i}: v\r\n")).collect();
    let named: Vec<String> = (0..96).map(|i| format!("x-{i}")).collect();
    let bytes = format!(
        "GET /chat/threads/{th}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\
         X-Tenant-Id: t_a\r\nConnection: close, {}\r\n{fields}\r\n",
        named.join(", ")
    );
    let got = raw_exchange(&s.addr(), bytes.as_bytes(), WAIT).await;
    assert_eq!(got.responses.len(), 1, "{got:?}");
    assert_eq!(got.responses[0].status, 200, "{got:?}");
    assert!(got.closed);
}

#[tokio::test]
async fn a_pipelined_refusal_is_answered_after_the_earlier_requests() {
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    let tok = token("t_a", "u1", json!({}));
    let good = format!(
        "GET /chat/threads/{th}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\
         X-Tenant-Id: t_a\r\n\r\n"
    );
    let bad = "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nz";
    let got = raw_exchange(
        &s.addr(),
        format!("{good}{good}{bad}{good}").as_bytes(),
        WAIT,
    )
    .await;
    let statuses: Vec<u16> = got.responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 200, 400], "{got:?}");
    assert_eq!(got.responses[0].json(), json!([]));
    assert_refused(
        &got.responses[2],
        400,
        "request.malformed",
        "Content-Length sent more than once",
    );
    assert!(got.closed);
    let reqs = s.mock_requests().await;
    let reached = reqs
        .iter()
        .filter(|r| r["path"] == format!("/chat/threads/{th}/messages"))
        .count();
    assert_eq!(reached, 2, "the request after the refusal was never read");
}

#[tokio::test]
async fn a_switch_not_made_closes_the_connection() {
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    let tok = token("t_a", "u1", json!({}));
    let get = format!(
        "GET /chat/threads/{th}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\
         X-Tenant-Id: t_a\r\n"
    );
    // An HTTP route does not switch protocols: the answer closes the connection, so what
    // follows the head is never read as a request (it could be anything after a switch).
    let bytes = format!("{get}Upgrade: h2c\r\nConnection: Upgrade\r\n\r\n{get}\r\n");
    let got = raw_exchange(&s.addr(), bytes.as_bytes(), WAIT).await;
    assert_eq!(got.responses.len(), 1, "{got:?}");
    assert_eq!(got.responses[0].status, 200);
    assert_eq!(got.responses[0].header("connection"), Some("close"));
    assert!(got.closed);
}

#[tokio::test]
async fn admin_refusals_carry_the_envelope() {
    let s = Stack::start("");
    let admin = s.gw.admin();
    let r = get(&admin, "/admin/presence/t_a/th_1", &[]).await;
    assert_envelope(&r, 401, "auth.token_missing");
    let r = get(
        &admin,
        "/admin/presence/t_a/th_1",
        &[("authorization", "Bearer wrong")],
    )
    .await;
    assert_envelope(&r, 401, "auth.token_invalid");
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let r = get(&admin, "/admin/nothing", &[("authorization", &bearer)]).await;
    assert_envelope(&r, 404, "route.not_found");
    let r = get(&admin, "/nothing", &[]).await;
    assert_envelope(&r, 404, "route.not_found");
    let got = raw_exchange(&admin, b"GET /metrics HTTP/1.1\nHost: x\n\n", WAIT).await;
    assert_eq!(got.responses.len(), 1, "{got:?}");
    assert_refused(
        &got.responses[0],
        400,
        "request.malformed",
        "bare LF line end in the request head",
    );
    assert!(got.closed);
}

/// An HTTP/1.1 SSE stream's connection carries that stream only: after its last chunk the
/// connection closes, and a request pipelined behind the stream's `GET` is neither answered
/// nor sent upstream.
#[tokio::test]
async fn an_sse_streams_connection_closes_after_its_last_chunk_unanswered_pipelining_and_all() {
    let s = Stack::start("[auth]\nleeway_s = 0\n");
    let th = s.thread("t_a").await;
    let tok = token(
        "t_a",
        "u1",
        json!({"exp": railgate_tests::stack::now() + 2}),
    );
    let context =
        "X-Tenant-Id: t_a\r\nX-Mode: lab\r\nX-Project-Id: p_chat\r\nX-App-Id: app-chat\r\n";
    let bytes = format!(
        "GET /sse/chat/{th} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n{context}\r\n\
         GET /chat/threads/{th}/pipelined HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\
         {context}\r\n"
    );
    let got = raw_exchange(&s.addr(), bytes.as_bytes(), Duration::from_secs(15)).await;
    assert!(got.closed, "the connection closes when the stream ends");
    assert_eq!(got.responses.len(), 1, "only the stream is answered");
    let stream = &got.responses[0];
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("transfer-encoding"), Some("chunked"));
    let body = String::from_utf8_lossy(&stream.body);
    let last = body.trim_end().rsplit("\n\n").next().expect("an event");
    assert!(
        last.starts_with("event: error\n") && last.contains(r#""code":"auth.token_expired""#),
        "the stream ends with the token's end: {body}"
    );
    assert_eq!(
        got.rest, b"",
        "the last chunk ends the body, nothing follows"
    );
    let upstream = s.mock_requests().await;
    assert!(
        upstream.iter().all(|r| !r["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("/pipelined"))),
        "the pipelined request never went upstream: {upstream:?}"
    );
}
