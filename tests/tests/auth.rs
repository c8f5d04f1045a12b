//! The rejection matrix of CONTRACT §6, end to end on HTTP, SSE and WebSocket: status, code,
//! `http_status`, close code; and the logs never hold a token, a ticket or a placeholder tenant.

use futures_util::SinkExt;
use railgate_tests::client::{get, ws_connect, ws_next, ws_next_json, WsEvent};
use railgate_tests::eventually;
use railgate_tests::stack::{now, ticket, token, Stack};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

struct Case {
    name: &'static str,
    token: Option<String>,
    headers: Vec<(&'static str, String)>,
    code: &'static str,
    status: u16,
}

fn cases(foreign_thread: &str) -> Vec<(Case, Option<String>)> {
    let good = token("t_a", "u1", json!({}));
    let ctx = |extra: &[(&'static str, &str)]| {
        let mut h: Vec<(&'static str, String)> = vec![
            ("x-tenant-id", "t_a".into()),
            ("x-mode", "lab".into()),
            ("x-project-id", "p_chat".into()),
            ("x-app-id", "app-chat".into()),
        ];
        for (k, v) in extra {
            h.retain(|(n, _)| n != k);
            if !v.is_empty() {
                h.push((k, (*v).to_owned()));
            }
        }
        h
    };
    let c = |name, token: Option<String>, headers, code, status| Case {
        name,
        token,
        headers,
        code,
        status,
    };
    vec![
        (
            c("no credentials", None, ctx(&[]), "auth.token_missing", 401),
            None,
        ),
        (
            c(
                "bad token",
                Some("x.y.z".into()),
                ctx(&[]),
                "auth.token_invalid",
                401,
            ),
            None,
        ),
        (
            c(
                "expired token",
                Some(token("t_a", "u1", json!({"exp": now() - 300}))),
                ctx(&[]),
                "auth.token_expired",
                401,
            ),
            None,
        ),
        (
            // Credentials are checked before context headers, on every rail.
            c(
                "bad token and a malformed header",
                Some("x.y.z".into()),
                ctx(&[("x-tenant-id", "a b")]),
                "auth.token_invalid",
                401,
            ),
            None,
        ),
        (
            c(
                "malformed context claim",
                Some(token("t_a", "u1", json!({"project_id": "p 1<script>"}))),
                ctx(&[]),
                "auth.token_invalid",
                401,
            ),
            None,
        ),
        (
            c(
                "malformed subject",
                Some(token("t_a", "u1\r\nX-Injected: 1", json!({}))),
                ctx(&[]),
                "auth.token_invalid",
                401,
            ),
            None,
        ),
        (
            c(
                "no tenant",
                Some(good.clone()),
                ctx(&[("x-tenant-id", "")]),
                "auth.tenant_missing",
                400,
            ),
            None,
        ),
        (
            c(
                "no mode",
                Some(good.clone()),
                ctx(&[("x-mode", "")]),
                "auth.mode_missing",
                400,
            ),
            None,
        ),
        (
            c(
                "bad mode",
                Some(good.clone()),
                ctx(&[("x-mode", "root")]),
                "auth.mode_invalid",
                400,
            ),
            None,
        ),
        (
            c(
                "malformed header",
                Some(good.clone()),
                ctx(&[("x-project-id", "a b")]),
                "request.header_invalid",
                400,
            ),
            None,
        ),
        (
            c(
                "other tenant",
                Some(good.clone()),
                ctx(&[("x-tenant-id", "t_b")]),
                "auth.tenant_mismatch",
                403,
            ),
            None,
        ),
        (
            c(
                "other env",
                Some(good.clone()),
                ctx(&[("x-env", "prod")]),
                "auth.env_mismatch",
                403,
            ),
            None,
        ),
        (
            c(
                "token disagrees",
                Some(token("t_a", "u1", json!({"project_id": "p_x"}))),
                ctx(&[]),
                "auth.context_mismatch",
                403,
            ),
            None,
        ),
        (
            c(
                "foreign thread",
                Some(token("t_b", "u2", json!({}))),
                ctx(&[("x-tenant-id", "t_b")]),
                "chat.thread_forbidden",
                403,
            ),
            Some(foreign_thread.to_owned()),
        ),
        (
            c(
                "unknown thread",
                Some(good),
                ctx(&[]),
                "chat.thread_not_found",
                404,
            ),
            Some("th_unknown".into()),
        ),
    ]
}

fn assert_env(body: &[u8], code: &str, status: u16, what: &str) {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("{what}: not an envelope: {}", String::from_utf8_lossy(body)));
    assert_eq!(v["error"]["code"], code, "{what}");
    assert_eq!(v["error"]["http_status"], status, "{what}");
    assert_eq!(v["error"]["retryable"], false, "{what}");
}

#[tokio::test]
async fn every_refusal_is_the_same_on_http_sse_and_websocket() {
    let s = Stack::start("");
    let own = s.thread("t_a").await;
    // "foreign thread": a t_b token asking for t_a's thread.
    for (case, thread) in cases(&own) {
        let thread = thread.unwrap_or_else(|| own.clone());
        let auth = case.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut h: Vec<(&str, &str)> = case.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if let Some(a) = &auth {
            h.push(("authorization", a));
        }
        // The default HTTP route requires only the tenant; a missing mode is refused on SSE/WS.
        let http_applies = case.code != "auth.mode_missing";
        let mut paths = vec![format!("/sse/chat/{thread}")];
        if http_applies {
            paths.push(format!("/chat/threads/{thread}/messages"));
        }
        for path in paths {
            let r = get(&s.addr(), &path, &h).await;
            assert_eq!(r.status, case.status, "{} on {path}", case.name);
            assert_env(&r.body, case.code, case.status, case.name);
        }
        // WS: what the upgrade carries is refused before the 101, with the same status and code.
        match ws_connect(&s.addr(), &format!("/ws/chat/{thread}"), &h).await {
            Err((status, body)) => {
                assert_eq!(status, case.status, "{} on ws", case.name);
                assert_env(&body, case.code, case.status, case.name);
            }
            Ok(mut ws) => {
                // Nothing to refuse at the upgrade (no credentials): the hello carries the context.
                let mut context = serde_json::Map::new();
                for (k, v) in &case.headers {
                    let key = k.trim_start_matches("x-").replace('-', "_");
                    context.insert(key, json!(v));
                }
                ws.send(Message::text(
                    json!({"type": "hello", "context": context}).to_string(),
                ))
                .await
                .expect("hello");
                let env = ws_next_json(&mut ws).await;
                assert_eq!(env["error"]["code"], case.code, "{} on ws hello", case.name);
                assert_eq!(
                    ws_next(&mut ws).await,
                    WsEvent::Close(4003, case.code.into())
                );
            }
        }
    }
    let t = ticket("t_a", "u1", &own, "tid-auth");
    let first = get(
        &s.addr(),
        &format!("/chat/threads/{own}/messages?ticket={t}"),
        &[],
    )
    .await;
    assert_eq!(
        first.status, 401,
        "tickets are not accepted on the default HTTP routes"
    );
    let good = format!("Bearer {}", token("t_a", "u1", json!({})));
    let ok = get(
        &s.addr(),
        &format!("/chat/threads/{own}/messages"),
        &[("authorization", good.as_str()), ("x-tenant-id", "t_a")],
    )
    .await;
    assert_eq!(ok.status, 200);
    eventually!(10, "verified tenants are logged", {
        s.gw.logs().join("\n").contains("\"tenant_id\":\"t_a\"")
    });
    let logs = s.gw.logs().join("\n");
    for secret in [t.as_str(), "Bearer ey"] {
        assert!(!logs.contains(secret), "{secret} reached the logs");
    }
    assert!(!logs.contains("t_unknown"));
}
