//! `railgate demo` works from its own printed instructions.

use futures_util::SinkExt;
use railgate_tests::client::{get, ws_connect, ws_next_json, SseStream};
use railgate_tests::process::Proc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Headers (`-H "k: v"`) and the URL of one printed command line.
fn parse_command(line: &str) -> (Vec<(String, String)>, String) {
    let mut headers = Vec::new();
    for part in line.split("-H \"").skip(1) {
        let value = &part[..part.find('"').expect("closing quote")];
        let (k, v) = value.split_once(": ").expect("header");
        headers.push((k.to_owned(), v.to_owned()));
    }
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://") || w.starts_with("ws://"))
        .expect("url")
        .to_owned();
    (headers, url)
}

fn line_starting(logs: &[String], prefix: &str) -> String {
    logs.iter()
        .filter_map(|l| l.strip_prefix("[railgate stdout] "))
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in {logs:#?}"))
        .to_owned()
}

#[tokio::test]
async fn demo_serves_what_it_prints() {
    let mut demo = Proc::spawn(&railgate_tests::bins::path("railgate"), &["demo"], &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !demo
        .logs()
        .iter()
        .any(|l| l.contains("Ctrl-C stops everything"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "instructions not printed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = demo.logs();
    // The resume, pasted before any client of ours ever connected: the demo's own stream keeps
    // the journal filled, so event 3 is found there.
    let forwarded = "railgate_events_forwarded_total{route=\"chat-sse\",transport=\"sse\"}";
    railgate_tests::eventually!(15, "four demo messages went through the gateway", {
        let m = get(&demo.admin(), "/metrics", &[]).await;
        railgate_tests::stack::metric_value(&String::from_utf8_lossy(&m.body), forwarded) >= 4.0
    });
    let resume = logs
        .iter()
        .filter_map(|l| l.strip_prefix("[railgate stdout] "))
        .find(|l| l.starts_with("curl -N") && l.contains("Last-Event-ID: 3"))
        .expect("the printed resume command");
    let (rh, rurl) = parse_command(resume);
    let rh: Vec<(&str, &str)> = rh.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let rpath = rurl
        .strip_prefix(&format!("http://{}", demo.addr()))
        .expect("same address");
    assert!(rh.contains(&("Last-Event-ID", "3")), "{resume}");
    let mut resumed = SseStream::open(&demo.addr(), rpath, &rh).await;
    let first = resumed
        .next_event_within(Duration::from_secs(5))
        .await
        .expect("the resume's first event");
    assert_eq!(first.event, "resume_cursor", "{first:?}");
    assert_eq!(first.json()["source"], "journal", "{first:?}");
    let next = resumed
        .next_event_within(Duration::from_secs(5))
        .await
        .expect("event 4");
    assert_eq!(next.id.as_deref(), Some("4"));
    drop(resumed);
    let (headers, url) = parse_command(&line_starting(&logs, "curl -N"));
    let (addr, path) = url
        .strip_prefix("http://")
        .and_then(|u| u.split_once('/'))
        .map(|(a, p)| (a.to_owned(), format!("/{p}")))
        .expect("url");
    assert_eq!(addr, demo.addr());
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut sse = SseStream::open(&addr, &path, &h).await;
    assert_eq!(sse.status, 200);
    let ev = sse
        .next_event_within(Duration::from_secs(5))
        .await
        .expect("a demo message within 5 s");
    assert_eq!(ev.event, "chat_message");
    assert_eq!(ev.json()["routing"]["tenant_id"], "t_demo");

    let ws_line = line_starting(&logs, "wscat");
    let (ws_headers, ws_url) = parse_command(&ws_line);
    let hello = ws_line
        .split("-x '")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .expect("hello")
        .to_owned();
    let ws_path = ws_url
        .strip_prefix(&format!("ws://{addr}"))
        .expect("same address")
        .to_owned();
    let wh: Vec<(&str, &str)> = ws_headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut ws = ws_connect(&addr, &ws_path, &wh).await.expect("upgrade");
    ws.send(Message::text(hello)).await.expect("hello");
    let msg = ws_next_json(&mut ws).await;
    assert_eq!(msg["type"], "chat_message");
    assert_eq!(msg["routing"]["actor_id"], "demo-user");

    // The canvas lines: a commit with an id, a gesture without one, both on the demo canvas.
    for (channel, event, has_id) in [("commits", "commit", true), ("gestures", "gesture", false)] {
        let line = logs
            .iter()
            .filter_map(|l| l.strip_prefix("[railgate stdout] "))
            .find(|l| l.starts_with("curl -N") && l.contains(&format!("/{channel}")))
            .unwrap_or_else(|| panic!("the printed {channel} command"));
        let (ch, curl) = parse_command(line);
        let ch: Vec<(&str, &str)> = ch.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let cpath = curl
            .strip_prefix(&format!("http://{addr}"))
            .expect("same address");
        let mut st = SseStream::open(&addr, cpath, &ch).await;
        assert_eq!(st.status, 200, "{line}");
        let ev = st
            .next_event_within(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("a {event} within 5 s"));
        assert_eq!(
            (ev.event.as_str(), ev.id.is_some()),
            (event, has_id),
            "{ev:?}"
        );
        let canvas = cpath.split('/').nth(3).expect("canvas id");
        assert_eq!(ev.json()["routing"]["canvas_id"], canvas);
    }

    let refusal = line_starting(&logs, "curl -s -H");
    let (rh, rurl) = parse_command(&refusal);
    let rpath = rurl
        .strip_prefix(&format!("http://{addr}"))
        .expect("same address");
    let rh: Vec<(&str, &str)> = rh.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = get(&addr, rpath, &rh).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (400, Some("auth.mode_missing"))
    );
    let metrics = get(&demo.admin(), "/metrics", &[]).await;
    assert!(String::from_utf8_lossy(&metrics.body).contains("railgate_requests_total"));

    demo.signal(2);
    assert_eq!(
        demo.wait_exit(Duration::from_secs(15))
            .and_then(|s| s.code()),
        Some(0),
        "Ctrl-C stops everything"
    );
}
