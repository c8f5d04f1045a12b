//! railgate in front of a backend nobody here wrote (starlette + sse-starlette + uvicorn's
//! `websockets`, `tests/peers/backend.py`): opaque and non-monotonic event ids, CRLF, `retry`,
//! comments, multi-line and non-JSON data, and a durable log that survives `kill -9`.

use futures_util::SinkExt;
use railgate_tests::client::{
    get, post_json, ws_next, ws_next_json, ws_open, SseEvent, SseStream, Ws, WsEvent,
};
use railgate_tests::eventually;
use railgate_tests::peer::{python, PeerOptions, PeerStack};
use railgate_tests::process::Proc;
use railgate_tests::stack::{assert_envelope, full_headers, refs, token};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The id sequence a hex-id backend produced in the field.
const FIELD_IDS: &str = "a3f9c1,905512,b7e2d0,118734,c0ffee,000042,7,ffe001";

async fn sse(p: &PeerStack, thread: &str) -> SseStream {
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
    let s = SseStream::open(&p.stack.addr(), &format!("/sse/chat/{thread}"), &refs(&h)).await;
    assert_eq!(s.status, 200);
    s
}

async fn ws(p: &PeerStack, thread: &str) -> Ws {
    let tok = token("t_a", "u1", json!({}));
    ws_open(
        &p.stack.addr(),
        &format!("/ws/chat/{thread}"),
        &tok,
        "t_a",
        None,
    )
    .await
}

/// The next backend event on a WebSocket (presence messages skipped).
async fn ws_event(ws: &mut Ws) -> Value {
    loop {
        let v = ws_next_json(ws).await;
        if v["type"] != "presence" {
            return v;
        }
    }
}

/// The next `n` dispatched events (a block with no data, such as the backend's opening `retry`,
/// dispatches nothing in an EventSource).
async fn take(stream: &mut SseStream, n: usize) -> Vec<SseEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        let ev = stream.next_event().await.expect("stream open");
        if !ev.data.is_empty() {
            out.push(ev);
        }
    }
    out
}

fn ids(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.id.clone().unwrap_or_default())
        .collect()
}

async fn ws_ids(ws: &mut Ws, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let v = ws_event(ws).await;
        assert_eq!(v["routing"]["tenant_id"], "t_a", "stamped: {v}");
        out.push(v["id"].as_str().expect("id").to_owned());
    }
    out
}

