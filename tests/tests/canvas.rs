//! The canvas rail against the real binaries, with deploy/examples/railgate.canvas.toml's routes:
//! canvases as owned resources of their own kind, isolation on every channel and routing key,
//! durable commits beside ephemeral gestures, tenant flags.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use railgate_tests::client::{get, post_json, SseEvent, SseStream};
use railgate_tests::eventually;
use railgate_tests::stack::{assert_envelope, full_headers, refs, token, Stack};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// The example's routes, with `replace` applied (pairs of text and replacement).
fn routes(replace: &[(&str, &str)]) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/railgate.canvas.toml"
    );
    let mut text = std::fs::read_to_string(path).expect("example");
    for (from, to) in replace {
        assert!(text.contains(from), "{from} in the example");
        text = text.replace(from, to);
    }
    text
}

/// A canvas made on the mock directly, owned by `tenant` (env dev, project p_chat).
async fn canvas(s: &Stack, tenant: &str) -> String {
    canvas_with(s, tenant, json!({"title": "c"})).await
}

/// A canvas made on the mock from `body` (`title`, `disabled_routes`).
async fn canvas_with(s: &Stack, tenant: &str, body: Value) -> String {
    let headers = [
        ("x-tenant-id", tenant),
        ("x-env", "dev"),
        ("x-project-id", "p_chat"),
    ];
    let r = post_json(&s.mock_addr(), "/canvas/canvases", &headers, &body).await;
    assert_eq!(r.status, 201);
    r.json()["id"].as_str().expect("id").to_owned()
}

/// `GET path` on the gateway `addr` as `t_a`'s user `u1`, with the chat context headers.
async fn get_as_t_a(addr: &str, path: &str) -> railgate_tests::client::HttpResponse {
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
    get(addr, path, &refs(&h)).await
}

/// Posts to a canvas channel on the mock (what the canvas backend would publish).
async fn post(s: &Stack, cv: &str, channel: &str, body: Value) {
    let r = post_json(
        &s.mock_addr(),
        &format!("/canvas/canvases/{cv}/{channel}"),
        &[],
        &body,
    )
    .await;
    assert!(matches!(r.status, 201 | 202), "{}", r.json());
}

async fn mock_active(s: &Stack) -> u64 {
    get(&s.mock_addr(), "/_mock/stats", &[]).await.json()["streams_active"]
        .as_u64()
        .unwrap_or(0)
}

async fn open(s: &Stack, tenant: &str, path: &str, extra: &[(&str, &str)]) -> SseStream {
    let mut h = full_headers(&token(tenant, "u1", json!({})), tenant);
    h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let st = SseStream::open(&s.addr(), path, &refs(&h)).await;
    assert_eq!(st.status, 200, "{path}");
    st
}

fn summary(ev: &SseEvent) -> (String, Option<String>, Value, Value) {
    let d = ev.json();
    (
        ev.event.clone(),
        ev.id.clone(),
        d["routing"]["canvas_id"].clone(),
        d["actor_id"].clone(),
    )
}

