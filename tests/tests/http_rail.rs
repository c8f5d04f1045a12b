//! The HTTP rail and the gateway core against real processes: every HTTP-visible error code,
//! header hygiene, broken chunked bodies, registry caching, tickets, JWKS rotation, metrics, drain.

use railgate_tests::client::{
    bytes_until_closed, get, next_response, post_json, request, HttpResponse,
};
use railgate_tests::eventually;
use railgate_tests::stack::{
    assert_envelope, metric_value, now, ticket, token, Stack, ADMIN_TOKEN,
};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn auth(tok: &str) -> String {
    format!("Bearer {tok}")
}

async fn get_as(
    addr: &str,
    path: &str,
    tok: &str,
    tenant: &str,
    extra: &[(&str, &str)],
) -> HttpResponse {
    let a = auth(tok);
    let mut h = vec![("authorization", a.as_str()), ("x-tenant-id", tenant)];
    h.extend_from_slice(extra);
    get(addr, path, &h).await
}

#[tokio::test]
async fn credential_and_context_rejections_have_exact_envelopes() {
    let s = Stack::start("");
    let addr = s.addr();
    let th = s.thread("t_a").await;
    let path = format!("/chat/threads/{th}/messages");
    let good = token("t_a", "u1", json!({}));

    assert_envelope(&get(&addr, "/nope", &[]).await, 404, "route.not_found");
    assert_envelope(
        &get(&addr, &path, &[("x-tenant-id", "t_a")]).await,
        401,
        "auth.token_missing",
    );
    assert_envelope(
        &get_as(&addr, &path, "a.b.c", "t_a", &[]).await,
        401,
        "auth.token_invalid",
    );
    let expired = token("t_a", "u1", json!({"exp": now() - 120}));
    assert_envelope(
        &get_as(&addr, &path, &expired, "t_a", &[]).await,
        401,
        "auth.token_expired",
    );
    let a = auth(&good);
    assert_envelope(
        &get(&addr, &path, &[("authorization", a.as_str())]).await,
        400,
        "auth.tenant_missing",
    );
    assert_envelope(
        &get_as(&addr, &path, &good, "bad value", &[]).await,
        400,
        "request.header_invalid",
    );
    assert_envelope(
        &get_as(&addr, &path, &good, "t_a", &[("x-tenant-id", "t_a")]).await,
        400,
        "request.header_invalid",
    );
    assert_envelope(
        &get_as(&addr, &path, &good, "t_a", &[("x-mode", "godmode")]).await,
        400,
        "auth.mode_invalid",
    );
    assert_envelope(
        &get_as(&addr, &path, &good, "t_b", &[]).await,
        403,
        "auth.tenant_mismatch",
    );
    assert_envelope(
        &get_as(&addr, &path, &good, "t_a", &[("x-env", "prod")]).await,
        403,
        "auth.env_mismatch",
    );
    let saas = token("t_a", "u1", json!({"mode": "saas"}));
    assert_envelope(
        &get_as(&addr, &path, &saas, "t_a", &[("x-mode", "lab")]).await,
        403,
        "auth.context_mismatch",
    );
    assert_envelope(
        &get_as(&addr, "/chat/threads/th_nope/messages", &good, "t_a", &[]).await,
        404,
        "chat.thread_not_found",
    );
    let tb = token("t_b", "u2", json!({}));
    assert_envelope(
        &get_as(&addr, &path, &tb, "t_b", &[]).await,
        403,
        "chat.thread_forbidden",
    );
    let ok = get_as(&addr, &path, &good, "t_a", &[("x-request-id", "req-42")]).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.header("x-request-id"), Some("req-42"));
    let r = get(&addr, "/nope", &[("x-request-id", "req-7")]).await;
    assert_eq!(
        r.json()["error"]["trace_id"],
        "req-7",
        "early rejections carry the caller's request id"
    );
    eventually!(10, "access log records outcomes", {
        s.gw.logs()
            .join("\n")
            .contains("\"outcome\":\"auth.tenant_mismatch\"")
    });
    let logs = s.gw.logs().join("\n");
    assert!(
        !logs.contains(&good) && !logs.contains(&saas),
        "a token reached the logs"
    );
    assert!(!logs.contains("t_unknown"));
}

