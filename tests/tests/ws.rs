//! The WebSocket rail against real processes.

use futures_util::SinkExt;
use railgate_tests::client::{
    get, post_json, ws_connect, ws_hello, ws_next, ws_next_json, Ws, WsEvent,
};
use railgate_tests::eventually;
use railgate_tests::process::Proc;
use railgate_tests::stack::{ticket, token, Stack, ADMIN_TOKEN};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn ctx(tenant: &str) -> Value {
    json!({"tenant_id": tenant, "mode": "saas", "project_id": "p_chat", "app_id": "app-chat", "user_id": "u1", "surface_id": "web"})
}

async fn connect(s: &Stack, thread: &str, tenant: &str) -> Ws {
    let tok = token(tenant, "u1", json!({}));
    let a = format!("Bearer {tok}");
    ws_connect(
        &s.addr(),
        &format!("/ws/chat/{thread}"),
        &[("authorization", a.as_str())],
    )
    .await
    .expect("upgrade")
}

async fn open(s: &Stack, thread: &str, tenant: &str, cursor: Option<&str>) -> Ws {
    let mut ws = connect(s, thread, tenant).await;
    ws_hello(&mut ws, ctx(tenant), cursor).await;
    ws
}

/// The next chat message (skipping presence events).
async fn next_message(ws: &mut Ws) -> Value {
    loop {
        let v = ws_next_json(ws).await;
        if v["type"] != "presence" {
            return v;
        }
    }
}

async fn expect_refusal(ws: &mut Ws, code: &str, status: u16, close: u16) {
    let env = ws_next_json(ws).await;
    assert_eq!(env["error"]["code"], code, "{env}");
    assert_eq!(env["error"]["http_status"], status);
    assert_eq!(ws_next(ws).await, WsEvent::Close(close, code.into()));
}

#[tokio::test]
async fn seed_000_missing_mode_project_or_app_in_the_hello() {
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    for (field, code) in [
        ("mode", "auth.mode_missing"),
        ("project_id", "auth.project_missing"),
        ("app_id", "auth.app_missing"),
    ] {
        let mut c = ctx("t_a");
        c.as_object_mut().expect("obj").remove(field);
        let mut ws = connect(&s, &th, "t_a").await;
        ws_hello(&mut ws, c, None).await;
        expect_refusal(&mut ws, code, 400, 4003).await;
    }
}

#[tokio::test]
async fn seed_000_ticket_disagreeing_with_the_hello_is_context_mismatch() {
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    let t = ticket("t_a", "u1", &th, "tid-ws-1");
    let mut ws = ws_connect(&s.addr(), &format!("/ws/chat/{th}?ticket={t}"), &[])
        .await
        .expect("upgrade");
    let mut c = ctx("t_a");
    c["project_id"] = json!("p_other");
    ws_hello(&mut ws, c, None).await;
    expect_refusal(&mut ws, "auth.context_mismatch", 403, 4003).await;
    // A ticket carried in the hello itself works for clients that cannot set headers.
    let t2 = ticket("t_a", "u1", &th, "tid-ws-2");
    let mut ws = ws_connect(&s.addr(), &format!("/ws/chat/{th}"), &[])
        .await
        .expect("upgrade");
    let h = json!({"type": "hello", "context": {"tenant_id": "t_a"}, "ticket": t2, "last_event_id": "0"});
    ws.send(Message::text(h.to_string())).await.expect("send");
    s.publish(&th, 1).await;
    assert_eq!(next_message(&mut ws).await["routing"]["tenant_id"], "t_a");
}

#[tokio::test]
async fn seed_000_invalid_cursor_is_410_and_4003() {
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    s.publish(&th, 2).await;
    let mut ws = open(&s, &th, "t_a", Some("999")).await;
    expect_refusal(&mut ws, "chat.cursor_invalid", 410, 4003).await;
    let long = "1".repeat(300);
    let mut ws = open(&s, &th, "t_a", Some(&long)).await;
    expect_refusal(&mut ws, "chat.cursor_invalid", 410, 4003).await;
}

