//! The SSE rail against real processes.

use railgate_tests::client::{get, post_json, SseEvent, SseStream};
use railgate_tests::eventually;
use railgate_tests::process::Proc;
use railgate_tests::stack::{full_headers, metric_value, now, refs, ticket, token, Stack};
use serde_json::{json, Value};
use std::time::Duration;

async fn open(s: &Stack, thread: &str, tenant: &str, extra: &[(&str, &str)]) -> SseStream {
    let tok = token(tenant, "u1", json!({}));
    let mut h = full_headers(&tok, tenant);
    h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let st = SseStream::open(&s.addr(), &format!("/sse/chat/{thread}"), &refs(&h)).await;
    assert_eq!(st.status, 200, "stream refused");
    st
}

fn seqs(events: &[SseEvent]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e.event == "chat_message")
        .map(|e| e.json()["seq"].as_u64().expect("seq"))
        .collect()
}

async fn take_messages(st: &mut SseStream, n: usize) -> Vec<SseEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        match st.next_event_within(Duration::from_secs(20)).await {
            Some(e) if e.event == "chat_message" => out.push(e),
            Some(e) if e.event == "error" => {
                panic!("error event after {} messages: {}", out.len(), e.data)
            }
            Some(_) => {}
            None => panic!("stream ended after {} of {n} messages", out.len()),
        }
    }
    out
}

#[tokio::test]
async fn events_are_stamped_and_response_headers_are_right() {
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    let mut st = open(
        &s,
        &th,
        "t_a",
        &[("x-request-id", "req-sse"), ("x-surface-id", "web")],
    )
    .await;
    assert_eq!(
        st.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/event-stream"[..])
    );
    assert_eq!(
        st.headers.get("cache-control").map(|v| v.as_bytes()),
        Some(&b"no-cache"[..])
    );
    assert_eq!(
        st.headers.get("x-accel-buffering").map(|v| v.as_bytes()),
        Some(&b"no"[..])
    );
    assert_eq!(
        st.headers.get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"req-sse"[..])
    );
    s.publish(&th, 1).await;
    let ev = take_messages(&mut st, 1).await.remove(0);
    assert_eq!(ev.id.as_deref(), Some("1"));
    let d = ev.json();
    let keys: Vec<&str> = d
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        vec![
            "type",
            "thread_id",
            "seq",
            "text",
            "sent_at_us",
            "routing",
            "meta"
        ]
    );
    assert_eq!(
        d["routing"],
        json!({"tenant_id": "t_a", "env": "dev", "thread_id": th, "actor_id": "u1", "mode": "lab", "project_id": "p_chat", "app_id": "app-chat", "surface_id": "web"})
    );
    assert_eq!(d["meta"], json!({"trace_id": "req-sse"}));
}

#[tokio::test]
async fn stream_survives_kill_9_of_the_upstream_with_every_event_exactly_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().to_str().expect("utf8").to_owned();
    let bin = railgate_tests::bins::path("upstream-mock");
    let mock = Proc::spawn(&bin, &["--listen", "127.0.0.1:0", "--data-dir", &data], &[]);
    let mut s = Stack::start_with_mock(mock, "");
    let th = s.thread("t_a").await;
    let mut st = open(&s, &th, "t_a", &[]).await;
    let mock_addr = s.mock_addr();
    let r = post_json(
        &mock_addr,
        "/_mock/publish",
        &[],
        &json!({"thread_id": th, "count": 100000, "rate_per_s": 300}),
    )
    .await;
    assert_eq!(r.status, 202);
    let mut seen = take_messages(&mut st, 40).await;
    s.mock.kill9();
    s.mock = Proc::spawn(&bin, &["--listen", &mock_addr, "--data-dir", &data], &[]);
    s.publish(&th, 20).await;
    let total = get(&mock_addr, &format!("/chat/threads/{th}/messages"), &[])
        .await
        .json()
        .as_array()
        .map(Vec::len)
        .expect("list");
    seen.extend(take_messages(&mut st, total - seen.len()).await);
    assert_eq!(
        seqs(&seen),
        (1..=total as u64).collect::<Vec<_>>(),
        "every seq once, in order"
    );
    assert!(
        st.comments.iter().any(|c| c == "reconnecting"),
        "clients are kept warm while the upstream is down"
    );
    assert!(s.metric("railgate_upstream_reconnects_total{outcome=\"ok\",route=\"chat-sse\",transport=\"sse\"}").await >= 1.0);
}