#[tokio::test]
async fn canvases_never_see_each_others_events_on_any_channel_even_when_the_upstream_says_so() {
    let s = Stack::start(&routes(&[]));
    let (a1, a2, b1) = (
        canvas(&s, "t_a").await,
        canvas(&s, "t_a").await,
        canvas(&s, "t_b").await,
    );
    let owners = [(&a1, "t_a"), (&a2, "t_a"), (&b1, "t_b")];
    let mut streams = Vec::new();
    for (cv, tenant) in owners {
        for ch in ["commits", "artifacts", "gestures"] {
            streams.push(open(&s, tenant, &format!("/sse/canvas/{cv}/{ch}"), &[]).await);
        }
    }
    eventually!(10, "every upstream stream is subscribed", {
        mock_active(&s).await == 9
    });
    // Per canvas and channel: an own event, one naming another canvas, one naming another
    // tenant, one naming a panel (the streams named none: not their boundary), an own event.
    for (cv, owner) in owners {
        let other = if cv == &a1 { &a2 } else { &a1 };
        let stranger = if owner == "t_a" { "t_b" } else { "t_a" };
        for ch in ["commits", "artifacts", "gestures"] {
            for (actor, routing) in [
                ("own-1", Value::Null),
                ("forged-canvas", json!({"canvas_id": other})),
                (
                    "forged-tenant",
                    json!({"tenant_id": stranger, "canvas_id": cv}),
                ),
                ("panel", json!({"canvas_id": cv, "panel_id": "p9"})),
                ("own-2", Value::Null),
            ] {
                let mut body = json!({"actor_id": actor, "op": {"n": 1}, "uri": "u"});
                if !routing.is_null() {
                    body["routing"] = routing;
                }
                post(&s, cv, ch, body).await;
            }
        }
    }
    let mut i = 0;
    for (cv, _) in owners {
        for (ch, name, ids) in [
            ("commits", "commit", [Some("1"), Some("4"), Some("5")]),
            ("artifacts", "artifact", [Some("1"), Some("4"), Some("5")]),
            ("gestures", "gesture", [None, None, None]),
        ] {
            let got: Vec<_> = streams[i].take(3).await.iter().map(summary).collect();
            let want: Vec<_> = ["own-1", "panel", "own-2"]
                .iter()
                .zip(ids)
                .map(|(actor, id)| {
                    (
                        name.to_owned(),
                        id.map(str::to_owned),
                        json!(cv),
                        json!(actor),
                    )
                })
                .collect();
            assert_eq!(got, want, "{cv} {ch}");
            i += 1;
        }
    }
    // Nothing else arrives on any stream: a marker posted last is each one's next event.
    for (cv, _) in owners {
        post(&s, cv, "commits", json!({"actor_id": "marker"})).await;
    }
    for (j, st) in streams.iter_mut().enumerate().filter(|(j, _)| j % 3 == 0) {
        let next = st.next_event().await.expect("marker");
        assert_eq!(summary(&next).3, json!("marker"), "stream {j}");
    }
    // Each route: one forged canvas and one forged tenant per canvas (the streams of one
    // route share nothing, so each canvas's drop is counted once).
    for route in ["canvas-commits", "canvas-artifacts", "canvas-gestures"] {
        for reason in ["foreign_scope", "foreign_tenant"] {
            let name = format!(
                "railgate_isolation_violations_total{{reason=\"{reason}\",route=\"{route}\"}}"
            );
            assert_eq!(s.metric(&name).await, 3.0, "{name}");
        }
    }
}

#[tokio::test]
async fn a_canvas_of_another_tenant_is_403_or_404_when_hidden_and_asked_for_by_kind() {
    let s = Stack::start(&routes(&[]));
    let b1 = canvas(&s, "t_b").await;
    let r = get_as_t_a(&s.addr(), &format!("/sse/canvas/{b1}/commits")).await;
    assert_envelope(&r, 403, "chat.thread_forbidden");
    assert_eq!(
        r.json()["error"]["message"],
        format!("canvas {b1} belongs to another tenant")
    );
    let r = get_as_t_a(&s.addr(), "/sse/canvas/cv_nope/commits").await;
    assert_envelope(&r, 404, "chat.thread_not_found");
    let asked: Vec<String> = get(&s.mock_addr(), "/_mock/requests", &[])
        .await
        .json()
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(|r| r["path"].as_str().map(str::to_owned))
        .filter(|p| p.starts_with("/registry/"))
        .collect();
    assert_eq!(
        asked,
        [
            format!("/registry/canvases/{b1}"),
            "/registry/canvases/cv_nope".to_owned()
        ]
    );

    let hidden = Stack::start(&routes(&[(
        "name = \"canvas-commits\"",
        "name = \"canvas-commits\"\nhide_foreign_threads = true",
    )]));
    let b1 = canvas(&hidden, "t_b").await;
    let r = get_as_t_a(&hidden.addr(), &format!("/sse/canvas/{b1}/commits")).await;
    assert_envelope(&r, 404, "chat.thread_not_found");
}