#[tokio::test]
async fn events_are_stamped_replayed_after_the_cursor_and_client_routing_is_overwritten() {
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    s.publish(&th, 3).await;
    let mut ws = open(&s, &th, "t_a", Some("1")).await;
    let first = next_message(&mut ws).await;
    assert_eq!(
        (first["seq"].as_u64(), first["id"].as_str()),
        (Some(2), Some("2"))
    );
    assert_eq!(
        first["routing"],
        json!({"tenant_id": "t_a", "env": "dev", "thread_id": th, "actor_id": "u1", "mode": "saas", "project_id": "p_chat", "app_id": "app-chat", "surface_id": "web"})
    );
    assert!(first["meta"]["trace_id"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    assert_eq!(next_message(&mut ws).await["seq"], 3);
    let spoof = json!({"type": "message", "text": "hi", "routing": {"tenant_id": "t_evil", "actor_id": "admin"}});
    ws.send(Message::text(spoof.to_string()))
        .await
        .expect("send");
    let echoed = next_message(&mut ws).await;
    assert_eq!(
        (echoed["seq"].as_u64(), echoed["text"].as_str()),
        (Some(4), Some("hi"))
    );
    let stored = get(
        &s.mock_addr(),
        &format!("/chat/threads/{th}/messages?after=3"),
        &[],
    )
    .await
    .json();
    assert_eq!(
        stored[0]["routing"]["tenant_id"], "t_a",
        "the upstream got the verified routing"
    );
    assert_eq!(stored[0]["routing"]["actor_id"], "u1");
    let hello_seen = s
        .mock_requests()
        .await
        .into_iter()
        .rev()
        .find(|r| r["path"] == format!("/ws/chat/{th}"))
        .expect("upgrade");
    assert_eq!(hello_seen["headers"]["x-tenant-id"], "t_a");
    assert_eq!(hello_seen["headers"]["x-user-id"], "u1");
}

#[tokio::test]
async fn foreign_upstream_messages_are_dropped_and_counted() {
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    let mut ws = open(&s, &th, "t_a", Some("0")).await;
    post_json(
        &s.mock_addr(),
        "/_mock/publish",
        &[],
        &json!({"thread_id": th, "count": 1, "routing": {"tenant_id": "t_b"}}),
    )
    .await;
    s.publish(&th, 1).await;
    assert_eq!(
        next_message(&mut ws).await["seq"],
        2,
        "seq 1 named another tenant"
    );
    assert_eq!(
        s.metric(
            "railgate_isolation_violations_total{reason=\"foreign_tenant\",route=\"chat-ws\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn presence_reaches_the_same_thread_and_tenant_only() {
    let s = Stack::start("");
    let ta = s.thread("t_a").await;
    let tb = s.thread("t_b").await;
    let mut a1 = open(&s, &ta, "t_a", None).await;
    let mut b1 = open(&s, &tb, "t_b", None).await;
    let admin = s.gw.admin();
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    eventually!(5, "a1 and b1 present", {
        get(
            &admin,
            &format!("/admin/presence/t_a/{ta}"),
            &[("authorization", bearer.as_str())],
        )
        .await
        .json()
        .as_array()
        .map(Vec::len)
            == Some(1)
            && get(
                &admin,
                &format!("/admin/presence/t_b/{tb}"),
                &[("authorization", bearer.as_str())],
            )
            .await
            .json()
            .as_array()
            .map(Vec::len)
                == Some(1)
    });
    let tok = token("t_a", "u2", json!({}));
    let a = format!("Bearer {tok}");
    let mut a2 = ws_connect(
        &s.addr(),
        &format!("/ws/chat/{ta}"),
        &[("authorization", a.as_str())],
    )
    .await
    .expect("upgrade");
    let mut c = ctx("t_a");
    c["user_id"] = json!("u2");
    ws_hello(&mut a2, c, None).await;
    // a1 learns of u2 by a join — or, when u2 came within a1's own first presence window, by
    // a1's snapshot of the others.
    let joined = ws_next_json(&mut a1).await;
    let routing = json!({"tenant_id": "t_a", "env": "dev", "thread_id": ta});
    if joined["op"] == "snapshot" {
        assert_eq!(
            joined,
            json!({"type": "presence", "op": "snapshot", "members": [{"actor_id": "u2", "surface_id": "web"}], "routing": routing})
        );
    } else {
        assert_eq!(
            joined,
            json!({"type": "presence", "op": "join", "actor_id": "u2", "surface_id": "web", "routing": routing})
        );
    }
    let listed = get(
        &admin,
        &format!("/admin/presence/t_a/{ta}"),
        &[("authorization", bearer.as_str())],
    )
    .await
    .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    drop(a2);
    let left = ws_next_json(&mut a1).await;
    assert_eq!(
        (left["op"].as_str(), left["actor_id"].as_str()),
        (Some("leave"), Some("u2"))
    );
    // b1 heard nothing: its next message is the event published to its own thread.
    let mock = s.mock_addr();
    eventually!(
        5,
        "a1 and b1 subscribed upstream",
        get(&mock, "/_mock/stats", &[]).await.json()["streams_active"] == 2
    );
    s.publish(&tb, 1).await;
    let next = ws_next_json(&mut b1).await;
    assert_eq!(
        next["type"], "chat_message",
        "no presence crossed tenants: {next}"
    );
}

#[tokio::test]
async fn kill_9_mid_session_loses_and_duplicates_nothing_in_either_direction() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().to_str().expect("utf8").to_owned();
    let bin = railgate_tests::bins::path("upstream-mock");
    let mock = Proc::spawn(&bin, &["--listen", "127.0.0.1:0", "--data-dir", &data], &[]);
    let mut s = Stack::start_with_mock(mock, "");
    let th = s.thread("t_a").await;
    let mut ws = open(&s, &th, "t_a", Some("0")).await;
    let mock_addr = s.mock_addr();
    let mut seen: Vec<u64> = Vec::new();
    let mut sent = 0;
    // Upstream publishes while the client talks; each client message waits for its echo.
    post_json(
        &mock_addr,
        "/_mock/publish",
        &[],
        &json!({"thread_id": th, "count": 100000, "rate_per_s": 100}),
    )
    .await;
    for round in 0..30 {
        if round == 10 {
            s.mock.kill9();
            // Sent while the upstream is down: held, delivered after the reconnect.
            for k in 0..3 {
                sent += 1;
                ws.send(Message::text(
                    json!({"type": "message", "text": format!("held-{k}")}).to_string(),
                ))
                .await
                .expect("send");
            }
            s.mock = Proc::spawn(&bin, &["--listen", &mock_addr, "--data-dir", &data], &[]);
            post_json(
                &mock_addr,
                "/_mock/publish",
                &[],
                &json!({"thread_id": th, "count": 100000, "rate_per_s": 100}),
            )
            .await;
        }
        sent += 1;
        let text = format!("client-{round}");
        ws.send(Message::text(
            json!({"type": "message", "text": text}).to_string(),
        ))
        .await
        .expect("send");
        loop {
            let m = next_message(&mut ws).await;
            seen.push(m["seq"].as_u64().expect("seq"));
            if m["text"] == text.as_str() {
                break;
            }
        }
    }
    let stored = get(&mock_addr, &format!("/chat/threads/{th}/messages"), &[])
        .await
        .json();
    let stored = stored.as_array().expect("list");
    let last_seen = *seen.last().expect("some");
    assert_eq!(
        seen,
        (1..=last_seen).collect::<Vec<_>>(),
        "upstream → client: every seq once, in order"
    );
    let client_texts: Vec<&str> = stored
        .iter()
        .filter_map(|m| m["text"].as_str())
        .filter(|t| t.starts_with("client-") || t.starts_with("held-"))
        .collect();
    let mut expected: Vec<String> = (0..10).map(|r| format!("client-{r}")).collect();
    expected.extend((0..3).map(|k| format!("held-{k}")));
    expected.extend((10..30).map(|r| format!("client-{r}")));
    assert_eq!(
        client_texts, expected,
        "client → upstream: every message once, in order"
    );
    assert_eq!(client_texts.len(), sent);
}

#[tokio::test]
async fn oversized_messages_close_1009() {
    let s = Stack::start("[ws]\nmax_message_bytes = 1024\n");
    let th = s.thread("t_a").await;
    let mut ws = open(&s, &th, "t_a", None).await;
    ws.send(Message::text("x".repeat(4096)))
        .await
        .expect("send");
    expect_refusal(&mut ws, "request.too_large", 413, 1009).await;
}

/// RFC 6455 §7.4.1: invalid UTF-8 → 1007, a protocol violation → 1002, and a client's own
/// close frame is answered with the same code and reason.
#[tokio::test]
async fn bad_frames_get_their_rfc_close_codes_and_a_client_close_is_echoed() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let s = Stack::start("");
    let th = s.thread("t_a").await;

    let mut ws = open(&s, &th, "t_a", None).await;
    let invalid = Frame::message(vec![b'a', 0xff, 0xfe], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(invalid)).await.expect("send");
    assert_eq!(
        ws_next(&mut ws).await,
        WsEvent::Close(1007, "invalid UTF-8 in a text message".into())
    );

    let mut ws = open(&s, &th, "t_a", None).await;
    let mut reserved = Frame::message(b"x".to_vec(), OpCode::Data(Data::Text), true);
    reserved.header_mut().rsv1 = true;
    ws.send(Message::Frame(reserved)).await.expect("send");
    assert_eq!(
        ws_next(&mut ws).await,
        WsEvent::Close(1002, "protocol error".into())
    );

    let mut ws = open(&s, &th, "t_a", None).await;
    let bye = CloseFrame {
        code: 4321.into(),
        reason: "bye".into(),
    };
    ws.send(Message::Close(Some(bye))).await.expect("send");
    assert_eq!(ws_next(&mut ws).await, WsEvent::Close(4321, "bye".into()));
    assert_eq!(ws_next(&mut ws).await, WsEvent::Ended);
}

#[tokio::test]
async fn origins_credentials_and_headers_are_checked_before_the_upgrade() {
    let s = Stack::start(
        "[[routes]]\nname = \"chat-ws\"\npath = \"/ws/chat/{thread_id}\"\nkind = \"ws\"\nallowed_origins = [\"https://app.example.com\"]\nrequire = [\"tenant\", \"mode\", \"project\", \"app\"]\n",
    );
    let th = s.thread("t_a").await;
    let tok = token("t_a", "u1", json!({}));
    let a = format!("Bearer {tok}");
    let path = format!("/ws/chat/{th}");
    for origin in [
        "null",
        "https://app.example.com.evil.net",
        "http://app.example.com",
    ] {
        let (status, body) = ws_connect(
            &s.addr(),
            &path,
            &[("authorization", a.as_str()), ("origin", origin)],
        )
        .await
        .expect_err("refused");
        assert_eq!(status, 403, "{origin}");
        let v: Value = serde_json::from_slice(&body).expect("envelope");
        assert_eq!(v["error"]["code"], "request.origin_forbidden");
    }
    let (status, body) = ws_connect(
        &s.addr(),
        &path,
        &[
            ("authorization", "Bearer nope"),
            ("origin", "https://app.example.com"),
        ],
    )
    .await
    .expect_err("refused");
    assert_eq!(status, 401);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("json")["error"]["code"],
        "auth.token_invalid"
    );
    let (status, _) = ws_connect(
        &s.addr(),
        &path,
        &[
            ("authorization", a.as_str()),
            ("origin", "https://app.example.com"),
            ("x-tenant-id", "t_b"),
        ],
    )
    .await
    .expect_err("refused");
    assert_eq!(status, 403, "tenant mismatch found before the 101");
    let tb = token("t_b", "u9", json!({}));
    let ab = format!("Bearer {tb}");
    let (status, body) = ws_connect(
        &s.addr(),
        &path,
        &[
            ("authorization", ab.as_str()),
            ("origin", "https://app.example.com"),
            ("x-tenant-id", "t_b"),
        ],
    )
    .await
    .expect_err("refused");
    assert_eq!(status, 403);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("json")["error"]["code"],
        "chat.thread_forbidden"
    );
    assert!(ws_connect(
        &s.addr(),
        &path,
        &[
            ("authorization", a.as_str()),
            ("origin", "https://app.example.com")
        ]
    )
    .await
    .is_ok());
}

