//! Headless Chromium (Debian's `chromium`) against the gateway. The demo's browser example:
//! tickets from the page, an `EventSource` and a `WebSocket`, and stamped events arriving on
//! both. And Chromium's own `EventSource` reconnecting — after its ticket's TTL, across a gateway
//! SIGTERM and a gateway SIGKILL — with no gap and no duplicate. Twenty `EventSource`s of one
//! page over HTTP/2 (TLS, the test CA's certificate trusted) all receive events; over HTTP/1.1
//! the browser stalls after six. Long run only.

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
async fn the_demo_page_receives_stamped_events_over_sse_websocket_and_the_canvas_ten_times() {
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
                .eval(&page, "['sse', 'ws', 'commits', 'gestures'].map(id => document.getElementById(id).textContent)")
                .await;
            let stamped = |i: usize| {
                text[i]
                    .as_str()
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("tenant=t_demo"))
                    .count()
            };
            let canvas = |i: usize, what: &str| text[i].as_str().unwrap_or_default().contains(what);
            if stamped(0) >= 2 && stamped(1) >= 2 && canvas(2, "canvas=cv_") && canvas(3, " seq ") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "load {load}: no stamped events on both rails and the canvas: {text}"
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

/// Opens `n` EventSources on one page at `origin`, each with its own ticket, and returns how
/// many have received an event while a few are published over three seconds.
async fn eventsources_receiving(
    b: &mut Browser,
    s: &Stack,
    origin: &str,
    th: &str,
    n: usize,
) -> usize {
    let page = b.open(&format!("{origin}/"), origin).await;
    let tickets: Vec<String> = (0..n)
        .map(|i| {
            railgate_tests::stack::ticket("t_a", "u1", th, &format!("tid-{i}-{}", origin.len()))
        })
        .collect();
    let script = format!(
        "window.counts = new Array({n}).fill(0); window.sources = {tickets}.map((t, i) => {{ \
           const es = new EventSource('/sse/chat/{th}?ticket=' + t); \
           es.addEventListener('chat_message', () => window.counts[i] += 1); return es; }}); 'opened'",
        tickets = serde_json::to_string(&tickets).expect("json")
    );
    assert_eq!(b.eval(&page, &script).await, json!("opened"));
    // Published in a trickle for a few seconds: every open stream gets some.
    for _ in 0..6 {
        s.publish(th, 1).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let counts = b.eval(&page, "window.counts").await;
    counts
        .as_array()
        .expect("counts")
        .iter()
        .filter(|c| c.as_u64().unwrap_or(0) > 0)
        .count()
}

#[tokio::test]
#[ignore = "needs Debian's chromium (apt-get install chromium); part of the long run"]
async fn twenty_eventsources_share_http2_and_http1_stalls_after_six() {
    let ca = railgate_tests::tls::TestCa::new();
    let dir = tempfile::tempdir().expect("tmp");
    let (cert, key) = ca.issue(&["localhost"]);
    std::fs::write(dir.path().join("cert.pem"), &cert).expect("cert");
    std::fs::write(dir.path().join("key.pem"), &key).expect("key");
    let spki = railgate_tests::tls::chromium_spki(&key);
    let tls = Stack::start(&format!(
        "[tls]\ncert_file = \"{d}/cert.pem\"\nkey_file = \"{d}/key.pem\"\n",
        d = dir.path().display()
    ));
    let plain = Stack::start("");
    let mut b =
        Browser::launch_with(&[&format!("--ignore-certificate-errors-spki-list={spki}")]).await;
    let th = tls.thread("t_a").await;
    let port = tls.addr().rsplit(':').next().expect("port").to_owned();
    let over_h2 =
        eventsources_receiving(&mut b, &tls, &format!("https://localhost:{port}"), &th, 20).await;
    let th = plain.thread("t_a").await;
    let over_h1 =
        eventsources_receiving(&mut b, &plain, &format!("http://{}", plain.addr()), &th, 20).await;
    println!("EventSources receiving events: HTTP/2 {over_h2} of 20, HTTP/1.1 {over_h1} of 20");
    assert_eq!(over_h2, 20, "every stream over one HTTP/2 connection");
    assert_eq!(over_h1, 6, "HTTP/1.1: six connections per origin");
}
