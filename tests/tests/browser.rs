//! Headless Chromium (Debian's `chromium`) against the gateway. The demo's browser example:
//! tickets from the page, an `EventSource` and a `WebSocket`, and stamped events arriving on
//! both. And Chromium's own `EventSource` reconnecting — after its ticket's TTL, across a gateway
//! SIGTERM and a gateway SIGKILL — with no gap and no duplicate. Long run only.

use railgate_tests::browser::Browser;
use railgate_tests::process::Proc;
use railgate_tests::stack::{now, ticket_for, Stack};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Waits (in real time, bounded) until the page's `got` array has `n` ids; returns them.
async fn wait_for_ids(b: &mut Browser, page: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = b.eval(page, "window.got").await;
        let ids = got.as_array().cloned().unwrap_or_default();
        if ids.len() >= n {
            return ids;
        }
        assert!(
            Instant::now() < deadline,
            "EventSource got {ids:?}, wanted {n}; state {}",
            b.eval(page, "[es.readyState, window.errors]").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "needs Debian's chromium (apt-get install chromium); part of the long run"]
async fn eventsource_resumes_after_its_ticket_ttl_and_across_gateway_restarts() {
    let mut s = Stack::start("[auth]\ncookie_secure = false\n");
    let th = s.thread("t_a").await;
    let t = ticket_for("t_a", "u1", &th, "tid-browser", Some(2));
    let expires = now() + 2;
    let origin = format!("http://{}", s.addr());
    let mut b = Browser::launch().await;
    let page = b.open(&format!("{origin}/"), &origin).await;
    let script = format!(
        "window.got = []; window.errors = 0; \
         window.es = new EventSource('/sse/chat/{th}?ticket={t}'); \
         es.addEventListener('chat_message', e => got.push(e.lastEventId)); \
         es.onerror = () => {{ window.errors += 1; }}; 'started'"
    );
    assert_eq!(b.eval(&page, &script).await, json!("started"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.eval(&page, "es.readyState").await != json!(1) {
        assert!(Instant::now() < deadline, "EventSource never opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.publish(&th, 3).await;
    wait_for_ids(&mut b, &page, 3).await;
    // The ticket's own lifetime is over; its stream's session is not.
    while now() <= expires {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.restart_gateway(false);
    s.publish(&th, 2).await;
    wait_for_ids(&mut b, &page, 5).await;
    s.restart_gateway(true);
    s.publish(&th, 2).await;
    let ids = wait_for_ids(&mut b, &page, 7).await;
    let want: Vec<Value> = (1..=7).map(|i| json!(i.to_string())).collect();
    assert_eq!(ids, want, "every event once, in order");
    assert!(
        b.eval(&page, "window.errors").await.as_u64() >= Some(2),
        "the stream really was cut twice"
    );
}

#[tokio::test]
#[ignore = "needs Debian's chromium (apt-get install chromium); part of the long run"]
async fn the_demo_page_receives_stamped_events_over_sse_and_websocket_ten_times_in_real_time() {
    let demo = Proc::spawn(&railgate_tests::bins::path("railgate"), &["demo"], &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !demo.logs().iter().any(|l| l.contains("/demo")) {
        assert!(Instant::now() < deadline, "instructions not printed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let origin = format!("http://{}", demo.addr());
    let mut b = Browser::launch().await;
    for load in 1..=10 {
        let page = b.open(&format!("{origin}/demo?once"), &origin).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = b
                .eval(&page, "[document.getElementById('sse').textContent, document.getElementById('ws').textContent]")
                .await;
            let stamped = |i: usize| {
                text[i]
                    .as_str()
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("tenant=t_demo"))
                    .count()
            };
            if stamped(0) >= 2 && stamped(1) >= 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "load {load}: no stamped events on both rails: {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
#[ignore = "needs Debian's chromium (apt-get install chromium); part of the long run"]
async fn chromium_websocket_gets_stamped_events_and_cannot_speak_for_another_tenant() {
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    s.publish(&th, 2).await;
    let t = ticket_for("t_a", "u1", &th, "tid-browser-ws", None);
    let origin = format!("http://{}", s.addr());
    let mut b = Browser::launch().await;
    let page = b.open(&format!("{origin}/"), &origin).await;
    let script = format!(
        "window.got = []; window.closed = null; \
         window.ws = new WebSocket('ws://{addr}/ws/chat/{th}?ticket={t}'); \
         ws.onopen = () => ws.send(JSON.stringify({{type: 'hello', context: {{tenant_id: 't_a'}}, last_event_id: '0'}})); \
         ws.onmessage = e => got.push(JSON.parse(e.data)); \
         ws.onclose = e => {{ window.closed = e.code; }}; 'started'",
        addr = s.addr()
    );
    assert_eq!(b.eval(&page, &script).await, json!("started"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let got = b
            .eval(&page, "window.got.filter(m => m.type !== 'presence')")
            .await;
        if got.as_array().is_some_and(|a| a.len() >= 2) {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "WebSocket got {got}; closed {}",
            b.eval(&page, "window.closed").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(first[0]["seq"], 1);
    assert_eq!(first[1]["routing"]["tenant_id"], "t_a", "{first}");
    assert_eq!(first[1]["routing"]["actor_id"], "u1");
    let spoof = "ws.send(JSON.stringify({type: 'message', text: 'from chromium', \
                 routing: {tenant_id: 't_b'}, context: {tenant_id: 't_b'}})); 'sent'";
    assert_eq!(b.eval(&page, spoof).await, json!("sent"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = loop {
        let stored = railgate_tests::client::get(
            &s.mock_addr(),
            &format!("/chat/threads/{th}/messages?after=2"),
            &[],
        )
        .await
        .json();
        if stored.as_array().is_some_and(|a| !a.is_empty()) {
            break stored;
        }
        assert!(
            Instant::now() < deadline,
            "the message never reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stored[0]["text"], "from chromium");
    assert_eq!(stored[0]["routing"]["tenant_id"], "t_a", "{stored}");
}