#[tokio::test]
async fn no_hello_in_time_is_token_missing() {
    let s = Stack::start("[ws]\nhello_timeout_s = 1\n");
    let th = s.thread("t_a").await;
    let mut ws = connect(&s, &th, "t_a").await;
    expect_refusal(&mut ws, "auth.token_missing", 401, 4003).await;
    let mut ws = connect(&s, &th, "t_a").await;
    ws.send(Message::text("{\"type\":\"message\"}"))
        .await
        .expect("send");
    expect_refusal(&mut ws, "request.header_invalid", 400, 4003).await;
}

#[tokio::test]
async fn upstream_gone_past_the_deadline_is_1011_and_drain_is_1001() {
    let mut s = Stack::start(
        "[[routes]]\nname = \"chat-ws\"\npath = \"/ws/chat/{thread_id}\"\nkind = \"ws\"\nresume_deadline_s = 2\nrequire = [\"tenant\", \"mode\", \"project\", \"app\"]\n",
    );
    let th = s.thread("t_a").await;
    let mut ws = open(&s, &th, "t_a", Some("0")).await;
    s.publish(&th, 1).await;
    assert_eq!(next_message(&mut ws).await["seq"], 1);
    let mut other = open(&s, &th, "t_a", None).await;
    s.mock.kill9();
    let env = loop {
        let v = ws_next_json(&mut ws).await;
        if v.get("error").is_some() {
            break v;
        }
    };
    assert_eq!(env["error"]["code"], "upstream.unavailable");
    assert_eq!(
        ws_next(&mut ws).await,
        WsEvent::Close(1011, "upstream.unavailable".into())
    );
    drop(other.close(None).await);
    let mut s2 = Stack::start("");
    let th2 = s2.thread("t_a").await;
    let mut ws2 = open(&s2, &th2, "t_a", Some("0")).await;
    s2.publish(&th2, 1).await;
    assert_eq!(next_message(&mut ws2).await["seq"], 1);
    s2.gw.signal(15);
    expect_refusal(&mut ws2, "gateway.draining", 503, 1001).await;
    assert_eq!(
        s2.gw
            .wait_exit(Duration::from_secs(15))
            .and_then(|e| e.code()),
        Some(0)
    );
}

