//! Reloading the config file without a restart, against the binary: under load (SSE streams
//! and WebSocket sessions receiving a steady flow), `POST /admin/reload` and `SIGHUP` put new
//! routes and limits in force at once, and every open stream gets every event exactly once; a
//! bad file changes nothing and says why.

use railgate_tests::client::{
    get, post_json, request, ws_connect, ws_next_json, ws_open, SseStream,
};
use railgate_tests::eventually;
use railgate_tests::stack::{full_headers, refs, token, Stack, ADMIN_TOKEN};
use serde_json::{json, Value};
use std::time::Duration;

const EVENTS: u64 = 300;

/// The default routes, plus `extra`.
fn config_with(extra: &str) -> String {
    let defaults = include_str!("../../gateway/src/config/defaults.toml");
    let routes = &defaults[defaults.find("[[routes]]").expect("routes")..];
    format!("{routes}\n{extra}")
}

const V2_ROUTE: &str = "[[routes]]\nname = \"v2-http\"\npath = \"/v2/threads/{thread_id}/**\"\n\
     kind = \"http\"\nupstream_path = \"/chat/threads/{thread_id}/**\"\nrequire = [\"tenant\"]\n";

/// Writes the stack's config file: its listeners and upstream, then `body`.
fn write_config(s: &Stack, body: &str) {
    let path = s.dir.path().join("railgate.toml");
    let current = std::fs::read_to_string(&path).expect("read");
    let head: String = current
        .lines()
        .take_while(|l| !l.starts_with('['))
        .filter(|l| {
            l.starts_with("listen") || l.starts_with("admin_listen") || l.starts_with("upstream")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, format!("{head}{body}")).expect("write");
}

async fn admin_reload(s: &Stack) -> (u16, Value) {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let r = request(
        "POST",
        &s.gw.admin(),
        "/admin/reload",
        &[("authorization", bearer.as_str())],
        Vec::new(),
    )
    .await;
    (r.status, r.json())
}

async fn get_v2(s: &Stack, th: &str, tok: &str) -> u16 {
    let bearer = format!("Bearer {tok}");
    get(
        &s.addr(),
        &format!("/v2/threads/{th}/messages"),
        &[("authorization", bearer.as_str()), ("x-tenant-id", "t_a")],
    )
    .await
    .status
}

/// Reads chat messages until `n` arrived; fails on an error event.
async fn sse_seqs(mut st: SseStream, n: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    while (seqs.len() as u64) < n {
        let ev = st
            .next_event_within(Duration::from_secs(20))
            .await
            .expect("an event");
        assert_ne!(ev.event, "error", "{}", ev.data);
        if ev.event == "chat_message" {
            seqs.push(ev.json()["seq"].as_u64().expect("seq"));
        }
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_puts_new_routes_and_limits_in_force_and_drops_nothing() {
    let s = Stack::start("");
    write_config(&s, &config_with(""));
    let th = s.thread("t_a").await;
    let tok = token("t_a", "u1", json!({}));
    let h = full_headers(&tok, "t_a");
    let mut readers = Vec::new();
    // Every stream reads from the thread's start (cursor 0), so none misses an event published
    // before it was attached.
    let mut h = h;
    h.push(("last-event-id".into(), "0".into()));
    for _ in 0..10 {
        let st = SseStream::open(&s.addr(), &format!("/sse/chat/{th}"), &refs(&h)).await;
        assert_eq!(st.status, 200);
        readers.push(tokio::spawn(sse_seqs(st, EVENTS)));
    }
    for _ in 0..3 {
        let mut ws = ws_open(&s.addr(), &format!("/ws/chat/{th}"), &tok, "t_a", Some("0")).await;
        readers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            while (seqs.len() as u64) < EVENTS {
                let v = ws_next_json(&mut ws).await;
                assert!(v.get("error").is_none(), "{v}");
                if let Some(seq) = v["seq"].as_u64() {
                    seqs.push(seq);
                }
            }
            seqs
        }));
    }
    assert_eq!(get_v2(&s, &th, &tok).await, 404, "no such route yet");
    let r = post_json(
        &s.mock_addr(),
        "/_mock/publish",
        &[],
        &json!({"thread_id": th, "count": EVENTS, "rate_per_s": 100}),
    )
    .await;
    assert_eq!(r.status, 202);
    let forwarded = "railgate_events_forwarded_total{route=\"chat-sse\",transport=\"sse\"}";
    eventually!(20, "the flow is under way", {
        s.metric(forwarded).await >= 100.0
    });
    write_config(
        &s,
        &format!("{}[limits]\nmax_body_bytes = 64\n", config_with(V2_ROUTE)),
    );
    let (status, body) = admin_reload(&s).await;
    assert_eq!((status, &body["reloaded"]), (200, &json!(true)), "{body}");
    assert_eq!(body["routes"], 5);
    assert_eq!(body["restart_needed"], json!([]));
    assert_eq!(get_v2(&s, &th, &tok).await, 200, "the new route at once");
    let bearer = format!("Bearer {tok}");
    let big = request(
        "POST",
        &s.addr(),
        &format!("/chat/threads/{th}/messages"),
        &[
            ("authorization", bearer.as_str()),
            ("x-tenant-id", "t_a"),
            ("content-type", "application/json"),
        ],
        json!({"text": "x".repeat(100)}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(big.status, 413, "the new body limit at once");
    // SIGHUP reads the same file again: nothing changes, nothing breaks.
    s.gw.signal(1);
    eventually!(10, "the SIGHUP reload is logged", {
        s.gw.logs()
            .iter()
            .any(|l| l.contains("configuration reloaded") && l.contains("SIGHUP"))
    });
    for r in readers {
        assert_eq!(
            r.await.expect("reader"),
            (1..=EVENTS).collect::<Vec<_>>(),
            "every event once, in order, across the reloads"
        );
    }
    assert_eq!(get_v2(&s, &th, &tok).await, 200);
}

#[tokio::test]
async fn a_bad_file_changes_nothing_and_says_why() {
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    let tok = token("t_a", "u1", json!({}));
    write_config(
        &s,
        &format!(
            "{}[sse]\nkeepalive = 3\n[limits]\nmax_header_bytes = 5\n",
            config_with(V2_ROUTE)
        ),
    );
    let (status, body) = admin_reload(&s).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["reloaded"], false);
    assert_eq!(
        body["problems"],
        json!([
            "limits.max_header_bytes: must be at least 1024",
            "sse.keepalive: unknown key (did you mean `keepalive_s`?)"
        ])
    );
    assert_eq!(get_v2(&s, &th, &tok).await, 404, "the old routes stay");
    s.gw.signal(1);
    eventually!(10, "the refused SIGHUP reload is logged", {
        s.gw.logs()
            .iter()
            .any(|l| l.contains("configuration not reloaded") && l.contains("max_header_bytes"))
    });
    let bearer = format!("Bearer {tok}");
    let r = get(
        &s.addr(),
        &format!("/chat/threads/{th}/messages"),
        &[("authorization", bearer.as_str()), ("x-tenant-id", "t_a")],
    )
    .await;
    assert_eq!(r.status, 200, "still serving on the old configuration");
    // A listener change is applied only by a restart, and the answer says so.
    write_config(&s, &config_with(V2_ROUTE));
    let path = s.dir.path().join("railgate.toml");
    let moved: String = std::fs::read_to_string(&path)
        .expect("read")
        .lines()
        .map(|l| match l.starts_with("admin_listen") {
            true => "admin_listen = \"127.0.0.1:1\"\n".to_owned(),
            false => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&path, moved).expect("write");
    let (status, body) = admin_reload(&s).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["restart_needed"], json!(["admin_listen"]));
    assert_eq!(get_v2(&s, &th, &tok).await, 200);
}

#[tokio::test]
async fn a_tenants_flags_switch_routes_off_and_a_reload_switches_them_on() {
    let s = Stack::start("");
    write_config(
        &s,
        &format!(
            "{}[tenants.\"t_b\"]\ndisabled_routes = [\"chat-sse\", \"chat-ws\"]\n",
            config_with("")
        ),
    );
    assert_eq!(admin_reload(&s).await.0, 200);
    let tb = s.thread("t_b").await;
    let hb = full_headers(&token("t_b", "u2", json!({})), "t_b");
    let refused = SseStream::open(&s.addr(), &format!("/sse/chat/{tb}"), &refs(&hb)).await;
    assert_eq!(refused.status, 403);
    let env = refused.body_json().await;
    assert_eq!(env["error"]["code"], "feature.disabled");
    assert_eq!(
        env["error"]["message"],
        "route chat-sse is switched off for this tenant"
    );
    let bearer = format!("Bearer {}", token("t_b", "u2", json!({})));
    let ws = ws_connect(
        &s.addr(),
        &format!("/ws/chat/{tb}"),
        &[("authorization", bearer.as_str()), ("x-tenant-id", "t_b")],
    )
    .await;
    assert_eq!(ws.err().map(|(status, _)| status), Some(403), "no upgrade");
    // Other tenants and other routes are not affected.
    let r = get(
        &s.addr(),
        &format!("/chat/threads/{tb}/messages"),
        &[("authorization", bearer.as_str()), ("x-tenant-id", "t_b")],
    )
    .await;
    assert_eq!(r.status, 200);
    let ta = s.thread("t_a").await;
    let ha = full_headers(&token("t_a", "u1", json!({})), "t_a");
    let ok = SseStream::open(&s.addr(), &format!("/sse/chat/{ta}"), &refs(&ha)).await;
    assert_eq!(ok.status, 200);
    // Switched on again by a reload.
    write_config(&s, &config_with(""));
    assert_eq!(admin_reload(&s).await.0, 200);
    let back = SseStream::open(&s.addr(), &format!("/sse/chat/{tb}"), &refs(&hb)).await;
    assert_eq!(back.status, 200);
    // A flag naming no route is a configuration problem.
    write_config(
        &s,
        &format!(
            "{}[tenants.\"t_b\"]\ndisabled_routes = [\"gestures\"]\n",
            config_with("")
        ),
    );
    let (status, body) = admin_reload(&s).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["problems"],
        json!(["tenants.\"t_b\".disabled_routes[0]: \"gestures\" is not a route name"])
    );
}
