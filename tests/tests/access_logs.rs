//! Access lines of streams, from the binary's logs: an SSE stream and a WebSocket session are
//! each logged once, when they end, with their duration, what they carried each way, why they
//! ended, the client address, the upstream connect time and reconnects; and no token, ticket or
//! resume grant ever appears in the logs.

use futures_util::SinkExt;
use railgate_tests::client::{ws_next_json, ws_open, SseStream};
use railgate_tests::eventually;
use railgate_tests::stack::{full_headers, refs, ticket, token, Stack};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Every access line for `path`.
fn access_lines(s: &Stack, path: &str) -> Vec<Value> {
    s.gw.json_logs()
        .into_iter()
        .filter(|v| v["target"] == "railgate::access" && v["path"] == path)
        .collect()
}

#[tokio::test]
async fn an_sse_stream_is_logged_once_when_it_ends_with_what_it_carried() {
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    let path = format!("/sse/chat/{th}");
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
    let mut st = SseStream::open(&s.addr(), &path, &refs(&h)).await;
    assert_eq!(st.status, 200);
    s.publish(&th, 3).await;
    let got = st.take(3).await;
    assert_eq!(got.len(), 3);
    assert!(
        access_lines(&s, &path).is_empty(),
        "nothing is logged while the stream is open"
    );
    let bytes: usize = st.raw.len();
    drop(st);
    // The gateway sees the client's close on its own (no write needed).
    eventually!(10, "the stream's access line", {
        !access_lines(&s, &path).is_empty()
    });
    let lines = access_lines(&s, &path);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let l = &lines[0];
    assert_eq!(l["message"], "stream ended");
    assert_eq!(l["transport"], "sse");
    assert_eq!(l["route"], "chat-sse");
    assert_eq!(l["tenant_id"], "t_a");
    assert_eq!(l["status"], 200);
    assert_eq!(l["client"], "127.0.0.1");
    assert_eq!(l["outcome"], "client_closed");
    assert_eq!(l["events_down"], 3);
    assert!(
        l["bytes_down"].as_u64().expect("bytes") >= bytes as u64,
        "{l}"
    );
    assert_eq!(l["messages_up"], 0);
    assert_eq!(l["reconnects"], 0);
    assert!(l["upstream_connect_ms"].as_f64().expect("connect time") > 0.0);
    assert!(l["duration_ms"].as_f64().expect("duration") > 0.0);
    assert!(l.get("fields").is_none(), "flat");
}

#[tokio::test]
async fn a_stream_ended_by_the_drain_says_so() {
    let mut s = Stack::start("");
    let th = s.thread("t_a").await;
    let path = format!("/sse/chat/{th}");
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
    let mut st = SseStream::open(&s.addr(), &path, &refs(&h)).await;
    s.publish(&th, 1).await;
    assert_eq!(st.take(1).await.len(), 1);
    s.gw.signal(15);
    let ev = st
        .next_event_within(Duration::from_secs(10))
        .await
        .expect("the drain's error event");
    assert_eq!(ev.event, "error");
    assert!(s.gw.wait_exit(Duration::from_secs(30)).is_some());
    // Its last lines reach the test through a pipe: wait for them.
    eventually!(10, "the stream's access line", {
        access_lines(&s, &path).len() == 1
    });
    let lines = access_lines(&s, &path);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["outcome"], "gateway.draining");
    assert_eq!(lines[0]["events_down"], 1);
}

#[tokio::test]
async fn a_websocket_session_is_logged_once_when_it_ends_and_secrets_never_are() {
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    let tok = token("t_a", "u1", json!({}));
    let path = format!("/ws/chat/{th}");
    let mut ws = ws_open(&s.addr(), &path, &tok, "t_a", None).await;
    for i in 0..2 {
        ws.send(Message::text(
            json!({"type": "message", "text": format!("m{i}")}).to_string(),
        ))
        .await
        .expect("send");
    }
    // The two messages come back as events (the mock publishes what a thread receives).
    let mut seen = 0;
    while seen < 2 {
        if ws_next_json(&mut ws).await["type"] != "presence" {
            seen += 1;
        }
    }
    ws.close(None).await.expect("close");
    eventually!(10, "the session's access line", {
        !access_lines(&s, &path).is_empty()
    });
    let lines = access_lines(&s, &path);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let l = &lines[0];
    assert_eq!(l["message"], "stream ended");
    assert_eq!(l["transport"], "ws");
    assert_eq!(l["status"], 101);
    assert_eq!(l["outcome"], "client_closed");
    assert_eq!(l["messages_up"], 2);
    assert!(l["bytes_up"].as_u64().expect("bytes up") > 20, "{l}");
    assert!(l["events_down"].as_u64().expect("down") >= 2, "{l}");
    assert!(l["upstream_connect_ms"].as_f64().expect("connect") > 0.0);
    // A ticket-opened SSE stream, whose answer sets the resume grant cookie.
    let t = ticket("t_a", "u1", &th, "tid-logs");
    let mut st = SseStream::open(&s.addr(), &format!("/sse/chat/{th}?ticket={t}"), &[]).await;
    assert_eq!(st.status, 200);
    let cookie = st
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("grant cookie")
        .split(';')
        .next()
        .and_then(|c| c.split_once('='))
        .map(|(_, v)| v.to_owned())
        .expect("grant");
    s.publish(&th, 1).await;
    assert!(!st.take(1).await.is_empty());
    drop(st);
    eventually!(10, "the ticket stream's access line", {
        access_lines(&s, &format!("/sse/chat/{th}")).len() == 1
    });
    let all = s.gw.logs().join("\n");
    for (what, secret) in [("token", tok.as_str()), ("ticket", &t), ("grant", &cookie)] {
        assert!(!all.contains(secret), "the {what} is in the logs");
    }
}