#[tokio::test]
async fn hello_consume_mode_passes_the_cursor_as_a_query_parameter() {
    let s = Stack::start(
        "[[routes]]\nname = \"chat-ws\"\npath = \"/ws/chat/{thread_id}\"\nkind = \"ws\"\nhello = \"consume\"\nrequire = [\"tenant\", \"mode\", \"project\", \"app\"]\n",
    );
    let th = s.thread("t_a").await;
    s.publish(&th, 3).await;
    let mut ws = open(&s, &th, "t_a", Some("2")).await;
    assert_eq!(next_message(&mut ws).await["seq"], 3);
    let up = s
        .mock_requests()
        .await
        .into_iter()
        .rev()
        .find(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.starts_with(&format!("/ws/chat/{th}")))
        })
        .expect("upgrade");
    assert_eq!(up["path"], format!("/ws/chat/{th}?last_event_id=2"));
}

/// Pings every 200 ms until a text message (the refusal envelope) arrives; `None` if none does
/// within `limit`.
async fn ping_until_refused(ws: &mut Ws, limit: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        let _ = ws.send(Message::Ping(Default::default())).await;
        let next_ping = tokio::time::Instant::now() + Duration::from_millis(200);
        // Pongs are read and ignored until the next ping is due.
        while let Ok(msg) =
            tokio::time::timeout_at(next_ping, futures_util::StreamExt::next(ws)).await
        {
            match msg {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).ok(),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    }
    None
}