#[tokio::test]
async fn reconnect_resumes_from_the_journal_then_from_the_upstream() {
    let s = Stack::start("[sse]\njournal_events = 5\n");
    let th = s.thread("t_a").await;
    let mut st = open(&s, &th, "t_a", &[]).await;
    s.publish(&th, 4).await;
    assert_eq!(seqs(&take_messages(&mut st, 4).await), vec![1, 2, 3, 4]);
    drop(st);
    s.publish(&th, 2).await;
    // Journal: seq 2 is held (the journal saw 1..4 live).
    let mut st = open(&s, &th, "t_a", &[("last-event-id", "2")]).await;
    let first = st.next_event().await.expect("resume_cursor");
    assert_eq!(
        (first.event.as_str(), first.id.clone()),
        ("resume_cursor", None)
    );
    assert_eq!(first.json(), json!({"cursor": "2", "source": "journal"}));
    assert_eq!(seqs(&take_messages(&mut st, 4).await), vec![3, 4, 5, 6]);
    drop(st);
    // Outgrow the journal (5 events), then resume from a cursor only the upstream still has.
    s.publish(&th, 10).await;
    let mut st = open(&s, &th, "t_a", &[]).await;
    s.publish(&th, 1).await;
    take_messages(&mut st, 1).await;
    drop(st);
    let tok = token("t_a", "u1", json!({}));
    let h = full_headers(&tok, "t_a");
    let mut st = SseStream::open(
        &s.addr(),
        &format!("/sse/chat/{th}?last_event_id=3"),
        &refs(&h),
    )
    .await;
    assert_eq!(st.status, 200);
    assert_eq!(
        st.next_event().await.expect("cursor").json(),
        json!({"cursor": "3", "source": "upstream"})
    );
    assert_eq!(
        seqs(&take_messages(&mut st, 14).await),
        (4..=17).collect::<Vec<_>>()
    );
    // 3 and 4 came from the journal; 5 and 6 too when the first stream's hub journaled them
    // before noticing its client had left.
    let replayed = s
        .metric("railgate_replayed_events_total{route=\"chat-sse\",source=\"journal\"}")
        .await;
    assert!(
        replayed == 2.0 || replayed == 4.0,
        "replayed from the journal: {replayed}"
    );
}

#[tokio::test]
async fn unresumable_or_malformed_cursors_are_410() {
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    s.publish(&th, 2).await;
    let tok = token("t_a", "u1", json!({}));
    let h = full_headers(&tok, "t_a");
    let long = "9".repeat(300);
    for cursor in ["99", long.as_str()] {
        let mut hh = refs(&h);
        hh.push(("last-event-id", cursor));
        let r = get(&s.addr(), &format!("/sse/chat/{th}"), &hh).await;
        railgate_tests::stack::assert_envelope(&r, 410, "chat.cursor_invalid");
    }
}

