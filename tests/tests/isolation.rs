//! Isolation: N tenants × M threads with concurrent traffic on both rails; every delivered event's
//! `routing` matches its receiver; foreign upstream events are never delivered; presence never
//! crosses tenants.

use futures_util::future::join_all;
use futures_util::SinkExt;
use railgate_tests::client::{post_json, ws_connect, ws_next_json, SseStream};
use railgate_tests::stack::{full_headers, refs, token, Stack};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const TENANTS: usize = 4;
const THREADS: usize = 3;
const EVENTS: u64 = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_times_threads_on_both_rails_never_see_foreign_events() {
    let s = Stack::start("");
    let mut plan = Vec::new();
    for t in 0..TENANTS {
        let tenant = format!("t_{t}");
        for _ in 0..THREADS {
            plan.push((tenant.clone(), s.thread(&tenant).await));
        }
    }
    let mut sse = Vec::new();
    let mut ws = Vec::new();
    for (tenant, th) in &plan {
        let tok = token(tenant, &format!("user-{tenant}"), json!({}));
        let mut h = full_headers(&tok, tenant);
        h.push(("last-event-id".into(), "0".into()));
        let st = SseStream::open(&s.addr(), &format!("/sse/chat/{th}"), &refs(&h)).await;
        assert_eq!(st.status, 200);
        sse.push((tenant.clone(), th.clone(), st));
        let a = format!("Bearer {tok}");
        let mut w = ws_connect(
            &s.addr(),
            &format!("/ws/chat/{th}"),
            &[("authorization", a.as_str())],
        )
        .await
        .expect("upgrade");
        let hello = json!({"type": "hello", "context": {"tenant_id": tenant, "mode": "lab", "project_id": "p_chat", "app_id": "app-chat"}, "last_event_id": "0"});
        w.send(Message::text(hello.to_string()))
            .await
            .expect("hello");
        ws.push((tenant.clone(), th.clone(), w));
    }
    // Concurrent publishing, with a foreign-tenant event injected into every thread.
    join_all(plan.iter().enumerate().map(|(i, (_, th))| {
        let mock = s.mock_addr();
        let foreign = format!("t_{}", (i / THREADS + 1) % TENANTS);
        async move {
            post_json(
                &mock,
                "/_mock/publish",
                &[],
                &json!({"thread_id": th, "count": 5}),
            )
            .await;
            post_json(
                &mock,
                "/_mock/publish",
                &[],
                &json!({"thread_id": th, "count": 1, "routing": {"tenant_id": foreign}}),
            )
            .await;
            post_json(
                &mock,
                "/_mock/publish",
                &[],
                &json!({"thread_id": th, "count": EVENTS - 5}),
            )
            .await;
        }
    }))
    .await;
    let expected: Vec<u64> = (1..=5).chain(7..=EVENTS + 1).collect();
    let sse_checks = sse.into_iter().map(|(tenant, th, mut st)| {
        let expected = expected.clone();
        async move {
            let mut seqs = Vec::new();
            while seqs.len() < expected.len() {
                let ev = st
                    .next_event_within(Duration::from_secs(20))
                    .await
                    .expect("event");
                if ev.event != "chat_message" {
                    continue;
                }
                let d = ev.json();
                assert_eq!(d["routing"]["tenant_id"], tenant.as_str());
                assert_eq!(d["routing"]["thread_id"], th.as_str());
                assert_eq!(d["thread_id"], th.as_str());
                seqs.push(d["seq"].as_u64().expect("seq"));
            }
            assert_eq!(seqs, expected, "SSE {tenant}/{th}");
        }
    });
    join_all(sse_checks).await;
    for (tenant, th, mut w) in ws {
        let mut seqs = Vec::new();
        while seqs.len() < expected.len() {
            let v: Value = ws_next_json(&mut w).await;
            if v["type"] == "presence" {
                assert_eq!(
                    v["routing"]["tenant_id"],
                    tenant.as_str(),
                    "presence crossed tenants: {v}"
                );
                continue;
            }
            assert_eq!(v["routing"]["tenant_id"], tenant.as_str());
            assert_eq!(v["routing"]["thread_id"], th.as_str());
            seqs.push(v["seq"].as_u64().expect("seq"));
        }
        assert_eq!(seqs, expected, "WS {tenant}/{th}");
    }
    let violations = s
        .metric("railgate_isolation_violations_total{reason=\"foreign_tenant\",route=\"chat-sse\"}")
        .await
        + s.metric(
            "railgate_isolation_violations_total{reason=\"foreign_tenant\",route=\"chat-ws\"}",
        )
        .await;
    assert_eq!(
        violations,
        (2 * TENANTS * THREADS) as f64,
        "each foreign event counted once per rail"
    );
}