#[tokio::test]
async fn limits_and_upstream_failures_map_to_their_codes() {
    let s = Stack::start(
        "[limits]\nmax_body_bytes = 1024\nmax_header_bytes = 4096\nupstream_response_timeout_s = 1\n\
         [[routes]]\nname = \"dead\"\npath = \"/dead/**\"\nupstream = \"http://127.0.0.1:9\"\n\
         [[routes]]\nname = \"chat-http\"\npath = \"/chat/threads/{thread_id}/**\"\n",
    );
    let addr = s.addr();
    let th = s.thread("t_a").await;
    let good = token("t_a", "u1", json!({}));
    let a = auth(&good);
    let h = [("authorization", a.as_str()), ("x-tenant-id", "t_a")];
    let big = request(
        "POST",
        &addr,
        &format!("/chat/threads/{th}/messages"),
        &h,
        vec![b'x'; 2000],
    )
    .await;
    assert_envelope(&big, 413, "request.too_large");
    let huge = "v".repeat(5000);
    let mut hh = h.to_vec();
    hh.push(("x-big", huge.as_str()));
    assert_envelope(
        &get(&addr, &format!("/chat/threads/{th}/messages"), &hh).await,
        431,
        "request.too_large",
    );
    assert_envelope(
        &get(&addr, "/dead/x", &h).await,
        503,
        "upstream.unavailable",
    );
    s.faults(json!({"latency_ms": 3000})).await;
    // The registry lookup itself is delayed too; cache the thread first.
    let r = get(&addr, &format!("/chat/threads/{th}/messages"), &h).await;
    assert!(r.status == 503 || r.status == 504, "{}", r.status);
    s.faults(json!({})).await;
    assert_eq!(
        get(&addr, &format!("/chat/threads/{th}/messages"), &h)
            .await
            .status,
        200
    );
    s.faults(json!({"latency_ms": 3000})).await;
    assert_envelope(
        &get(&addr, &format!("/chat/threads/{th}/messages"), &h).await,
        504,
        "upstream.timeout",
    );
}