#[tokio::test]
async fn tenants_never_see_each_other_and_foreign_upstream_events_are_dropped() {
    let s = Stack::start("");
    let ta = s.thread("t_a").await;
    let tb = s.thread("t_b").await;
    let mut sa = open(&s, &ta, "t_a", &[]).await;
    let mut sb = open(&s, &tb, "t_b", &[]).await;
    let tok_a = token("t_a", "u1", json!({}));
    let h = full_headers(&tok_a, "t_a");
    let cross = get(&s.addr(), &format!("/sse/chat/{tb}"), &refs(&h)).await;
    railgate_tests::stack::assert_envelope(&cross, 403, "chat.thread_forbidden");
    s.publish(&ta, 3).await;
    s.publish(&tb, 3).await;
    let r = post_json(
        &s.mock_addr(),
        "/_mock/publish",
        &[],
        &json!({"thread_id": ta, "count": 1, "routing": {"tenant_id": "t_b"}}),
    )
    .await;
    assert_eq!(r.json()["first_seq"], 4);
    s.publish(&ta, 1).await;
    let got_a = take_messages(&mut sa, 4).await;
    assert_eq!(
        seqs(&got_a),
        vec![1, 2, 3, 5],
        "the foreign event (seq 4) never arrives"
    );
    for e in &got_a {
        assert_eq!(e.json()["routing"]["tenant_id"], "t_a");
        assert_eq!(e.json()["thread_id"], ta.as_str());
    }
    for e in take_messages(&mut sb, 3).await {
        assert_eq!(e.json()["routing"]["tenant_id"], "t_b");
        assert_eq!(e.json()["thread_id"], tb.as_str());
    }
    assert_eq!(
        s.metric(
            "railgate_isolation_violations_total{reason=\"foreign_tenant\",route=\"chat-sse\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_cut_then_resumes_without_loss_while_fast_clients_are_unaffected() {
    // Queues of 16 MiB: a fast client descheduled for a second on a busy machine is not cut;
    // a client that never reads still is (39 MB are published).
    let s = Stack::start(
        "[sse]\nclient_queue_events = 1024\nclient_queue_bytes = 16777216\n\
         journal_bytes = 67108864\njournal_events = 1000\n",
    );
    let th = s.thread("t_a").await;
    let mut slow = open(&s, &th, "t_a", &[]).await;
    let fast = open(&s, &th, "t_a", &[]).await;
    const N: usize = 600;
    let fast_task = tokio::spawn(async move {
        let mut fast = fast;
        seqs(&take_messages(&mut fast, N).await)
    });
    // ~39 MB at 125 events/s: far more than the slow client's socket buffers and queue hold,
    // slow enough for a reading client to keep up.
    let r = post_json(
        &s.mock_addr(),
        "/_mock/publish",
        &[],
        &json!({"thread_id": th, "count": N, "payload_bytes": 65536, "rate_per_s": 125}),
    )
    .await;
    assert_eq!(r.status, 202);
    assert_eq!(
        fast_task.await.expect("fast"),
        (1..=N as u64).collect::<Vec<_>>()
    );
    let mut got = Vec::new();
    let mut error = None;
    while let Some(e) = slow.next_event_within(Duration::from_secs(20)).await {
        match e.event.as_str() {
            "chat_message" => got.push(e),
            "error" => error = Some(e.json()),
            _ => {}
        }
    }
    let err = error.expect("slow consumer got an error event");
    assert_eq!(err["error"]["code"], "stream.slow_consumer");
    assert_eq!(err["error"]["retryable"], true);
    assert!(got.len() < N, "the slow client was cut before the end");
    assert_eq!(
        seqs(&got),
        (1..=got.len() as u64).collect::<Vec<_>>(),
        "nothing dropped silently before the cut"
    );
    let last = got.last().and_then(|e| e.id.clone()).expect("got some");
    let mut again = open(&s, &th, "t_a", &[("last-event-id", &last)]).await;
    assert_eq!(
        again.next_event().await.expect("cursor").json()["source"],
        "journal"
    );
    let rest = take_messages(&mut again, N - got.len()).await;
    assert_eq!(
        seqs(&rest),
        ((got.len() as u64 + 1)..=N as u64).collect::<Vec<_>>()
    );
    assert!(
        s.metric("railgate_slow_consumer_disconnects_total{route=\"chat-sse\",transport=\"sse\"}")
            .await
            >= 1.0
    );
}

/// Reads until the stream's `error` event (each within 15 s): how many came before it, and it.
async fn until_error(st: &mut SseStream) -> (usize, SseEvent) {
    let mut before = 0;
    loop {
        let ev = st
            .next_event_within(Duration::from_secs(15))
            .await
            .expect("an event, then the end");
        if ev.event == "error" {
            return (before, ev);
        }
        before += 1;
    }
}

/// A stream of thread `th` (tenant `t_a`) opened with a token that expires at `exp`.
async fn expiring_stream(s: &Stack, th: &str, exp: u64) -> SseStream {
    let tok = token("t_a", "u1", json!({ "exp": exp }));
    let h = full_headers(&tok, "t_a");
    let st = SseStream::open(&s.addr(), &format!("/sse/chat/{th}"), &refs(&h)).await;
    assert_eq!(st.status, 200);
    st
}

#[tokio::test]
async fn stream_ends_with_token_expired_at_exp() {
    let s = Stack::start("[auth]\nleeway_s = 0\n");
    let th = s.thread("t_a").await;
    let mut st = expiring_stream(&s, &th, now() + 2).await;
    let ev = st
        .next_event_within(Duration::from_secs(10))
        .await
        .expect("error event");
    assert_eq!(ev.event, "error");
    assert_eq!(ev.json()["error"]["code"], "auth.token_expired");
    assert_eq!(st.next_event().await, None, "then the stream ends");
}

/// A stream that is never quiet ends at the token's `exp` too: the expiry is checked with each
/// delivery, not only when the stream's timer is polled (it is not while events are queued).
#[tokio::test]
async fn a_busy_stream_ends_at_token_exp_all_the_same() {
    let s = Stack::start("[auth]\nleeway_s = 0\n");
    let th = s.thread("t_a").await;
    let exp = now() + 3;
    let mut st = expiring_stream(&s, &th, exp).await;
    // 100 events a second for 30 s: events keep coming well past the token's end.
    let paced = json!({"thread_id": th, "count": 3000, "rate_per_s": 100});
    let r = post_json(&s.mock_addr(), "/_mock/publish", &[], &paced).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let (messages, ev) = until_error(&mut st).await;
    assert!(now() >= exp, "ended before the token's exp");
    assert_eq!(ev.json()["error"]["code"], "auth.token_expired");
    assert!(messages >= 50, "events flowed until the end: {messages}");
    assert!(messages < 3000, "the stream ended before the events did");
    assert_eq!(st.next_event().await, None, "then the stream ends");
}

/// The keep-alive comments and the credential's end share one timer per stream: a quiet stream
/// gets its keep-alives, then ends at the token's `exp` all the same.
#[tokio::test]
async fn a_quiet_stream_gets_keep_alives_then_ends_at_token_exp() {
    let s = Stack::start("[auth]\nleeway_s = 0\n[sse]\nkeepalive_s = 1\n");
    let th = s.thread("t_a").await;
    let exp = now() + 4;
    let mut st = expiring_stream(&s, &th, exp).await;
    let ev = st
        .next_event_within(Duration::from_secs(15))
        .await
        .expect("error event");
    assert!(now() >= exp, "ended before the token's exp");
    assert_eq!(ev.event, "error");
    assert_eq!(ev.json()["error"]["code"], "auth.token_expired");
    let keep_alives = st
        .comments
        .iter()
        .filter(|c| c.trim() == "keep-alive")
        .count();
    assert!(
        keep_alives >= 2,
        "keep-alives in 4 quiet seconds at 1 s: {:?}",
        st.comments
    );
    assert_eq!(st.next_event().await, None, "then the stream ends");
}

#[tokio::test]
async fn shared_upstream_makes_one_upstream_stream_for_fifty_clients() {
    let s = Stack::start(
        "[[routes]]\nname = \"chat-sse\"\npath = \"/sse/chat/{thread_id}\"\nkind = \"sse\"\nshare_upstream = true\nrequire = [\"tenant\", \"mode\", \"project\", \"app\"]\n",
    );
    let th = s.thread("t_a").await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(open(&s, &th, "t_a", &[]).await);
    }
    let mock = s.mock_addr();
    eventually!(
        10,
        "the shared stream is open",
        get(&mock, "/_mock/stats", &[]).await.json()["streams_active"] == 1
    );
    s.publish(&th, 5).await;
    let mut tasks = Vec::new();
    for mut c in clients {
        tasks.push(tokio::spawn(async move {
            seqs(&take_messages(&mut c, 5).await)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("client"), vec![1, 2, 3, 4, 5]);
    }
    let stats = get(&mock, "/_mock/stats", &[]).await.json();
    assert_eq!(stats["sse_streams_opened"], 1, "{stats}");
    let opened = s
        .mock_requests()
        .await
        .iter()
        .filter(|r| r["path"] == format!("/sse/chat/{th}"))
        .count();
    assert_eq!(opened, 1);
}

#[tokio::test]
async fn ticket_opens_a_stream_once_and_the_grant_cookie_lets_eventsource_reconnect() {
    let s = Stack::start("[auth]\ncookie_secure = false\n");
    let th = s.thread("t_a").await;
    let t = ticket("t_a", "u1", &th, "tid-sse-1");
    let path = format!("/sse/chat/{th}?ticket={t}");
    let mut st = SseStream::open(&s.addr(), &path, &[]).await;
    assert_eq!(st.status, 200);
    let cookie = st
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("grant cookie")
        .to_owned();
    assert!(cookie.starts_with("railgate_resume=g1."), "{cookie}");
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        &format!("Path=/sse/chat/{th}"),
    ] {
        assert!(cookie.contains(attr), "{attr} missing in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "cookie_secure = false");
    s.publish(&th, 2).await;
    let got = take_messages(&mut st, 2).await;
    assert_eq!(got[0].json()["routing"]["actor_id"], "u1");
    drop(st);
    let replay = get(&s.addr(), &path, &[]).await;
    railgate_tests::stack::assert_envelope(&replay, 401, "auth.ticket_replayed");
    let grant = cookie.split(';').next().expect("pair").to_owned();
    let mut st = SseStream::open(
        &s.addr(),
        &path,
        &[("cookie", grant.as_str()), ("last-event-id", "1")],
    )
    .await;
    assert_eq!(st.status, 200, "EventSource reconnect with the grant");
    assert_eq!(st.next_event().await.expect("cursor").json()["cursor"], "1");
    assert_eq!(seqs(&take_messages(&mut st, 1).await), vec![2]);
    let other = ticket("t_a", "u1", &th, "tid-sse-2");
    let fresh = SseStream::open(
        &s.addr(),
        &format!("/sse/chat/{th}?ticket={other}"),
        &[("cookie", grant.as_str())],
    )
    .await;
    assert_eq!(
        fresh.status, 200,
        "a fresh ticket works regardless of the cookie"
    );
}

#[tokio::test]
async fn upstream_gone_past_the_deadline_ends_the_stream_with_upstream_unavailable() {
    let mut s = Stack::start(
        "[[routes]]\nname = \"chat-sse\"\npath = \"/sse/chat/{thread_id}\"\nkind = \"sse\"\nresume_deadline_s = 2\nrequire = [\"tenant\", \"mode\", \"project\", \"app\"]\n",
    );
    let th = s.thread("t_a").await;
    let mut st = open(&s, &th, "t_a", &[]).await;
    s.publish(&th, 1).await;
    take_messages(&mut st, 1).await;
    s.mock.kill9();
    let (_, ev) = until_error(&mut st).await;
    assert_eq!(ev.json()["error"]["code"], "upstream.unavailable");
    assert_eq!(st.next_event().await, None);
}

#[tokio::test]
async fn drain_ends_streams_with_gateway_draining() {
    let mut s = Stack::start("");
    let th = s.thread("t_a").await;
    let mut st = open(&s, &th, "t_a", &[]).await;
    s.publish(&th, 1).await;
    take_messages(&mut st, 1).await;
    s.gw.signal(15);
    let ev = st.next_event().await.expect("draining event");
    assert_eq!(
        (ev.event.as_str(), ev.json()["error"]["code"].clone()),
        ("error", Value::from("gateway.draining"))
    );
    assert_eq!(st.next_event().await, None);
    assert_eq!(
        s.gw.wait_exit(Duration::from_secs(15))
            .and_then(|e| e.code()),
        Some(0)
    );
}

#[tokio::test]
async fn sse_credential_and_context_failures_answer_before_the_stream() {
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    let tok = token("t_a", "u1", json!({}));
    let a = format!("Bearer {tok}");
    for (drop, code) in [
        ("x-mode", "auth.mode_missing"),
        ("x-project-id", "auth.project_missing"),
        ("x-app-id", "auth.app_missing"),
    ] {
        let mut h = vec![
            ("authorization", a.as_str()),
            ("x-tenant-id", "t_a"),
            ("x-mode", "lab"),
            ("x-project-id", "p_chat"),
            ("x-app-id", "app-chat"),
        ];
        h.retain(|(k, _)| *k != drop);
        railgate_tests::stack::assert_envelope(
            &get(&s.addr(), &format!("/sse/chat/{th}"), &h).await,
            400,
            code,
        );
    }
    let text = s.metrics().await;
    assert_eq!(metric_value(&text, "railgate_requests_total{code=\"auth.mode_missing\",route=\"chat-sse\",transport=\"sse\"}"), 1.0);
}

async fn open_as(s: &Stack, thread: &str, user: &str, extra: &[(&str, &str)]) -> SseStream {
    let tok = token("t_a", user, json!({}));
    let mut h = full_headers(&tok, "t_a");
    h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let st = SseStream::open(&s.addr(), &format!("/sse/chat/{thread}"), &refs(&h)).await;
    assert_eq!(st.status, 200, "stream refused");
    st
}

#[tokio::test]
async fn per_user_streams_get_their_own_upstream_stream_and_journal() {
    let s = Stack::start(
        "[[routes]]\nname = \"chat-sse\"\npath = \"/sse/chat/{thread_id}\"\nkind = \"sse\"\nshare_upstream = true\nstream_scope = \"user\"\nrequire = [\"tenant\", \"mode\", \"project\", \"app\"]\n",
    );
    let th = s.thread("t_a").await;
    let mut u1 = open_as(&s, &th, "u1", &[]).await;
    let mut u1b = open_as(&s, &th, "u1", &[]).await;
    let mut u2 = open_as(&s, &th, "u2", &[]).await;
    let mock = s.mock_addr();
    eventually!(
        10,
        "one upstream stream per user",
        get(&mock, "/_mock/stats", &[]).await.json()["streams_active"] == 2
    );
    s.publish(&th, 3).await;
    for c in [&mut u1, &mut u1b, &mut u2] {
        assert_eq!(seqs(&take_messages(c, 3).await), vec![1, 2, 3]);
    }
    let users: Vec<String> = s
        .mock_requests()
        .await
        .iter()
        .filter(|r| r["path"] == format!("/sse/chat/{th}"))
        .map(|r| r["headers"]["x-user-id"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(users.len(), 2, "{users:?}");
    assert!(users.contains(&"u1".to_owned()) && users.contains(&"u2".to_owned()));
    // u1's journal serves u1; another user's resume is never served from it.
    let mut again = open_as(&s, &th, "u1", &[("last-event-id", "1")]).await;
    assert_eq!(
        again.next_event().await.expect("cursor").json()["source"],
        "journal"
    );
    let mut other = open_as(&s, &th, "u3", &[("last-event-id", "1")]).await;
    assert_eq!(
        other.next_event().await.expect("cursor").json()["source"],
        "upstream"
    );
    assert_eq!(seqs(&take_messages(&mut other, 2).await), vec![2, 3]);
}

/// Keep-alive comments fill silences only: none while events come faster than `keepalive_s`,
/// then one a full interval after the last event.
#[tokio::test]
async fn keep_alive_comments_come_only_after_a_quiet_interval() {
    let s = Stack::start("[sse]\nkeepalive_s = 2\n");
    let th = s.thread("t_a").await;
    let mut st = open(&s, &th, "t_a", &[]).await;
    // 30 events at 10 per second: gaps of ~100 ms, far below the 2 s interval.
    let r = post_json(
        &s.mock_addr(),
        "/_mock/publish",
        &[],
        &json!({"thread_id": th, "count": 30, "rate_per_s": 10}),
    )
    .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let got = take_messages(&mut st, 30).await;
    let last_event = std::time::Instant::now();
    assert_eq!(seqs(&got), (1..=30).collect::<Vec<_>>());
    let text = String::from_utf8_lossy(&st.raw).into_owned();
    assert!(
        !text.contains(": keep-alive"),
        "no keep-alive while busy: {text}"
    );
    let seen = st.raw.len();
    while !String::from_utf8_lossy(&st.raw[seen..]).contains(": keep-alive\n\n") {
        let more = st.read_raw(st.raw.len() + 1, Duration::from_secs(10)).await;
        assert!(more, "no keep-alive within 10 s of silence");
    }
    assert_eq!(&st.raw[seen..], b": keep-alive\n\n");
    assert!(
        last_event.elapsed() >= Duration::from_secs(1),
        "the keep-alive came {:?} after the last event",
        last_event.elapsed()
    );
}

/// A client's departure aborts its upstream stream's connection (a reset) rather than closing
/// it: the gateway keeps no `TIME_WAIT` entry for every stream that ends, which at thousands of
/// streams a second toward one upstream made each new connect search for a free port.
#[tokio::test]
async fn a_departed_clients_upstream_stream_is_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const WAIT: Duration = Duration::from_secs(10);
    let raw = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let up = raw.local_addr().expect("addr");
    let s = Stack::start(&format!(
        "[[routes]]\nname = \"raw-sse\"\npath = \"/sse/raw/{{thread_id}}\"\nkind = \"sse\"\n\
         upstream = \"http://{up}\"\nrequire = [\"tenant\"]\n"
    ));
    let th = s.thread("t_a").await;
    let tok = token("t_a", "u1", json!({}));
    let h = full_headers(&tok, "t_a");
    let path = format!("/sse/raw/{th}");
    let upstream = async {
        let (mut conn, _) = tokio::time::timeout(WAIT, raw.accept())
            .await
            .expect("no upstream connection")
            .expect("accept");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let n = tokio::time::timeout(WAIT, conn.read(&mut byte))
                .await
                .expect("request head")
                .expect("read");
            assert_eq!(n, 1, "the request head ended early: {head:?}");
            head.push(byte[0]);
        }
        let event = format!(
            "id: 1\nevent: chat_message\ndata: {{\"type\":\"chat_message\",\"thread_id\":\"{th}\",\"seq\":1}}\n\n"
        );
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
            event.len()
        );
        conn.write_all(answer.as_bytes()).await.expect("answer");
        conn
    };
    let (addr, headers) = (s.addr(), refs(&h));
    let (mut st, mut conn) = tokio::join!(SseStream::open(&addr, &path, &headers), upstream);
    assert_eq!(st.status, 200);
    let ev = st.next_event_within(WAIT).await.expect("the event");
    assert_eq!(ev.id.as_deref(), Some("1"));
    drop(st);
    let mut rest = [0u8; 64];
    let read = tokio::time::timeout(WAIT, conn.read(&mut rest))
        .await
        .expect("the upstream connection outlived its client");
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "the upstream stream ends with a reset, not an end of stream"
    );
}
