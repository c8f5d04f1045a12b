//! upstream-mock as a real process: replay, durability across kill -9, torn tails, levers.

use futures_util::SinkExt;
use railgate_tests::client::{
    get, post_json, request, ws_connect, ws_next, ws_next_json, SseStream, WsEvent,
};
use railgate_tests::eventually;
use railgate_tests::process::Proc;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

fn mock(args: &[&str]) -> Proc {
    Proc::spawn(Path::new(env!("CARGO_BIN_EXE_upstream-mock")), args, &[])
}

fn start() -> Proc {
    mock(&["--listen", "127.0.0.1:0"])
}

async fn thread(addr: &str, tenant: &str) -> String {
    let r = post_json(
        addr,
        "/chat/threads",
        &[("x-tenant-id", tenant), ("x-env", "dev")],
        &json!({"title": "t"}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let v = r.json();
    assert_eq!(v["tenant_id"], tenant);
    assert_eq!(v["env"], "dev");
    assert_eq!(v["title"], "t");
    v["id"].as_str().expect("id").to_owned()
}

async fn publish(addr: &str, id: &str, count: u64) -> Value {
    let r = post_json(
        addr,
        "/_mock/publish",
        &[],
        &json!({"thread_id": id, "count": count}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.json()
}

fn seqs(events: &[railgate_tests::client::SseEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.json()["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test]
async fn sse_replays_after_last_event_id_then_streams_live() {
    let m = start();
    let addr = m.addr();
    let id = thread(&addr, "t1").await;
    assert_eq!(
        publish(&addr, &id, 3).await,
        json!({"first_seq": 1, "last_seq": 3})
    );
    let mut s = SseStream::open(&addr, &format!("/sse/chat/{id}"), &[("last-event-id", "1")]).await;
    assert_eq!(s.status, 200);
    assert_eq!(
        s.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/event-stream"[..])
    );
    let replay = s.take(2).await;
    assert_eq!(seqs(&replay), vec![2, 3]);
    assert_eq!(replay[0].event, "chat_message");
    assert_eq!(replay[0].id.as_deref(), Some("2"));
    let d = replay[0].json();
    assert_eq!(d["type"], "chat_message");
    assert_eq!(d["thread_id"], id.as_str());
    assert_eq!(d["text"], "message 1");
    assert!(d["sent_at_us"].as_u64().expect("sent_at_us") > 1_600_000_000_000_000);
    publish(&addr, &id, 2).await;
    assert_eq!(seqs(&s.take(2).await), vec![4, 5]);
}

#[tokio::test]
async fn an_sse_stream_ends_when_its_client_leaves() {
    let m = start();
    let addr = m.addr();
    let id = thread(&addr, "t1").await;
    let active = || async {
        let stats = get(&addr, "/_mock/stats", &[]).await.json();
        stats["streams_active"].as_u64()
    };
    let s = SseStream::open(&addr, &format!("/sse/chat/{id}"), &[]).await;
    assert_eq!(s.status, 200);
    eventually!(5, "the stream is active", active().await == Some(1));
    drop(s);
    // Well before the 15 s keep-alive that would otherwise find it gone.
    eventually!(
        5,
        "the stream ended with its client",
        active().await == Some(0)
    );
}

#[tokio::test]
async fn sse_cursor_from_query_and_from_zero() {
    let m = start();
    let addr = m.addr();
    let id = thread(&addr, "t1").await;
    publish(&addr, &id, 3).await;
    let mut s = SseStream::open(&addr, &format!("/sse/chat/{id}?last_event_id=2"), &[]).await;
    assert_eq!(seqs(&s.take(1).await), vec![3]);
    let mut s = SseStream::open(&addr, &format!("/sse/chat/{id}"), &[("last-event-id", "0")]).await;
    assert_eq!(seqs(&s.take(3).await), vec![1, 2, 3]);
}

#[tokio::test]
async fn sse_cursor_never_issued_is_410_and_unknown_thread_404() {
    let m = start();
    let addr = m.addr();
    let id = thread(&addr, "t1").await;
    publish(&addr, &id, 2).await;
    for bad in ["3", "abc", "-1", "1.5"] {
        let r = get(&addr, &format!("/sse/chat/{id}"), &[("last-event-id", bad)]).await;
        assert_eq!(r.status, 410, "{bad}");
        assert_eq!(r.json()["error"]["code"], "chat.cursor_invalid");
    }
    assert_eq!(get(&addr, "/sse/chat/th_nope", &[]).await.status, 404);
}

#[tokio::test]
async fn ws_hello_replays_streams_and_publishes_client_messages() {
    let m = start();
    let addr = m.addr();
    let id = thread(&addr, "t1").await;
    publish(&addr, &id, 2).await;
    let mut ws = ws_connect(&addr, &format!("/ws/chat/{id}"), &[])
        .await
        .expect("upgrade");
    let hello = json!({"type": "hello", "context": {"tenant_id": "t1"}, "last_event_id": "1"});
    ws.send(Message::text(hello.to_string()))
        .await
        .expect("send");
    let first = ws_next_json(&mut ws).await;
    assert_eq!(first["type"], "chat_message");
    assert_eq!(first["id"], "2");
    assert_eq!(first["seq"], 2);
    let msg = json!({"type": "message", "text": "hi", "routing": {"tenant_id": "t1"}});
    ws.send(Message::text(msg.to_string())).await.expect("send");
    let echoed = ws_next_json(&mut ws).await;
    assert_eq!(echoed["id"], "3");
    assert_eq!(echoed["text"], "hi");
    assert_eq!(echoed["routing"], json!({"tenant_id": "t1"}));
    let listed = get(&addr, &format!("/chat/threads/{id}/messages?after=2"), &[])
        .await
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["text"], "hi");
}

#[tokio::test]
async fn ws_cursor_in_query_skips_the_hello() {
    let m = start();
    let addr = m.addr();
    let id = thread(&addr, "t1").await;
    publish(&addr, &id, 3).await;
    let mut ws = ws_connect(&addr, &format!("/ws/chat/{id}?last_event_id=2"), &[])
        .await
        .expect("upgrade");
    assert_eq!(ws_next_json(&mut ws).await["seq"], 3);
}

#[tokio::test]
async fn ws_echo_returns_text_and_binary_unchanged() {
    let m = start();
    let addr = m.addr();
    let mut ws = ws_connect(&addr, "/ws/echo", &[]).await.expect("upgrade");
    ws.send(Message::text("{\"type\":\"hello\"}"))
        .await
        .expect("send");
    assert_eq!(
        ws_next(&mut ws).await,
        WsEvent::Text("{\"type\":\"hello\"}".into())
    );
    let big = vec![7u8; 2 * 1024 * 1024];
    ws.send(Message::binary(big.clone())).await.expect("send");
    assert_eq!(ws_next(&mut ws).await, WsEvent::Binary(big));
    let bye = CloseFrame {
        code: 1000.into(),
        reason: "bye".into(),
    };
    ws.send(Message::Close(Some(bye))).await.expect("close");
    assert_eq!(ws_next(&mut ws).await, WsEvent::Close(1000, "bye".into()));
}

#[tokio::test]
async fn ws_invalid_cursor_gets_envelope_then_4003() {
    let m = start();
    let addr = m.addr();
    let id = thread(&addr, "t1").await;
    let mut ws = ws_connect(&addr, &format!("/ws/chat/{id}"), &[])
        .await
        .expect("upgrade");
    ws.send(Message::text(
        json!({"type": "hello", "last_event_id": "99"}).to_string(),
    ))
    .await
    .expect("send");
    assert_eq!(
        ws_next_json(&mut ws).await["error"]["code"],
        "chat.cursor_invalid"
    );
    assert_eq!(
        ws_next(&mut ws).await,
        WsEvent::Close(4003, "chat.cursor_invalid".into())
    );
}

#[tokio::test]
async fn history_and_seq_survive_kill_9_and_restart_on_the_same_port() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().to_str().expect("utf8");
    let mut m = mock(&["--listen", "127.0.0.1:0", "--data-dir", data]);
    let addr = m.addr();
    let id = thread(&addr, "t_persist").await;
    publish(&addr, &id, 5).await;
    m.kill9();
    let m2 = mock(&["--listen", &addr, "--data-dir", data]);
    assert_eq!(m2.addr(), addr);
    let reg = get(&addr, &format!("/registry/threads/{id}"), &[]).await;
    assert_eq!(reg.status, 200);
    assert_eq!(reg.json(), json!({"tenant_id": "t_persist", "env": "dev"}));
    assert_eq!(
        publish(&addr, &id, 1).await,
        json!({"first_seq": 6, "last_seq": 6})
    );
    let mut s = SseStream::open(&addr, &format!("/sse/chat/{id}"), &[("last-event-id", "0")]).await;
    assert_eq!(seqs(&s.take(6).await), vec![1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn torn_last_record_is_dropped_at_start_up() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().to_str().expect("utf8");
    let mut m = mock(&["--listen", "127.0.0.1:0", "--data-dir", data]);
    let addr = m.addr();
    let id = thread(&addr, "t1").await;
    publish(&addr, &id, 2).await;
    m.kill9();
    let log = dir.path().join("events.log");
    let mut bytes = std::fs::read(&log).expect("log");
    let intact = bytes.len();
    bytes.extend_from_slice(b"1234abcd {\"t\":\"message\",\"thread_id\":\"");
    std::fs::write(&log, &bytes).expect("write");
    let m2 = mock(&["--listen", "127.0.0.1:0", "--data-dir", data]);
    let addr = m2.addr();
    assert_eq!(
        std::fs::metadata(&log).expect("meta").len() as usize,
        intact
    );
    assert_eq!(
        publish(&addr, &id, 1).await,
        json!({"first_seq": 3, "last_seq": 3})
    );
}

#[tokio::test]
async fn damaged_middle_of_the_log_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("events.log"),
        b"garbage line\n00000000 {}\n",
    )
    .expect("write");
    let bin = env!("CARGO_BIN_EXE_upstream-mock");
    let out = std::process::Command::new(bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().expect("utf8"),
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("damaged"),
        "{:?}",
        out
    );
}

#[tokio::test]
async fn drop_streams_after_events_cuts_sse_and_ws() {
    let m = start();
    let addr = m.addr();
    let id = thread(&addr, "t1").await;
    publish(&addr, &id, 5).await;
    let r = post_json(
        &addr,
        "/_mock/faults",
        &[],
        &json!({"drop_streams_after_events": 2}),
    )
    .await;
    assert_eq!(r.json()["drop_streams_after_events"], 2);
    let mut s = SseStream::open(&addr, &format!("/sse/chat/{id}"), &[("last-event-id", "0")]).await;
    assert_eq!(seqs(&s.take(2).await), vec![1, 2]);
    assert_eq!(s.next_event().await, None, "stream is cut after 2 events");
    let mut ws = ws_connect(&addr, &format!("/ws/chat/{id}?last_event_id=0"), &[])
        .await
        .expect("upgrade");
    assert_eq!(ws_next_json(&mut ws).await["seq"], 1);
    assert_eq!(ws_next_json(&mut ws).await["seq"], 2);
    assert_eq!(ws_next(&mut ws).await, WsEvent::Ended);
    post_json(&addr, "/_mock/faults", &[], &json!({})).await;
    let mut s = SseStream::open(&addr, &format!("/sse/chat/{id}"), &[("last-event-id", "0")]).await;
    assert_eq!(seqs(&s.take(5).await), vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn fail_next_status_fails_exactly_one_request() {
    let m = start();
    let addr = m.addr();
    let id = thread(&addr, "t1").await;
    post_json(
        &addr,
        "/_mock/faults",
        &[],
        &json!({"fail_next_status": 503}),
    )
    .await;
    let path = format!("/registry/threads/{id}");
    let r = get(&addr, &path, &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "mock.injected_failure");
    assert_eq!(get(&addr, &path, &[]).await.status, 200);
    assert_eq!(
        get(&addr, "/_mock/faults", &[]).await.json()["fail_next_status"],
        Value::Null
    );
}

#[tokio::test]
async fn latency_lever_delays_answers() {
    let m = start();
    let addr = m.addr();
    post_json(&addr, "/_mock/faults", &[], &json!({"latency_ms": 300})).await;
    let t0 = Instant::now();
    assert_eq!(get(&addr, "/registry/threads/none", &[]).await.status, 404);
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "answered after {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn requests_are_recorded_with_lower_case_headers_oldest_first() {
    let m = start();
    let addr = m.addr();
    request(
        "GET",
        &addr,
        "/registry/threads/a?x=1",
        &[("X-Tenant-Id", "t9"), ("X-Custom", "v")],
        vec![],
    )
    .await;
    get(&addr, "/registry/threads/b", &[]).await;
    let log = get(&addr, "/_mock/requests", &[]).await.json();
    let log = log.as_array().expect("array");
    assert_eq!(log.len(), 2, "/_mock/ requests are not recorded");
    assert_eq!(log[0]["method"], "GET");
    assert_eq!(log[0]["path"], "/registry/threads/a?x=1");
    assert_eq!(log[0]["headers"]["x-tenant-id"], "t9");
    assert_eq!(log[0]["headers"]["x-custom"], "v");
    assert_eq!(log[1]["path"], "/registry/threads/b");
}

#[tokio::test]
async fn paced_publish_delivers_every_event_in_order() {
    let m = start();
    let addr = m.addr();
    let id = thread(&addr, "t1").await;
    let mut s = SseStream::open(&addr, &format!("/sse/chat/{id}"), &[]).await;
    let r = post_json(
        &addr,
        "/_mock/publish",
        &[],
        &json!({"thread_id": id, "count": 20, "rate_per_s": 200, "payload_bytes": 64}),
    )
    .await;
    assert_eq!(r.status, 202);
    let events = s.take(20).await;
    assert_eq!(seqs(&events), (1..=20).collect::<Vec<_>>());
    assert_eq!(events[0].json()["text"].as_str().map(str::len), Some(64));
    let stats = get(&addr, "/_mock/stats", &[]).await.json();
    assert_eq!(stats["sse_streams_opened"], 1);
    eventually!(
        5,
        "stream counted active",
        get(&addr, "/_mock/stats", &[]).await.json()["streams_active"] == 1
    );
}

#[tokio::test]
async fn http_messages_api_and_registry() {
    let m = start();
    let addr = m.addr();
    let r = post_json(
        &addr,
        "/chat/threads",
        &[
            ("x-tenant-id", "t2"),
            ("x-env", "staging"),
            ("x-project-id", "p1"),
        ],
        &json!({"title": "x"}),
    )
    .await;
    let id = r.json()["id"].as_str().expect("id").to_owned();
    let r = post_json(
        &addr,
        &format!("/chat/threads/{id}/messages"),
        &[],
        &json!({"text": "a"}),
    )
    .await;
    assert_eq!((r.status, r.json()), (201, json!({"id": "1", "seq": 1})));
    let reg = get(&addr, &format!("/registry/threads/{id}"), &[])
        .await
        .json();
    assert_eq!(
        reg,
        json!({"tenant_id": "t2", "env": "staging", "project_id": "p1"})
    );
    assert_eq!(
        post_json(&addr, "/chat/threads", &[], &json!({}))
            .await
            .status,
        400,
        "tenant header required"
    );
    assert_eq!(
        post_json(
            &addr,
            "/chat/threads/nope/messages",
            &[],
            &json!({"text": "a"})
        )
        .await
        .status,
        404
    );
    let bad = request(
        "POST",
        &addr,
        &format!("/chat/threads/{id}/messages"),
        &[],
        b"{".to_vec(),
    )
    .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn sigterm_ends_streams_and_exits_zero() {
    let mut m = start();
    let addr = m.addr();
    let id = thread(&addr, "t1").await;
    let mut s = SseStream::open(&addr, &format!("/sse/chat/{id}"), &[]).await;
    m.signal(15);
    assert_eq!(s.next_event().await, None);
    let status = m.wait_exit(Duration::from_secs(10)).expect("exited");
    assert_eq!(status.code(), Some(0));
}