#[tokio::test]
async fn pings_before_the_hello_neither_extend_its_deadline_nor_escape_the_flood_limit() {
    let s = Stack::start("[ws]\nhello_timeout_s = 1\n");
    let th = s.thread("t_a").await;
    let mut ws = connect(&s, &th, "t_a").await;
    let env = ping_until_refused(&mut ws, Duration::from_secs(10))
        .await
        .expect("refused at the hello deadline although the client kept pinging");
    assert_eq!(env["error"]["code"], "auth.token_missing");
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    let mut ws = connect(&s, &th, "t_a").await;
    // One over the limit (100 in 10 s): nothing is left unread when the gateway closes, so the
    // close is a FIN after the refusal, never a reset that could swallow it.
    for _ in 0..101 {
        ws.send(Message::Ping(Default::default()))
            .await
            .expect("ping");
    }
    expect_refusal(&mut ws, "rate.limited", 429, 1013).await;
}

#[tokio::test]
async fn messages_held_while_the_upstream_is_down_are_bounded_by_bytes() {
    let mut s = Stack::start("[ws]\nheld_bytes = 1000\n");
    let th = s.thread("t_a").await;
    let mut ws = open(&s, &th, "t_a", Some("0")).await;
    s.publish(&th, 1).await;
    assert_eq!(
        next_message(&mut ws).await["seq"],
        1,
        "admitted and relaying"
    );
    s.mock.kill9();
    eventually!(
        10,
        "the gateway sees the upstream down",
        s.metric("railgate_upstream_reconnects_total{outcome=\"failed\",route=\"chat-ws\",transport=\"ws\"}")
            .await
            >= 1.0
    );
    let big = json!({"type": "message", "text": "x".repeat(600)}).to_string();
    ws.send(Message::text(big.clone()))
        .await
        .expect("first: held");
    ws.send(Message::text(big))
        .await
        .expect("second: over 1,000 bytes held");
    expect_refusal(&mut ws, "upstream.unavailable", 503, 1011).await;
}

