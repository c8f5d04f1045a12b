//! Single-use tickets and resume grants end to end: a ticket is spent only once every check
//! passed, survives as a grant until its session end, is single-use across gateway restarts,
//! never outlives the token that minted it, and one tenant cannot crowd out another's tickets.

use railgate_policy::b64url_decode;
use railgate_tests::client::{get, post_json, SseStream};
use railgate_tests::stack::{assert_envelope, now, ticket, ticket_for, token, Stack};
use serde_json::{json, Value};
use std::time::Duration;

fn grant_of(st: &SseStream) -> String {
    let cookie = st
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("grant cookie");
    cookie.split(';').next().expect("pair").to_owned()
}

#[tokio::test]
async fn a_refused_cursor_leaves_the_ticket_unspent() {
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    let t = ticket("t_a", "u1", &th, "tid-cursor");
    let bad = "x".repeat(300);
    let refused = get(
        &s.addr(),
        &format!("/sse/chat/{th}?ticket={t}&last_event_id={bad}"),
        &[],
    )
    .await;
    assert_envelope(&refused, 410, "chat.cursor_invalid");
    let st = SseStream::open(&s.addr(), &format!("/sse/chat/{th}?ticket={t}"), &[]).await;
    assert_eq!(st.status, 200, "the ticket is still good");
    let again = get(&s.addr(), &format!("/sse/chat/{th}?ticket={t}"), &[]).await;
    assert_envelope(&again, 401, "auth.ticket_replayed");
}

#[tokio::test]
async fn the_resume_grant_outlives_the_tickets_own_expiry() {
    let s = Stack::start("[auth]\ncookie_secure = false\n");
    let th = s.thread("t_a").await;
    let t = ticket_for("t_a", "u1", &th, "tid-short", Some(1));
    let exp = now() + 1;
    let path = format!("/sse/chat/{th}?ticket={t}");
    let mut st = SseStream::open(&s.addr(), &path, &[]).await;
    assert_eq!(st.status, 200);
    let grant = grant_of(&st);
    s.publish(&th, 2).await;
    let got = st.take(2).await;
    assert_eq!(got[1].id.as_deref(), Some("2"));
    drop(st);
    // The ticket's own lifetime is over (its session is not).
    while now() <= exp {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let without = get(&s.addr(), &path, &[]).await;
    assert_envelope(&without, 401, "auth.ticket_invalid");
    let mut st = SseStream::open(
        &s.addr(),
        &path,
        &[("cookie", grant.as_str()), ("last-event-id", "1")],
    )
    .await;
    assert_eq!(
        st.status, 200,
        "the EventSource reconnects after the ticket's TTL"
    );
    assert_eq!(st.next_event().await.expect("cursor").json()["cursor"], "1");
}

#[tokio::test]
async fn a_ticket_used_before_a_restart_is_refused_after_it_and_its_grant_still_resumes() {
    for kill9 in [true, false] {
        let mut s = Stack::start("[auth]\ncookie_secure = false\n");
        let th = s.thread("t_a").await;
        let t = ticket("t_a", "u1", &th, "tid-restart");
        let path = format!("/sse/chat/{th}?ticket={t}");
        let st = SseStream::open(&s.addr(), &path, &[]).await;
        assert_eq!(st.status, 200);
        let grant = grant_of(&st);
        drop(st);
        s.restart_gateway(kill9);
        let replay = get(&s.addr(), &path, &[]).await;
        assert_envelope(&replay, 401, "auth.ticket_replayed");
        let st = SseStream::open(&s.addr(), &path, &[("cookie", grant.as_str())]).await;
        assert_eq!(
            st.status, 200,
            "the grant resumes on the new process (kill9={kill9})"
        );
        let fresh = ticket("t_a", "u1", &th, "tid-after");
        let st = SseStream::open(&s.addr(), &format!("/sse/chat/{th}?ticket={fresh}"), &[]).await;
        assert_eq!(st.status, 200, "tickets minted after the restart work");
    }
}

fn payload(ticket: &str) -> Value {
    let b64 = ticket.split('.').nth(1).expect("payload");
    serde_json::from_slice(&b64url_decode(b64).expect("b64")).expect("json")
}

#[tokio::test]
async fn tickets_never_outlive_the_token_that_minted_them() {
    let s = Stack::start("");
    let th = s.thread("t_a").await;
    let ask = json!({"thread_id": th, "ttl_s": 300});
    let in_leeway = format!("Bearer {}", token("t_a", "u1", json!({"exp": now() - 5})));
    let h = [
        ("authorization", in_leeway.as_str()),
        ("x-tenant-id", "t_a"),
    ];
    let r = post_json(&s.addr(), "/auth/tickets", &h, &ask).await;
    assert_envelope(&r, 401, "auth.token_expired");
    let token_exp = now() + 20;
    let short = format!("Bearer {}", token("t_a", "u1", json!({"exp": token_exp})));
    let h = [("authorization", short.as_str()), ("x-tenant-id", "t_a")];
    let r = post_json(&s.addr(), "/auth/tickets", &h, &ask).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let claims = payload(r.json()["ticket"].as_str().expect("ticket"));
    assert_eq!(claims["sx"], token_exp, "{claims}");
    assert_eq!(claims["exp"], token_exp, "{claims}");
}

#[tokio::test]
async fn one_tenant_filling_its_share_of_used_tickets_does_not_refuse_another() {
    let s = Stack::start("[auth]\nmax_used_tickets_per_tenant = 2\n");
    let a = s.thread("t_a").await;
    let b = s.thread("t_b").await;
    for i in 0..2 {
        let t = ticket("t_a", "u1", &a, &format!("tid-a{i}"));
        let st = SseStream::open(&s.addr(), &format!("/sse/chat/{a}?ticket={t}"), &[]).await;
        assert_eq!(st.status, 200);
    }
    let t = ticket("t_a", "u1", &a, "tid-a2");
    let full = get(&s.addr(), &format!("/sse/chat/{a}?ticket={t}"), &[]).await;
    assert_envelope(&full, 429, "rate.limited");
    let t = ticket("t_b", "u2", &b, "tid-b0");
    let st = SseStream::open(&s.addr(), &format!("/sse/chat/{b}?ticket={t}"), &[]).await;
    assert_eq!(st.status, 200, "another tenant's fresh ticket");
}
