//! CT-10 chaos: the upstream killed with SIGKILL at random moments while publishing fast,
//! clients dropping at random byte boundaries and event counts, rapid reconnect cycles. Whatever
//! happens, the final sequence every client saw is complete and exact.
//!
//! Default run: 3 kills per rail. Long run (`--ignored`): 20 kills per rail.
//! Replay a run with `RAILGATE_TEST_SEED=<seed printed by the failing test>`.

use futures_util::SinkExt;
use railgate_tests::chaos::{complete_events, rng};
use railgate_tests::client::{post_json, ws_connect, ws_next_json, SseStream, Ws};
use railgate_tests::stack::{full_headers, refs, token, DurableStack, Stack};
use rand::Rng;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

async fn publish_paced(s: &Stack, thread: &str, rate: u32) {
    let r = post_json(
        &s.mock_addr(),
        "/_mock/publish",
        &[],
        &json!({"thread_id": thread, "count": 1_000_000, "rate_per_s": rate}),
    )
    .await;
    assert_eq!(r.status, 202);
}

/// Reads chat messages into a channel until the stream ends.
fn reader(mut st: SseStream) -> mpsc::UnboundedReceiver<u64> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(ev) = st.next_event_within(Duration::from_secs(60)).await {
            if ev.event == "chat_message" {
                let _ = tx.send(ev.json()["seq"].as_u64().expect("seq"));
            } else if ev.event == "error" {
                panic!("stream failed: {}", ev.data);
            }
        }
    });
    rx
}

async fn collect_until(rx: &mut mpsc::UnboundedReceiver<u64>, seen: &mut Vec<u64>, total: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while (seen.len() as u64) < total {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(seq)) => seen.push(seq),
            _ => panic!("only {} of {total} events arrived", seen.len()),
        }
    }
}