#[tokio::test]
async fn every_event_of_a_stream_that_never_reconnected_arrives_on_sse_and_ws() {
    let p = PeerStack::start(PeerOptions::ids(&format!("list:{FIELD_IDS}")), "");
    let thread = p.thread("t_a").await;
    let mut stream = sse(&p, &thread).await;
    let mut socket = ws(&p, &thread).await;
    let published = p.publish(&thread, 8).await;
    assert_eq!(published.join(","), FIELD_IDS);
    let got = take(&mut stream, 8).await;
    assert_eq!(ids(&got), published, "SSE");
    assert_eq!(got[6].json()["text"], "message 7");
    assert_eq!(ws_ids(&mut socket, 8).await, published, "WS");
    // Nothing was counted as a duplicate.
    assert_eq!(
        p.stack
            .metric("railgate_events_deduplicated_total{rail=\"sse\",route=\"chat-sse\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn a_kill_9_of_the_backend_loses_and_repeats_nothing_whatever_the_id_style() {
    // The last: numbers that rise for the first five events and then fall (as random 64-bit
    // ids rise five times in a row once in 120 runs).
    for style in [
        "hex",
        "ulid",
        "random64",
        "decreasing",
        "numeric",
        "list:100,200,300,400,500,7,8,9,10,11,12",
    ] {
        let mut p = PeerStack::start(PeerOptions::ids(style), "");
        let thread = p.thread("t_a").await;
        let mut stream = sse(&p, &thread).await;
        let mut socket = ws(&p, &thread).await;
        let mut published = p.publish(&thread, 5).await;
        assert_eq!(
            ids(&take(&mut stream, 5).await),
            published,
            "{style} SSE before"
        );
        assert_eq!(ws_ids(&mut socket, 5).await, published, "{style} WS before");
        p.crash_and_restart_backend();
        let after = p.publish(&thread, 5).await;
        let sentinel = p.publish(&thread, 1).await;
        published.extend(after.iter().cloned());
        // The next events are exactly the new ones, then the sentinel: nothing lost, nothing twice.
        let mut want = after.clone();
        want.extend(sentinel.iter().cloned());
        assert_eq!(
            ids(&take(&mut stream, 6).await),
            want,
            "{style} SSE after kill -9"
        );
        assert_eq!(
            ws_ids(&mut socket, 6).await,
            want,
            "{style} WS after kill -9"
        );
    }
}

#[tokio::test]
async fn crlf_retry_comments_multiline_and_non_json_data_pass_through() {
    let p = PeerStack::start(
        PeerOptions {
            crlf: true,
            ..PeerOptions::ids("hex")
        },
        "",
    );
    let thread = p.thread("t_a").await;
    let mut stream = sse(&p, &thread).await;
    let data = [
        "plain text",
        "line one\nline two",
        "{\"text\":\"json\"}",
        "[1,2]",
    ];
    let published = p.publish_data(&thread, &data).await;
    let got = take(&mut stream, 4).await;
    assert_eq!(ids(&got), published);
    assert_eq!(got[0].data, "plain text");
    assert_eq!(got[1].data, "line one\nline two");
    assert_eq!(got[2].json()["text"], "json");
    assert_eq!(
        got[2].json()["routing"]["tenant_id"],
        "t_a",
        "JSON objects are stamped"
    );
    assert_eq!(got[3].data, "[1,2]");
    assert!(got.iter().all(|e| e.event == "message"));
    let raw = String::from_utf8_lossy(&stream.raw);
    assert!(raw.contains("retry: 1000\n"), "retry passes through: {raw}");
    assert!(!raw.contains('\r'), "railgate writes LF line ends: {raw:?}");
}

#[tokio::test]
async fn a_backend_echoing_another_tenants_thread_cannot_hand_it_over() {
    let p = PeerStack::start(PeerOptions::ids("numeric"), "");
    let victim = p.thread("t_a").await;
    let attacker = format!("Bearer {}", token("t_b", "u2", json!({})));
    let h = [("authorization", attacker.as_str()), ("x-tenant-id", "t_b")];
    let r = post_json(&p.stack.addr(), "/chat/threads", &h, &json!({"id": victim})).await;
    assert_envelope(&r, 403, "chat.thread_forbidden");
    assert_eq!(
        p.stack
            .metric("railgate_isolation_violations_total{reason=\"thread_takeover\",route=\"chat-create\"}")
            .await,
        1.0
    );
    // The thread is still t_a's: t_b cannot read it, t_a can.
    let as_b = get(
        &p.stack.addr(),
        &format!("/chat/threads/{victim}/messages"),
        &h,
    )
    .await;
    assert_envelope(&as_b, 403, "chat.thread_forbidden");
    let owner = format!("Bearer {}", token("t_a", "u1", json!({})));
    let ha = [("authorization", owner.as_str()), ("x-tenant-id", "t_a")];
    let as_a = get(
        &p.stack.addr(),
        &format!("/chat/threads/{victim}/messages"),
        &ha,
    )
    .await;
    assert_eq!(as_a.status, 200);
    // A thread the backend really creates for t_b is learned as t_b's.
    let r = post_json(
        &p.stack.addr(),
        "/chat/threads",
        &h,
        &json!({"title": "mine"}),
    )
    .await;
    assert_eq!(r.status, 201);
    let mine = r.json()["id"].as_str().expect("id").to_owned();
    let as_b = get(
        &p.stack.addr(),
        &format!("/chat/threads/{mine}/messages"),
        &h,
    )
    .await;
    assert_eq!(as_b.status, 200);
}

#[tokio::test]
async fn encoded_dot_segments_never_reach_the_backend() {
    let p = PeerStack::start(PeerOptions::ids("numeric"), "");
    let own = p.thread("t_a").await;
    let other = p.thread("t_b").await;
    let bearer = format!("Bearer {}", token("t_a", "u1", json!({})));
    let h = [("authorization", bearer.as_str()), ("x-tenant-id", "t_a")];
    for tail in [
        format!("%2e%2e/{other}/messages"),
        format!("..%2F{other}/messages"),
        format!("%2F..%2F{other}/messages"),
        format!("..;/{other}/messages"),
        format!("%252e%252e/{other}/messages"),
        format!("..%5C{other}/messages"),
    ] {
        let path = format!("/chat/threads/{own}/{tail}");
        let r = get(&p.stack.addr(), &path, &h).await;
        assert_envelope(&r, 400, "request.path_invalid");
    }
    let ok = get(
        &p.stack.addr(),
        &format!("/chat/threads/{own}/messages"),
        &h,
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["thread_id"], own.as_str());
}

/// A GET's answer through the gateway: 200 naming `thread`; the port of the backend's connection.
async fn port_of_answer(addr: String, path: String, h: &[(&str, &str)], thread: &str) -> u64 {
    let r = get(&addr, &path, h).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(body["thread_id"], thread);
    body["peer_port"]
        .as_u64()
        .expect("the backend names the connection's port")
}

/// Plain requests through the gateway to uvicorn: a run of them shares one upstream connection,
/// an answer streamed in chunks (h11's encoder) arrives whole, and once uvicorn closes an idle
/// connection (its keep-alive ends) the next request still gets its answer, on a new one.
#[tokio::test]
async fn plain_requests_share_a_connection_until_the_backend_closes_it() {
    const KEEP_ALIVE_S: u32 = 2;
    let opts = PeerOptions {
        keep_alive_s: KEEP_ALIVE_S,
        ..PeerOptions::ids("numeric")
    };
    let p = PeerStack::start(opts, "");
    let own = p.thread("t_a").await;
    let bearer = format!("Bearer {}", token("t_a", "u1", json!({})));
    let h = [("authorization", bearer.as_str()), ("x-tenant-id", "t_a")];
    let path = format!("/chat/threads/{own}/messages");
    let answer = |path: String| port_of_answer(p.stack.addr(), path, &h, &own);
    let mut ports = Vec::new();
    for _ in 0..5 {
        ports.push(answer(path.clone()).await);
    }
    ports.push(answer(format!("{path}?chunks=4")).await);
    assert!(
        ports.iter().all(|&p| p == ports[0]),
        "one connection: {ports:?}"
    );
    // Idle longer than the keep-alive, until uvicorn has closed the connection (a bounded wait
    // for the close, which nothing outside the backend shows): every request is answered.
    let mut port = ports[0];
    for _ in 0..5 {
        let idle = std::time::Duration::from_secs(u64::from(KEEP_ALIVE_S) + 1);
        tokio::time::sleep(idle).await;
        port = answer(path.clone()).await;
        if port != ports[0] {
            break;
        }
    }
    assert_ne!(
        port, ports[0],
        "uvicorn closed the idle connection; a new one was opened"
    );
}

#[tokio::test]
async fn json_that_is_not_strict_is_dropped_going_down() {
    let p = PeerStack::start(PeerOptions::ids("numeric"), "");
    let thread = p.thread("t_a").await;
    let mut stream = sse(&p, &thread).await;
    let mut socket = ws(&p, &thread).await;
    let hostile = [
        r#"{"routing":{"tenant_id":"t_b"},"x":NaN}"#,
        r#"{"\ud800":1,"routing":{"tenant_id":"t_b"}}"#,
        r#"{"x":-Infinity,"routing":{"tenant_id":"t_b"}}"#,
    ];
    p.publish_raw(&thread, &hostile).await;
    let good = p.publish_raw(&thread, &[r#"{"text":"fine"}"#]).await;
    let got = take(&mut stream, 1).await;
    assert_eq!(ids(&got), good, "SSE: only the strict event");
    assert_eq!(got[0].json()["routing"]["tenant_id"], "t_a");
    let v = ws_event(&mut socket).await;
    assert_eq!(v["text"], "fine", "WS: only the strict message: {v}");
    assert_eq!(v["routing"]["tenant_id"], "t_a");
    for route in ["chat-sse", "chat-ws"] {
        let sample = format!(
            "railgate_isolation_violations_total{{reason=\"not_strict_json\",route=\"{route}\"}}"
        );
        assert_eq!(p.stack.metric(&sample).await, 3.0, "{route}");
    }
}

#[tokio::test]
async fn a_websocket_client_speaks_only_for_its_own_tenant() {
    let p = PeerStack::start(PeerOptions::ids("numeric"), "");
    let thread = p.thread("t_a").await;
    let mut socket = ws(&p, &thread).await;
    let forged = json!({"type": "message", "text": "hi",
        "routing": {"tenant_id": "t_b"}, "context": {"tenant_id": "t_b", "user_id": "u9"}});
    socket
        .send(Message::text(forged.to_string()))
        .await
        .expect("send");
    let echoed = ws_event(&mut socket).await;
    let received: Value =
        serde_json::from_str(echoed["data"].as_str().expect("data")).expect("json");
    assert_eq!(received["text"], "hi");
    assert_eq!(received["routing"]["tenant_id"], "t_a", "{received}");
    assert_eq!(received["context"]["tenant_id"], "t_a", "{received}");
    assert_eq!(received["context"]["user_id"], "u1", "{received}");
    // Not strict JSON going up: refused, never delivered.
    socket
        .send(Message::text(r#"{"routing":{"tenant_id":"t_b"},"x":NaN}"#))
        .await
        .expect("send");
    expect_refusal(&mut socket, "request.header_invalid", 4003).await;
    // A second hello: refused.
    let mut again = ws(&p, &thread).await;
    let hello = json!({"type": "hello", "context": {"tenant_id": "t_b"}});
    again
        .send(Message::text(hello.to_string()))
        .await
        .expect("send");
    expect_refusal(&mut again, "request.header_invalid", 4003).await;
    // Binary: refused by default (close 1003).
    let mut binary = ws(&p, &thread).await;
    binary
        .send(Message::binary(
            b"{\"routing\":{\"tenant_id\":\"t_b\"}}".to_vec(),
        ))
        .await
        .expect("send");
    loop {
        match ws_next(&mut binary).await {
            WsEvent::Close(code, _) => {
                assert_eq!(code, 1003);
                break;
            }
            WsEvent::Text(_) => continue,
            other => panic!("expected a close, got {other:?}"),
        }
    }
    let stored = p.stored(&thread).await;
    assert_eq!(
        stored.len(),
        1,
        "only the rewritten message reached the backend: {stored:?}"
    );
    assert!(!stored[0].contains("t_b"), "{stored:?}");
}

/// The refusal envelope, then the close frame (history and presence messages before it skipped).
async fn expect_refusal(ws: &mut Ws, code: &str, close: u16) {
    loop {
        let v = ws_next_json(ws).await;
        if v.get("error").is_none() {
            continue;
        }
        assert_eq!(v["error"]["code"], code, "{v}");
        break;
    }
    assert_eq!(ws_next(ws).await, WsEvent::Close(close, code.into()));
}

/// Also with falling numeric ids: the client's numeric cursor proves no order (every event
/// after it used to be dropped as already delivered).
#[tokio::test]
async fn a_python_client_resumes_across_a_gateway_kill_9_with_nothing_lost_or_repeated() {
    for style in ["ulid", "decreasing"] {
        python_client_resumes(style).await;
    }
}

async fn python_client_resumes(style: &str) {
    let mut p = PeerStack::start(PeerOptions::ids(style), "");
    let thread = p.thread("t_a").await;
    let headers: Vec<String> = full_headers(&token("t_a", "u1", json!({})), "t_a")
        .into_iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let url = format!("http://{}/sse/chat/{thread}", p.stack.addr());
    let mut client = python_client(&url, &headers, 6);
    let mut published = p.publish(&thread, 3).await;
    wait_for_lines(&client, 3).await;
    p.stack.restart_gateway(true);
    published.extend(p.publish(&thread, 3).await);
    let status = client
        .wait_exit(std::time::Duration::from_secs(60))
        .expect("the client finishes");
    assert!(status.success(), "{style}: {:?}", client.logs());
    let got: Vec<String> = event_lines(&client)
        .iter()
        .map(|v| v["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(got, published, "{style}");
}

fn python_client(url: &str, headers: &[String], count: usize) -> Proc {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/client.py");
    let count = count.to_string();
    let mut args = vec![
        script.to_str().expect("utf8"),
        "--url",
        url,
        "--count",
        &count,
    ];
    for h in headers {
        args.extend(["--header", h.as_str()]);
    }
    Proc::spawn(&python(), &args, &[("PYTHONUNBUFFERED", "1")])
}

fn event_lines(client: &Proc) -> Vec<Value> {
    client
        .logs()
        .iter()
        .filter_map(|l| l.split_once("EVENT ").map(|(_, j)| j.to_owned()))
        .map(|j| serde_json::from_str(&j).expect("event json"))
        .collect()
}

async fn wait_for_lines(client: &Proc, n: usize) {
    eventually!(
        30,
        "the Python client read its events",
        event_lines(client).len() >= n
    );
}