#[tokio::test]
async fn a_tenant_with_gestures_off_is_refused_and_keeps_its_commits() {
    let s = Stack::start(&format!(
        "[tenants.\"t_a\"]\ndisabled_routes = [\"canvas-gestures\"]\n{}",
        routes(&[])
    ));
    let a1 = canvas(&s, "t_a").await;
    let r = get_as_t_a(&s.addr(), &format!("/sse/canvas/{a1}/gestures")).await;
    assert_envelope(&r, 403, "feature.disabled");
    let mut commits = open(&s, "t_a", &format!("/sse/canvas/{a1}/commits"), &[]).await;
    eventually!(10, "subscribed", mock_active(&s).await == 1);
    post(&s, &a1, "commits", json!({"actor_id": "u1"})).await;
    assert_eq!(
        commits.next_event().await.expect("commit").id.as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn a_late_joiner_gets_commits_replayed_but_no_stale_gestures() {
    let s = Stack::start(&routes(&[]));
    let a1 = canvas(&s, "t_a").await;
    let mut first_c = open(&s, "t_a", &format!("/sse/canvas/{a1}/commits"), &[]).await;
    let mut first_g = open(&s, "t_a", &format!("/sse/canvas/{a1}/gestures"), &[]).await;
    eventually!(10, "subscribed", mock_active(&s).await == 2);
    for n in 1..=3 {
        post(
            &s,
            &a1,
            "commits",
            json!({"actor_id": "u1", "op": {"n": n}}),
        )
        .await;
        post(&s, &a1, "gestures", json!({"actor_id": format!("g{n}")})).await;
    }
    assert_eq!(first_c.take(3).await.len(), 3);
    assert_eq!(first_g.take(3).await.len(), 3);
    // The late joiner resumes commits after 1 (from the journal) and asks gestures for a
    // cursor too: gestures have none, and it gets only what comes after it joined.
    let mut late_c = open(
        &s,
        "t_a",
        &format!("/sse/canvas/{a1}/commits"),
        &[("last-event-id", "1")],
    )
    .await;
    let mut late_g = open(
        &s,
        "t_a",
        &format!("/sse/canvas/{a1}/gestures"),
        &[("last-event-id", "1")],
    )
    .await;
    let resume = late_c.next_event().await.expect("resume_cursor");
    assert_eq!(
        (resume.event.as_str(), resume.json()),
        ("resume_cursor", json!({"cursor": "1", "source": "journal"}))
    );
    let replayed: Vec<_> = late_c.take(2).await.iter().map(|e| e.id.clone()).collect();
    assert_eq!(replayed, [Some("2".to_owned()), Some("3".to_owned())]);
    // The shared gesture stream has its late joiner once the hub took it in: a gesture posted
    // now reaches both; nothing older ever reaches the late one.
    post(&s, &a1, "gestures", json!({"actor_id": "g4"})).await;
    assert_eq!(
        summary(&first_g.next_event().await.expect("g4")).3,
        json!("g4")
    );
    let g = late_g.next_event().await.expect("a gesture");
    assert_eq!((g.id.clone(), summary(&g).3), (None, json!("g4")));
    assert!(!String::from_utf8_lossy(&late_g.raw).contains("\nid:"));
}

#[tokio::test]
async fn a_ticket_for_a_canvas_opens_its_streams() {
    let s = Stack::start(&routes(&[]));
    let a1 = canvas(&s, "t_a").await;
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
    let r = post_json(
        &s.addr(),
        "/auth/tickets",
        &refs(&h),
        &json!({"thread_id": a1, "kind": "canvas"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let ticket = r.json()["ticket"].as_str().expect("ticket").to_owned();
    let st = SseStream::open(
        &s.addr(),
        &format!("/sse/canvas/{a1}/commits?ticket={ticket}"),
        &[],
    )
    .await;
    assert_eq!(st.status, 200);
    // A thread ticket's kind is checked against the thread registry: no such thread.
    let r = post_json(
        &s.addr(),
        "/auth/tickets",
        &refs(&h),
        &json!({"thread_id": a1}),
    )
    .await;
    assert_envelope(&r, 404, "chat.thread_not_found");
}

/// Reads SSE blocks from an HTTP/2 body until `stop` says so or the deadline; returns them.
async fn read_blocks(
    body: &mut Incoming,
    buf: &mut String,
    wait: Duration,
    mut stop: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    while !stop(&out) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("timed out with {} events: {:?}", out.len(), out.last()));
        let Some(Ok(frame)) = frame else { break };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if let Some(d) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                out.push(serde_json::from_str(d).expect("json"));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gesture_flood_to_a_stalled_stream_is_coalesced_and_never_delays_commits() {
    let s = Stack::start(&format!(
        "[sse]\nclient_queue_events = 16\nclient_queue_bytes = 16384\n{}",
        routes(&[("key_rate_per_s = 30", "key_rate_per_s = 0")])
    ));
    let a1 = canvas(&s, "t_a").await;
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
    // One HTTP/2 connection with small stream windows: the gesture stream, left unread, fills
    // its window and stalls while the commit stream on the same connection is read.
    let tcp = tokio::net::TcpStream::connect(s.addr()).await.expect("tcp");
    let (mut h2, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(65_535)
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h2");
    tokio::spawn(conn);
    let mut open_h2 = |path: String| {
        let mut b = hyper::Request::get(format!("http://localhost{path}"));
        for (k, v) in &h {
            b = b.header(k.as_str(), v.as_str());
        }
        h2.send_request(b.body(Full::new(Bytes::new())).expect("request"))
    };
    let gestures = open_h2(format!("/sse/canvas/{a1}/gestures"))
        .await
        .expect("gestures");
    let commits = open_h2(format!("/sse/canvas/{a1}/commits"))
        .await
        .expect("commits");
    assert_eq!(
        (gestures.status().as_u16(), commits.status().as_u16()),
        (200, 200)
    );
    let (mut gestures, mut commits) = (gestures.into_body(), commits.into_body());
    eventually!(10, "subscribed", mock_active(&s).await == 2);

    // 15,000 gestures at 5,000/s over 10 actors (1,500 each), commits every 100 ms meanwhile.
    let r = post_json(
        &s.mock_addr(),
        "/_mock/gestures",
        &[],
        &json!({"canvas_id": a1, "actors": 10, "count": 15_000, "rate_per_s": 5000.0}),
    )
    .await;
    assert_eq!(r.status, 202);
    let mut cbuf = String::new();
    for n in 1..=20u64 {
        post(
            &s,
            &a1,
            "commits",
            json!({"actor_id": "u1", "op": {"n": n}}),
        )
        .await;
        let got = read_blocks(&mut commits, &mut cbuf, Duration::from_secs(10), |o| {
            o.len() == 1
        })
        .await;
        assert_eq!(
            got[0]["op"]["n"], n,
            "commit {n} arrives while gestures are stalled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually!(20, "the generator finished and the gateway coalesced", {
        s.metric(
            "railgate_ephemeral_dropped_total{reason=\"superseded\",route=\"canvas-gestures\"}",
        )
        .await
            > 0.0
    });
    // Now read the gestures: far fewer than were sent, and the last one of every actor is its
    // newest (seq 1,500).
    let mut gbuf = String::new();
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut seen = 0;
    let got = read_blocks(&mut gestures, &mut gbuf, Duration::from_secs(20), |o| {
        for g in &o[seen..] {
            let actor = g["actor_id"].as_str().unwrap_or("").to_owned();
            last.insert(actor, g["seq"].as_u64().unwrap_or(0));
        }
        seen = o.len();
        last.len() == 10 && last.values().all(|s| *s == 1_500)
    })
    .await;
    assert!(
        got.len() < 7_500,
        "{} of 15,000 gestures reached the stalled client",
        got.len()
    );
    let mut per_actor: HashMap<&str, Vec<u64>> = HashMap::new();
    for g in &got {
        per_actor
            .entry(g["actor_id"].as_str().expect("actor"))
            .or_default()
            .push(g["seq"].as_u64().expect("seq"));
    }
    for (actor, seqs) in &per_actor {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{actor}: in order, no repeat"
        );
    }
}

#[tokio::test]
async fn a_stream_of_one_panel_drops_events_of_another_panel() {
    let s = Stack::start(&routes(&[]));
    let a1 = canvas(&s, "t_a").await;
    let path = format!("/sse/canvas/{a1}/commits");
    let mut pa = open(&s, "t_a", &path, &[("x-panel-id", "pa")]).await;
    let mut whole = open(&s, "t_a", &path, &[]).await;
    eventually!(
        10,
        "both subscribed (one upstream stream per scope)",
        mock_active(&s).await == 2
    );
    for (actor, panel) in [("a", None), ("b", Some("pb")), ("c", Some("pa"))] {
        let mut body = json!({"actor_id": actor});
        if let Some(p) = panel {
            body["routing"] = json!({"canvas_id": a1, "panel_id": p});
        }
        post(&s, &a1, "commits", body).await;
    }
    let got: Vec<_> = pa
        .take(2)
        .await
        .iter()
        .map(|e| (e.id.clone(), e.json()))
        .collect();
    assert_eq!(
        got.iter()
            .map(|(id, d)| (
                id.clone(),
                d["actor_id"].clone(),
                d["routing"]["panel_id"].clone()
            ))
            .collect::<Vec<_>>(),
        [
            (Some("1".into()), json!("a"), json!("pa")),
            (Some("3".into()), json!("c"), json!("pa"))
        ]
    );
    let ids: Vec<_> = whole.take(3).await.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, [Some("1".into()), Some("2".into()), Some("3".into())]);
    let name =
        "railgate_isolation_violations_total{reason=\"foreign_scope\",route=\"canvas-commits\"}";
    assert_eq!(s.metric(name).await, 1.0);
}

#[tokio::test]
async fn a_canvas_made_through_the_gateway_is_learned_and_evicted_by_kind() {
    use railgate_tests::client::request;
    use railgate_tests::stack::ADMIN_TOKEN;
    let s = Stack::start(&routes(&[]));
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
    let r = post_json(
        &s.addr(),
        "/canvas/canvases",
        &refs(&h),
        &json!({"title": "c"}),
    )
    .await;
    assert_eq!(r.status, 201);
    let cv = r.json()["id"].as_str().expect("id").to_owned();
    let lookups = |s: &Stack| {
        let (addr, cv) = (s.mock_addr(), cv.clone());
        async move {
            get(&addr, "/_mock/requests", &[])
                .await
                .json()
                .as_array()
                .expect("list")
                .iter()
                .filter(|r| r["path"] == format!("/registry/canvases/{cv}"))
                .count()
        }
    };
    // Learned from the answer: the owner check needs no lookup.
    let st = open(&s, "t_a", &format!("/sse/canvas/{cv}/commits"), &[]).await;
    drop(st);
    assert_eq!(
        lookups(&s).await,
        1,
        "only the check that the new canvas is not someone else's"
    );
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let del = request(
        "DELETE",
        &s.gw.admin(),
        &format!("/admin/registry/canvas/{cv}"),
        &[("authorization", bearer.as_str())],
        vec![],
    )
    .await;
    assert_eq!(
        del.json(),
        json!({"kind": "canvas", "id": cv, "dropped": true})
    );
    let st = open(&s, "t_a", &format!("/sse/canvas/{cv}/artifacts"), &[]).await;
    drop(st);
    assert_eq!(lookups(&s).await, 2, "asked again after the eviction");
}

#[tokio::test]
async fn websocket_presence_is_per_panel_and_a_rejoin_sees_the_current_members() {
    use futures_util::SinkExt;
    use railgate_tests::client::{chat_context, ws_connect, ws_hello, ws_next_json, Ws};
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    let join = |user: &'static str, panel: &'static str| {
        let (addr, th) = (s.addr(), th.clone());
        async move {
            let bearer = format!("Bearer {}", token("t_a", user, json!({})));
            let mut ws: Ws = ws_connect(
                &addr,
                &format!("/ws/chat/{th}"),
                &[("authorization", bearer.as_str())],
            )
            .await
            .expect("upgrade");
            let mut ctx = chat_context("t_a");
            ctx["panel_id"] = json!(panel);
            ws_hello(&mut ws, ctx, None).await;
            ws
        }
    };
    let routing =
        |panel: &str| json!({"tenant_id": "t_a", "env": "dev", "thread_id": th, "panel_id": panel});
    let mut alice = join("alice", "pa").await;
    let mut carol = join("carol", "pb").await;
    let mut bob = join("bob", "pa").await;
    // Alice hears of Bob: as a join, or — when he came within her own first window — as the
    // snapshot a newcomer gets.
    let heard = ws_next_json(&mut alice).await;
    let bob_only = json!([{"actor_id": "bob", "surface_id": null}]);
    assert!(
        heard
            == json!({"type": "presence", "op": "join", "actor_id": "bob", "surface_id": null, "routing": routing("pa")})
            || heard
                == json!({"type": "presence", "op": "snapshot", "members": bob_only, "routing": routing("pa")}),
        "{heard}"
    );
    assert_eq!(
        ws_next_json(&mut bob).await,
        json!({"type": "presence", "op": "snapshot", "members": [{"actor_id": "alice", "surface_id": null}], "routing": routing("pa")})
    );
    // Carol's panel is hers alone: a snapshot she asks for lists nobody.
    carol
        .send(tokio_tungstenite::tungstenite::Message::text(
            r#"{"type":"presence","op":"snapshot"}"#,
        ))
        .await
        .expect("ask");
    assert_eq!(
        ws_next_json(&mut carol).await,
        json!({"type": "presence", "op": "snapshot", "members": [], "routing": routing("pb")})
    );
    // Bob's connection drops; he comes back and sees who is there now.
    drop(bob);
    assert_eq!(
        ws_next_json(&mut alice).await,
        json!({"type": "presence", "op": "leave", "actor_id": "bob", "surface_id": null, "routing": routing("pa")})
    );
    let mut bob = join("bob", "pa").await;
    assert_eq!(
        ws_next_json(&mut bob).await,
        json!({"type": "presence", "op": "snapshot", "members": [{"actor_id": "alice", "surface_id": null}], "routing": routing("pa")})
    );
    assert_eq!(ws_next_json(&mut alice).await["op"], "join");
}

#[tokio::test]
async fn the_registry_can_switch_a_route_off_for_one_canvas() {
    let s = Stack::start(&routes(&[]));
    let body = json!({"title": "quiet", "disabled_routes": ["canvas-gestures"]});
    let quiet = canvas_with(&s, "t_a", body).await;
    let loud = canvas(&s, "t_a").await;
    let r = get_as_t_a(&s.addr(), &format!("/sse/canvas/{quiet}/gestures")).await;
    assert_envelope(&r, 403, "feature.disabled");
    assert_eq!(
        r.json()["error"]["message"],
        "route canvas-gestures is switched off for this canvas"
    );
    open(&s, "t_a", &format!("/sse/canvas/{quiet}/commits"), &[]).await;
    open(&s, "t_a", &format!("/sse/canvas/{loud}/gestures"), &[]).await;
}