async fn sse_under_kills(kills: usize) {
    let mut r = rng("sse_under_kills");
    let mut d = DurableStack::start("");
    let th = d.stack.thread("t_a").await;
    let tok = token("t_a", "u1", json!({}));
    let mut h = full_headers(&tok, "t_a");
    h.push(("last-event-id".into(), "0".into()));
    let st = SseStream::open(&d.stack.addr(), &format!("/sse/chat/{th}"), &refs(&h)).await;
    assert_eq!(st.status, 200);
    let mut rx = reader(st);
    publish_paced(&d.stack, &th, 400).await;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(r.random_range(100..700))).await;
        d.crash_and_restart_mock();
        publish_paced(&d.stack, &th, 400).await;
    }
    tokio::time::sleep(Duration::from_millis(r.random_range(100..400))).await;
    d.crash_and_restart_mock();
    d.stack.publish(&th, 20).await;
    let total = d.stored(&th).await;
    let mut seen = Vec::new();
    collect_until(&mut rx, &mut seen, total).await;
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "every seq exactly once, in order"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.try_recv().is_err(), "nothing after the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_stream_survives_3_random_upstream_kills() {
    sse_under_kills(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long chaos run"]
async fn sse_stream_survives_20_random_upstream_kills() {
    sse_under_kills(20).await;
}

async fn next_chat(ws: &mut Ws) -> Value {
    loop {
        let v = ws_next_json(ws).await;
        if v["type"] == "chat_message" {
            return v;
        }
        assert!(v.get("error").is_none(), "session failed: {v}");
    }
}

async fn ws_under_kills(kills: usize) {
    let mut r = rng("ws_under_kills");
    let mut d = DurableStack::start("");
    let th = d.stack.thread("t_a").await;
    let tok = token("t_a", "u1", json!({}));
    let a = format!("Bearer {tok}");
    let mut ws = ws_connect(
        &d.stack.addr(),
        &format!("/ws/chat/{th}"),
        &[("authorization", a.as_str())],
    )
    .await
    .expect("upgrade");
    let hello = json!({"type": "hello", "context": {"tenant_id": "t_a", "mode": "lab", "project_id": "p_chat", "app_id": "app-chat"}, "last_event_id": "0"});
    ws.send(Message::text(hello.to_string()))
        .await
        .expect("hello");
    publish_paced(&d.stack, &th, 200).await;
    let rounds = 10 + kills * 3;
    let mut kill_rounds: Vec<usize> = (0..kills).map(|_| r.random_range(1..rounds)).collect();
    kill_rounds.sort_unstable();
    let mut seen = Vec::new();
    let mut sent = Vec::new();
    for round in 0..rounds {
        for _ in kill_rounds.iter().filter(|k| **k == round) {
            d.crash_and_restart_mock();
            let held = format!("held-{round}-{}", sent.len());
            ws.send(Message::text(
                json!({"type": "message", "text": held}).to_string(),
            ))
            .await
            .expect("send");
            sent.push(held);
            publish_paced(&d.stack, &th, 200).await;
        }
        let text = format!("client-{round}");
        ws.send(Message::text(
            json!({"type": "message", "text": text}).to_string(),
        ))
        .await
        .expect("send");
        sent.push(text.clone());
        loop {
            let m = next_chat(&mut ws).await;
            seen.push(m["seq"].as_u64().expect("seq"));
            if m["text"] == text.as_str() {
                break;
            }
        }
    }
    let last = *seen.last().expect("events");
    assert_eq!(
        seen,
        (1..=last).collect::<Vec<_>>(),
        "upstream → client: every seq once, in order"
    );
    let stored = railgate_tests::client::get(
        &d.stack.mock_addr(),
        &format!("/chat/threads/{th}/messages"),
        &[],
    )
    .await
    .json();
    let from_client: Vec<String> = stored
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .filter(|t| t.starts_with("client-") || t.starts_with("held-"))
        .map(String::from)
        .collect();
    assert_eq!(
        from_client, sent,
        "client → upstream: every message once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_session_survives_3_random_upstream_kills_both_ways() {
    ws_under_kills(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long chaos run"]
async fn ws_session_survives_20_random_upstream_kills_both_ways() {
    ws_under_kills(20).await;
}

/// Connects, reads a random number of bytes, drops the connection mid-event, and resumes from
/// the last complete event — until every event arrived.
async fn random_byte_drops(cycles_max: usize) {
    let mut r = rng("random_byte_drops");
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    s.publish(&th, 150).await;
    let tok = token("t_a", "u1", json!({}));
    let mut cursor = "0".to_owned();
    let mut seen: Vec<u64> = Vec::new();
    let mut cycles = 0;
    while seen.len() < 150 {
        cycles += 1;
        assert!(cycles <= cycles_max, "no progress after {cycles} cycles");
        let mut h = full_headers(&tok, "t_a");
        h.push(("last-event-id".into(), cursor.clone()));
        let mut st = SseStream::open(&s.addr(), &format!("/sse/chat/{th}"), &refs(&h)).await;
        assert_eq!(st.status, 200);
        let cut = r.random_range(60..4000);
        st.read_raw(cut, Duration::from_secs(2)).await;
        let upto = cut.min(st.raw.len());
        for ev in complete_events(&st.raw[..upto]) {
            if ev.event == "chat_message" {
                seen.push(ev.json()["seq"].as_u64().expect("seq"));
                cursor = ev.id.clone().expect("id");
            }
        }
        drop(st);
    }
    assert_eq!(
        seen,
        (1..=150).collect::<Vec<_>>(),
        "resumed {cycles} times"
    );
}

#[tokio::test]
async fn clients_dropping_at_random_byte_boundaries_resume_exactly() {
    random_byte_drops(2000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_rapid_reconnect_cycles_at_random_event_counts_lose_nothing() {
    let mut r = rng("rapid_reconnects");
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    publish_paced(&s, &th, 300).await;
    let tok = token("t_a", "u1", json!({}));
    let mut cursor = "0".to_owned();
    let mut seen: Vec<u64> = Vec::new();
    for _ in 0..10 {
        let mut h = full_headers(&tok, "t_a");
        h.push(("last-event-id".into(), cursor.clone()));
        let mut st = SseStream::open(&s.addr(), &format!("/sse/chat/{th}"), &refs(&h)).await;
        assert_eq!(st.status, 200);
        let want = r.random_range(1..30);
        let mut got = 0;
        while got < want {
            let ev = st
                .next_event_within(Duration::from_secs(10))
                .await
                .expect("event");
            if ev.event == "chat_message" {
                seen.push(ev.json()["seq"].as_u64().expect("seq"));
                cursor = ev.id.clone().expect("id");
                got += 1;
            }
        }
    }
    assert_eq!(seen, (1..=seen.len() as u64).collect::<Vec<_>>());
}