#[tokio::test]
async fn upstream_sees_only_the_verified_context() {
    let s = Stack::start("");
    let addr = s.addr();
    let th = s.thread("t_a").await;
    let good = token("t_a", "u1", json!({}));
    let a = auth(&good);
    let h = [
        ("authorization", a.as_str()),
        ("x-tenant-id", "t_a"),
        ("x-user-id", "admin"),
        ("x-railgate-trusted", "yes"),
        ("connection", "close, x-tenant-id, x-user-id"),
        ("x-request-id", "req-hyg"),
        ("keep-alive", "timeout=5"),
    ];
    let r = post_json(
        &addr,
        &format!("/chat/threads/{th}/messages?ticket=secretish&x=1"),
        &h,
        &json!({"text": "hi"}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let seen = s.mock_requests().await;
    let last = seen
        .iter()
        .rev()
        .find(|r| r["method"] == "POST")
        .expect("forwarded");
    let hd = &last["headers"];
    assert_eq!(
        last["path"],
        format!("/chat/threads/{th}/messages?x=1"),
        "ticket stripped from the query"
    );
    assert_eq!(hd["x-tenant-id"], "t_a");
    assert_eq!(hd["x-user-id"], "u1");
    assert_eq!(hd["x-env"], "dev");
    assert_eq!(hd["x-request-id"], "req-hyg");
    assert!(
        hd["traceparent"]
            .as_str()
            .is_some_and(|t| t.starts_with("00-") && t.len() == 55),
        "{hd}"
    );
    assert_eq!(hd.get("x-railgate-trusted"), None);
    assert_eq!(hd.get("keep-alive"), None);
    assert_ne!(
        hd.get("connection").and_then(Value::as_str),
        Some("close, x-tenant-id, x-user-id")
    );
}

async fn raw(addr: &str, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn a_body_that_breaks_its_chunked_framing_is_refused_and_not_stored() {
    // The heads themselves (CL+TE, repeated lengths, bare LF...) are in `framing.rs`.
    let s = Stack::start("");
    let addr = s.addr();
    let th = s.thread("t_a").await;
    let tok = token("t_a", "u1", json!({}));
    let head = format!("POST /chat/threads/{th}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nX-Tenant-Id: t_a\r\n");
    let case = format!("{head}Transfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n");
    let answer = raw(&addr, case.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("request.malformed"),
        "{answer:?}"
    );
    let ok = r#"{"text":"ok"}"#;
    let case = format!(
        "{head}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{ok}\r\n0\r\n\r\n",
        ok.len()
    );
    assert!(raw(&addr, case.as_bytes())
        .await
        .starts_with("HTTP/1.1 201"));
    let stored = get(&s.mock_addr(), &format!("/chat/threads/{th}/messages"), &[])
        .await
        .json();
    let texts: Vec<&str> = stored
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, vec!["ok"]);
}

#[tokio::test]
async fn registry_coalesces_misses_caches_negatives_and_fails_closed() {
    let s = Stack::start("");
    let addr = s.addr();
    let th = s.thread("t_a").await;
    let tok = token("t_a", "u1", json!({}));
    let path = format!("/chat/threads/{th}/messages");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (addr, path, tok) = (addr.clone(), path.clone(), tok.clone());
        tasks.push(tokio::spawn(async move {
            get_as(&addr, &path, &tok, "t_a", &[]).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 200);
    }
    let lookups = |reqs: &[Value], id: &str| {
        reqs.iter()
            .filter(|r| r["path"] == format!("/registry/threads/{id}"))
            .count()
    };
    assert_eq!(
        lookups(&s.mock_requests().await, &th),
        1,
        "50 concurrent misses make one lookup"
    );
    for _ in 0..3 {
        assert_eq!(
            get_as(&addr, "/chat/threads/th_ghost/x", &tok, "t_a", &[])
                .await
                .status,
            404
        );
    }
    assert_eq!(
        lookups(&s.mock_requests().await, "th_ghost"),
        1,
        "not-found is cached"
    );
    assert_eq!(
        s.metric("railgate_registry_lookups_total{result=\"fetched\"}")
            .await,
        1.0
    );
    assert_eq!(
        s.metric("railgate_registry_lookups_total{result=\"hit\"}")
            .await,
        49.0
    );

    let down = Stack::start("[registry]\nurl = \"http://127.0.0.1:9\"\n");
    let th2 = down.thread("t_a").await;
    assert_envelope(
        &get_as(
            &down.addr(),
            &format!("/chat/threads/{th2}/x"),
            &tok,
            "t_a",
            &[],
        )
        .await,
        503,
        "registry.unavailable",
    );
}

#[tokio::test]
async fn created_threads_are_learned_and_admin_can_forget_them() {
    let s = Stack::start("");
    let addr = s.addr();
    let tok = token("t_a", "u1", json!({}));
    let a = auth(&tok);
    let h = [("authorization", a.as_str()), ("x-tenant-id", "t_a")];
    let r = post_json(&addr, "/chat/threads", &h, &json!({"title": "mine"})).await;
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(
        get(&addr, &format!("/chat/threads/{id}/messages"), &h)
            .await
            .status,
        200
    );
    let reqs = s.mock_requests().await;
    assert_eq!(
        reqs.iter()
            .filter(|r| r["path"] == format!("/registry/threads/{id}"))
            .count(),
        1,
        "one lookup while learning (an owner of another tenant is never replaced), none after"
    );
    let admin = s.gw.admin();
    let del = request(
        "DELETE",
        &admin,
        &format!("/admin/registry/{id}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(del.status, 401);
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let del = request(
        "DELETE",
        &admin,
        &format!("/admin/registry/{id}"),
        &[("authorization", bearer.as_str())],
        vec![],
    )
    .await;
    assert_eq!(del.json(), json!({"thread_id": id, "dropped": true}));
    assert_eq!(
        get(&addr, &format!("/chat/threads/{id}/messages"), &h)
            .await
            .status,
        200
    );
    let reqs = s.mock_requests().await;
    assert_eq!(
        reqs.iter()
            .filter(|r| r["path"] == format!("/registry/threads/{id}"))
            .count(),
        2,
        "refetched once after forget (the first was while learning)"
    );
}

#[tokio::test]
async fn tickets_are_issued_for_owned_threads_and_used_once() {
    let s = Stack::start("[[routes]]\nname = \"t-http\"\npath = \"/chat/threads/{thread_id}/**\"\nauth = [\"ticket\"]\n");
    let addr = s.addr();
    let th = s.thread("t_a").await;
    let foreign = s.thread("t_b").await;
    let tok = token("t_a", "u1", json!({}));
    let a = auth(&tok);
    let h = [
        ("authorization", a.as_str()),
        ("x-tenant-id", "t_a"),
        ("x-mode", "lab"),
    ];
    let r = post_json(
        &addr,
        "/auth/tickets",
        &h,
        &json!({"thread_id": th, "ttl_s": 30}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let body = r.json();
    let t = body["ticket"].as_str().expect("ticket").to_owned();
    assert!(t.starts_with("v1."));
    let exp = body["expires_at"].as_u64().expect("expires_at");
    assert!(exp > now() + 20 && exp <= now() + 31, "{exp}");
    assert_envelope(
        &post_json(&addr, "/auth/tickets", &h, &json!({"thread_id": foreign})).await,
        403,
        "chat.thread_forbidden",
    );
    assert_envelope(
        &post_json(
            &addr,
            "/auth/tickets",
            &[("x-tenant-id", "t_a")],
            &json!({"thread_id": th}),
        )
        .await,
        401,
        "auth.token_missing",
    );
    let path = format!("/chat/threads/{th}/messages?ticket={t}");
    assert_eq!(get(&addr, &path, &[]).await.status, 200);
    assert_envelope(&get(&addr, &path, &[]).await, 401, "auth.ticket_replayed");
    let other = ticket("t_a", "u1", &foreign, "tid-x");
    assert_envelope(
        &get(
            &addr,
            &format!("/chat/threads/{th}/messages?ticket={other}"),
            &[],
        )
        .await,
        403,
        "auth.context_mismatch",
    );
    let mut bad = t.clone();
    bad.push('A');
    assert_envelope(
        &get(
            &addr,
            &format!("/chat/threads/{th}/messages?ticket={bad}"),
            &[],
        )
        .await,
        401,
        "auth.ticket_invalid",
    );
    let logs = s.gw.logs().join("\n");
    assert!(!logs.contains(&t[3..40]), "a ticket reached the logs");
}

#[tokio::test]
async fn metrics_move_by_the_expected_amounts() {
    let s = Stack::start("");
    let addr = s.addr();
    let th = s.thread("t_a").await;
    let tok = token("t_a", "u1", json!({}));
    for _ in 0..3 {
        assert_eq!(
            get_as(
                &addr,
                &format!("/chat/threads/{th}/messages"),
                &tok,
                "t_a",
                &[]
            )
            .await
            .status,
            200
        );
    }
    for _ in 0..2 {
        get(
            &addr,
            &format!("/chat/threads/{th}/messages"),
            &[("x-tenant-id", "t_a")],
        )
        .await;
    }
    let text = s.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            "railgate_requests_total{code=\"ok\",route=\"chat-http\",transport=\"http\"}"
        ),
        3.0,
        "{text}"
    );
    assert_eq!(metric_value(&text, "railgate_requests_total{code=\"auth.token_missing\",route=\"chat-http\",transport=\"http\"}"), 2.0);
    assert_eq!(
        metric_value(
            &text,
            "railgate_auth_rejections_total{code=\"auth.token_missing\"}"
        ),
        2.0
    );
    assert_eq!(get(&s.gw.admin(), "/healthz", &[]).await.status, 200);
    assert_eq!(get(&s.gw.admin(), "/readyz", &[]).await.status, 200);
}

#[tokio::test]
async fn drain_finishes_in_flight_requests_then_exits_zero() {
    let mut s = Stack::start("");
    let addr = s.addr();
    let th = s.thread("t_a").await;
    let tok = token("t_a", "u1", json!({}));
    assert_eq!(
        get_as(
            &addr,
            &format!("/chat/threads/{th}/messages"),
            &tok,
            "t_a",
            &[]
        )
        .await
        .status,
        200
    );
    s.faults(json!({"latency_ms": 1500})).await;
    let (a2, p2, t2) = (
        addr.clone(),
        format!("/chat/threads/{th}/messages"),
        tok.clone(),
    );
    let inflight = tokio::spawn(async move { get_as(&a2, &p2, &t2, "t_a", &[]).await.status });
    let mock = s.mock_addr();
    eventually!(5, "request reached the mock", {
        let r = get(&mock, "/_mock/requests", &[]).await.json();
        r.as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x["path"] == format!("/chat/threads/{th}/messages"))
                    .count()
            })
            .unwrap_or(0)
            >= 2
    });
    s.gw.signal(15);
    assert_eq!(
        inflight.await.expect("task"),
        200,
        "in-flight request finished"
    );
    let status = s.gw.wait_exit(Duration::from_secs(15)).expect("exited");
    assert_eq!(status.code(), Some(0));
}

/// A connection with no request begun when the drain starts (a browser's preconnected socket,
/// or a kept-alive one between requests) is closed unanswered at once: not held to the head
/// deadline, and not there to carry a retry into the draining gateway's 503.
#[tokio::test]
async fn drain_closes_a_connection_that_has_not_begun_a_request_unanswered() {
    let mut s = Stack::start("drain_timeout_s = 30\n[limits]\nheader_read_timeout_s = 60\n");
    let addr = s.addr();
    let th = s.thread("t_a").await;
    let mut idle = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    // Answered on a later connection: the listener took the idle one first.
    let tok = token("t_a", "u1", json!({}));
    let path = format!("/chat/threads/{th}/messages");
    assert_eq!(get_as(&addr, &path, &tok, "t_a", &[]).await.status, 200);
    // A kept-alive connection, idle after its answer.
    let mut kept = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nX-Tenant-Id: t_a\r\n\r\n"
    );
    kept.write_all(head.as_bytes()).await.expect("write");
    let answer = next_response(&mut kept).await;
    assert_eq!((answer.status, &answer.body[..]), (200, &b"[]"[..]));
    s.gw.signal(15);
    let got = bytes_until_closed(
        &mut idle,
        "closed by the drain, not at the 60 s head deadline",
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&got), "", "no answer");
    let got = bytes_until_closed(&mut kept, "the idle kept-alive one too").await;
    assert_eq!(String::from_utf8_lossy(&got), "", "nothing more");
    let status = s.gw.wait_exit(Duration::from_secs(10)).expect("exited");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn check_reports_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "bogus = 1\n[auth]\nleeway_s = -1\n[[routes]]\nname = \"x\"\npath = \"nope\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(railgate_tests::bins::path("railgate"))
        .args(["check", "--config", path.to_str().expect("utf8")])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "bogus: unknown key",
        "auth.leeway_s: must not be negative",
        "routes[0].path: must start with /",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
    let ok = std::process::Command::new(railgate_tests::bins::path("railgate"))
        .args(["check"])
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[tokio::test]
async fn forwarding_headers_are_the_gateways_unless_a_trusted_front_proxy_sent_them() {
    let forged = [
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-host", "admin.internal"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=6.6.6.6;host=admin.internal"),
        ("x-real-ip", "6.6.6.6"),
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
    ];
    for trusted in [false, true] {
        let config = if trusted {
            "trusted_proxies = [\"127.0.0.1/32\"]\n"
        } else {
            "[[routes]]\nname = \"chat-http\"\npath = \"/chat/threads/{thread_id}/**\"\nforward_authorization = false\n"
        };
        let s = Stack::start(config);
        let th = s.thread("t_a").await;
        let tok = token("t_a", "u1", json!({}));
        let r = get_as(
            &s.addr(),
            &format!("/chat/threads/{th}/messages"),
            &tok,
            "t_a",
            &forged,
        )
        .await;
        assert_eq!(r.status, 200);
        let seen = s
            .mock_requests()
            .await
            .into_iter()
            .rev()
            .find(|r| r["path"] == format!("/chat/threads/{th}/messages"))
            .expect("forwarded");
        let h = &seen["headers"];
        if trusted {
            assert_eq!(h["x-forwarded-for"], "6.6.6.6, 127.0.0.1", "{h}");
            assert_eq!(h["x-forwarded-host"], "admin.internal");
            assert_eq!(h["x-original-url"], "/admin");
            assert!(h["authorization"].is_string(), "forwarded by default");
        } else {
            assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h}");
            assert_eq!(h["x-real-ip"], "127.0.0.1");
            assert_eq!(h["x-forwarded-proto"], "http");
            assert_eq!(h["x-forwarded-host"], s.addr().as_str());
            assert!(
                h["forwarded"]
                    .as_str()
                    .is_some_and(|f| f.starts_with("for=127.0.0.1;")),
                "{h}"
            );
            for gone in ["x-original-url", "x-rewrite-url", "authorization"] {
                assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h}");
            }
        }
    }
}