/// One member's view of a thread's presence, from the messages it got.
#[derive(Default)]
struct View {
    members: Vec<String>,
    messages: usize,
}

impl View {
    fn apply(&mut self, v: &Value) {
        let actor = |m: &Value| m["actor_id"].as_str().unwrap_or_default().to_owned();
        self.messages += 1;
        match v["op"].as_str() {
            Some("snapshot") => {
                self.members = v["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(actor)
                    .collect()
            }
            Some("join") => self.members.push(actor(v)),
            Some("leave") => self.remove(&actor(v)),
            Some("batch") => {
                for m in v["joined"].as_array().into_iter().flatten() {
                    self.members.push(actor(m));
                }
                for m in v["left"].as_array().into_iter().flatten() {
                    self.remove(&actor(m));
                }
            }
            other => panic!("unknown presence op {other:?}: {v}"),
        }
    }

    fn remove(&mut self, actor: &str) {
        if let Some(i) = self.members.iter().position(|m| m == actor) {
            self.members.remove(i);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_of_300_members_joining_in_waves_is_coalesced_and_every_view_ends_right() {
    const N: usize = 300;
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    let views: Vec<std::sync::Arc<std::sync::Mutex<View>>> =
        (0..N).map(|_| Default::default()).collect();
    let mut tasks = Vec::new();
    for wave in 0..N / 10 {
        for k in 0..10 {
            let i = wave * 10 + k;
            let tok = format!("Bearer {}", token("t_a", &format!("u{i}"), json!({})));
            let mut ws = ws_connect(
                &s.addr(),
                &format!("/ws/chat/{th}"),
                &[("authorization", tok.as_str())],
            )
            .await
            .expect("upgrade");
            let c = json!({"tenant_id": "t_a", "mode": "lab", "project_id": "p_chat", "app_id": "app-chat"});
            ws_hello(&mut ws, c, None).await;
            let view = views[i].clone();
            tasks.push(tokio::spawn(async move {
                while let Some(Ok(Message::Text(t))) = futures_util::StreamExt::next(&mut ws).await
                {
                    let v: Value = serde_json::from_str(t.as_str()).expect("json");
                    if v["type"] == "presence" {
                        view.lock().expect("view").apply(&v);
                    }
                }
            }));
        }
        // Waves 150 ms apart (pacing, as in the field report).
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    eventually!(30, "every member sees the 299 others", {
        views
            .iter()
            .all(|v| v.lock().expect("view").members.len() == N - 1)
    });
    let total: usize = views.iter().map(|v| v.lock().expect("view").messages).sum();
    eprintln!(
        "presence: {total} messages for {N} members (n²/2 = {})",
        N * N / 2
    );
    for (i, v) in views.iter().enumerate() {
        let mut seen = v.lock().expect("view").members.clone();
        seen.sort();
        let mut want: Vec<String> = (0..N)
            .filter(|j| *j != i)
            .map(|j| format!("u{j}"))
            .collect();
        want.sort();
        assert_eq!(seen, want, "member u{i}'s view");
    }
    assert!(
        total < N * N / 4,
        "{total} presence messages for {N} members"
    );
    for t in tasks {
        t.abort();
    }
}

#[tokio::test]
async fn a_message_longer_than_one_frame_arrives_whole_stamped_and_in_order() {
    // Messages over 8 KiB go to the client as a first frame and continuations.
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    let mut ws = open(&s, &th, "t_a", Some("0")).await;
    let r = post_json(
        &s.mock_addr(),
        "/_mock/publish",
        &[],
        &json!({"thread_id": th, "count": 3, "payload_bytes": 40000}),
    )
    .await;
    assert_eq!(r.status, 200);
    for seq in 1..=3u64 {
        let m = next_message(&mut ws).await;
        assert_eq!(m["seq"], seq);
        let text = m["text"].as_str().expect("text");
        let head = format!("message {}", seq - 1);
        assert!(text.starts_with(&head), "{}", &text[..40]);
        assert_eq!(text.len(), 40000);
        assert!(text[head.len()..].bytes().all(|b| b == b'x'));
        assert_eq!(m["routing"]["tenant_id"], "t_a");
    }
}
