//! Context: required fields, syntax, the agreement matrix across header / token / ticket / hello,
//! env and tenant membership, trace ids, and the thread ownership decision.

use railgate_policy::context::{parse_hello, HeaderSource};
use railgate_policy::thread::{check_access, ThreadRecord};
use railgate_policy::ticket::TicketClaims;
use railgate_policy::token::Claims;
use railgate_policy::{
    build_context, ContextPolicy, ErrorCode, Field, Hello, RequestContext, Sources,
};
use serde_json::json;

const FALLBACK: &str = "0123456789abcdef0123456789abcdef";

fn modes() -> Vec<String> {
    vec!["lab".into(), "saas".into(), "enterprise".into()]
}

fn token(extra: serde_json::Value) -> Claims {
    let mut all = json!({"sub": "user-1", "exp": 2_000_000_000u64, "tenant_id": "t_demo"});
    for (k, v) in extra.as_object().expect("obj") {
        all[k] = v.clone();
    }
    let tenants = match (&all["tenant_id"], &all["tenants"]) {
        (serde_json::Value::String(t), _) => vec![t.clone()],
        (_, serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => vec![],
    };
    Claims::new(
        all["sub"].as_str().expect("sub").into(),
        2_000_000_000,
        tenants,
        all.get("env").and_then(|e| e.as_str()).map(String::from),
        all.as_object().expect("obj").clone(),
    )
}

fn ticket() -> TicketClaims {
    TicketClaims {
        tid: "tid-1".into(),
        sub: "user-1".into(),
        tenant_id: "t_demo".into(),
        env: "dev".into(),
        thread_id: "th-1".into(),
        exp: 1_900_000_060,
        iat: 1_900_000_000,
        sx: 1_900_000_900,
        mode: Some("saas".into()),
        project_id: Some("p_chat".into()),
        app_id: Some("app-chat".into()),
        surface_id: None,
    }
}

fn full_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("X-Tenant-Id", "t_demo"),
        ("X-Mode", "lab"),
        ("X-Project-Id", "p_chat"),
        ("X-App-Id", "app-chat"),
    ]
}

const SSE_REQUIRE: &[Field] = &[Field::Tenant, Field::Mode, Field::Project, Field::App];

struct Case<'a> {
    headers: Vec<(&'a str, &'a str)>,
    token: Option<Claims>,
    ticket: Option<TicketClaims>,
    hello: Option<Hello>,
    thread: Option<&'a str>,
    path_fields: Vec<(Field, &'a str)>,
    require: &'a [Field],
}

impl<'a> Case<'a> {
    fn jwt(headers: Vec<(&'a str, &'a str)>) -> Self {
        Case {
            headers,
            token: Some(token(json!({}))),
            ticket: None,
            hello: None,
            thread: Some("th-1"),
            path_fields: Vec::new(),
            require: SSE_REQUIRE,
        }
    }
    fn run(&self) -> Result<RequestContext, ErrorCode> {
        let modes = modes();
        let policy = ContextPolicy {
            gateway_env: "dev",
            allowed_modes: &modes,
            require: self.require,
        };
        let src = Sources {
            headers: &self.headers as &dyn HeaderSource,
            token: self.token.as_ref(),
            ticket: self.ticket.as_ref(),
            hello: self.hello.as_ref(),
            path_thread: self.thread,
            path_fields: &self.path_fields,
            fallback_trace_id: FALLBACK,
        };
        build_context(&policy, &src).map_err(|d| d.code)
    }
}

fn hello(ctx: serde_json::Value) -> Hello {
    parse_hello(
        json!({"type": "hello", "context": ctx})
            .to_string()
            .as_bytes(),
    )
    .expect("hello")
}

#[test]
fn full_headers_with_jwt_build_the_context() {
    let ctx = Case::jwt(full_headers()).run().expect("ok");
    assert_eq!(ctx.tenant_id(), "t_demo");
    assert_eq!(ctx.env(), "dev", "env defaults to the gateway's");
    assert_eq!(ctx.get(Field::Mode), Some("lab"));
    assert_eq!(ctx.user_id, "user-1");
    assert_eq!(ctx.trace_id, FALLBACK);
    assert_eq!(ctx.expires_at, 2_000_000_000);
    assert_eq!(ctx.ticket_id, None);
}

#[test]
fn no_credentials_is_token_missing_before_anything_else() {
    let mut c = Case::jwt(vec![]);
    c.token = None;
    assert_eq!(c.run(), Err(ErrorCode::TokenMissing));
}

#[test]
fn every_required_field_reports_its_own_missing_code() {
    for f in Field::ALL {
        let require = [f];
        let c = Case {
            headers: vec![("X-Tenant-Id", "t_demo")],
            require: &require,
            ..Case::jwt(vec![])
        };
        let got = c.run();
        if matches!(f, Field::Tenant) {
            assert!(got.is_ok());
        } else {
            assert_eq!(got, Err(f.missing_code()), "{f:?}");
            assert_eq!(
                f.missing_code().as_str(),
                format!("auth.{}_missing", f.short())
            );
        }
    }
    let c = Case::jwt(vec![]);
    assert_eq!(
        c.run(),
        Err(ErrorCode::TenantMissing),
        "tenant is reported first"
    );
}

#[test]
fn missing_fields_are_reported_in_contract_order() {
    let c = Case::jwt(vec![("X-Tenant-Id", "t_demo"), ("X-App-Id", "a")]);
    assert_eq!(c.run(), Err(ErrorCode::ModeMissing));
    let c = Case::jwt(vec![("X-Tenant-Id", "t_demo"), ("X-Mode", "lab")]);
    assert_eq!(c.run(), Err(ErrorCode::ProjectMissing));
    let c = Case::jwt(vec![
        ("X-Tenant-Id", "t_demo"),
        ("X-Mode", "lab"),
        ("X-Project-Id", "p"),
    ]);
    assert_eq!(c.run(), Err(ErrorCode::AppMissing));
}

#[test]
fn malformed_or_repeated_headers_are_header_invalid() {
    let bad_values = [
        "",
        "has space",
        "semi;colon",
        "new\nline",
        "ünïcode",
        &"x".repeat(129),
    ];
    for v in bad_values {
        let mut h = full_headers();
        h[1] = ("X-Mode", v);
        assert_eq!(Case::jwt(h).run(), Err(ErrorCode::HeaderInvalid), "{v:?}");
    }
    let mut h = full_headers();
    h.push(("x-tenant-id", "t_demo"));
    assert_eq!(
        Case::jwt(h).run(),
        Err(ErrorCode::HeaderInvalid),
        "duplicate, even if equal"
    );
    let mut h = full_headers();
    h.push(("X-Request-Id", "bad id"));
    assert_eq!(Case::jwt(h).run(), Err(ErrorCode::HeaderInvalid));
    let long = "t".repeat(128);
    let mut h = full_headers();
    h[0] = ("X-Tenant-Id", &long);
    assert_eq!(
        Case::jwt(h).run(),
        Err(ErrorCode::TenantMismatch),
        "128 chars is valid syntax"
    );
}

#[test]
fn syntax_is_checked_before_missing_fields() {
    let c = Case::jwt(vec![("X-Tenant-Id", "bad value")]);
    assert_eq!(c.run(), Err(ErrorCode::HeaderInvalid));
}

#[test]
fn mode_outside_allowed_modes_is_invalid() {
    let mut h = full_headers();
    h[1] = ("X-Mode", "godmode");
    assert_eq!(Case::jwt(h).run(), Err(ErrorCode::ModeInvalid));
}

#[test]
fn tenant_must_be_granted_by_the_token() {
    let mut h = full_headers();
    h[0] = ("X-Tenant-Id", "t_other");
    assert_eq!(Case::jwt(h.clone()).run(), Err(ErrorCode::TenantMismatch));
    let mut c = Case::jwt(h.clone());
    c.token = Some(token(
        json!({"tenant_id": null, "tenants": ["t_x", "t_other"]}),
    ));
    assert!(c.run().is_ok(), "tenants array grants");
    let mut c = Case::jwt(h);
    c.token = Some(token(json!({"tenant_id": null})));
    assert_eq!(
        c.run(),
        Err(ErrorCode::TenantMismatch),
        "a token with no tenant grants none"
    );
}

#[test]
fn env_must_match_gateway_and_token() {
    let mut h = full_headers();
    h.push(("X-Env", "prod"));
    assert_eq!(Case::jwt(h).run(), Err(ErrorCode::EnvMismatch));
    let mut h = full_headers();
    h.push(("X-Env", "dev"));
    assert_eq!(
        Case::jwt(h).run().map(|c| c.env().to_string()),
        Ok("dev".into())
    );
    let mut c = Case::jwt(full_headers());
    c.token = Some(token(json!({"env": "staging"})));
    assert_eq!(c.run(), Err(ErrorCode::EnvMismatch));
    let mut c = Case::jwt(full_headers());
    c.token = Some(token(json!({"env": "dev"})));
    assert!(c.run().is_ok());
}

#[test]
fn membership_400s_come_before_403s() {
    let mut h = vec![("X-Tenant-Id", "t_other"), ("X-Env", "prod")];
    let c = Case::jwt(h.clone());
    assert_eq!(c.run(), Err(ErrorCode::ModeMissing));
    h.extend([("X-Mode", "lab"), ("X-Project-Id", "p"), ("X-App-Id", "a")]);
    assert_eq!(Case::jwt(h).run(), Err(ErrorCode::EnvMismatch));
}

#[test]
fn token_claims_supply_and_must_agree() {
    let mut c = Case::jwt(vec![
        ("X-Tenant-Id", "t_demo"),
        ("X-Project-Id", "p"),
        ("X-App-Id", "a"),
    ]);
    c.token = Some(token(json!({"mode": "saas"})));
    assert_eq!(
        c.run().map(|x| x.get(Field::Mode).map(String::from)),
        Ok(Some("saas".into()))
    );
    let mut c = Case::jwt(full_headers());
    c.token = Some(token(json!({"project_id": "p_other"})));
    assert_eq!(c.run(), Err(ErrorCode::ContextMismatch));
}

#[test]
fn ticket_supplies_context_and_binds_thread() {
    let c = Case {
        headers: vec![],
        token: None,
        ticket: Some(ticket()),
        ..Case::jwt(vec![])
    };
    let ctx = c.run().expect("ticket alone");
    assert_eq!(ctx.get(Field::Mode), Some("saas"));
    assert_eq!(ctx.ticket_id.as_deref(), Some("tid-1"));
    assert_eq!(
        ctx.expires_at, 1_900_000_900,
        "a ticket stream lives until sx"
    );
    let c = Case {
        headers: vec![],
        token: None,
        ticket: Some(ticket()),
        thread: Some("th-2"),
        ..Case::jwt(vec![])
    };
    assert_eq!(c.run(), Err(ErrorCode::ContextMismatch));
}

/// (header mode, hello mode, ticket mode, token mode, accepted)
type ModeCase = (
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    bool,
);

#[test]
fn agreement_matrix_across_header_ticket_hello_and_token() {
    // (header mode, hello mode, ticket mode, token mode) → outcome
    let cases: &[ModeCase] = &[
        (Some("saas"), Some("saas"), Some("saas"), Some("saas"), true),
        (Some("lab"), None, Some("saas"), None, false),
        (None, Some("lab"), Some("saas"), None, false),
        (None, None, Some("saas"), Some("lab"), false),
        (Some("saas"), Some("lab"), None, None, false),
        (None, Some("saas"), None, Some("saas"), true),
        (None, None, Some("saas"), None, true),
    ];
    for (i, (h, he, ti, to)) in cases.iter().map(|c| (c.0, c.1, c.2, c.3)).enumerate() {
        let mut headers = vec![
            ("X-Tenant-Id", "t_demo"),
            ("X-Project-Id", "p_chat"),
            ("X-App-Id", "app-chat"),
        ];
        if let Some(m) = h {
            headers.push(("X-Mode", m));
        }
        let mut tk = ticket();
        tk.mode = ti.map(String::from);
        let tok = token(match to {
            Some(m) => json!({"mode": m}),
            None => json!({}),
        });
        let hl = hello(match he {
            Some(m) => json!({"mode": m}),
            None => json!({}),
        });
        let c = Case {
            headers,
            token: Some(tok),
            ticket: Some(tk),
            hello: Some(hl),
            thread: Some("th-1"),
            path_fields: Vec::new(),
            require: SSE_REQUIRE,
        };
        let want_ok = cases[i].4;
        match c.run() {
            Ok(ctx) => assert!(want_ok, "case {i} accepted: {ctx:?}"),
            Err(code) => {
                assert!(!want_ok, "case {i} refused: {code:?}");
                assert_eq!(code, ErrorCode::ContextMismatch, "case {i}");
            }
        }
    }
}

#[test]
fn ticket_tenant_disagreeing_with_hello_is_context_mismatch() {
    let c = Case {
        headers: vec![],
        token: None,
        ticket: Some(ticket()),
        hello: Some(hello(
            json!({"tenant_id": "t_evil", "mode": "saas", "project_id": "p_chat", "app_id": "app-chat"}),
        )),
        ..Case::jwt(vec![])
    };
    assert_eq!(c.run(), Err(ErrorCode::ContextMismatch));
}

#[test]
fn hello_user_id_must_be_the_subject() {
    let mut c = Case::jwt(full_headers());
    c.hello = Some(hello(json!({"user_id": "user-1"})));
    assert!(c.run().is_ok());
    c.hello = Some(hello(json!({"user_id": "admin"})));
    assert_eq!(c.run(), Err(ErrorCode::ContextMismatch));
    let mut c = Case::jwt(full_headers());
    let mut t = ticket();
    t.sub = "someone-else".into();
    c.ticket = Some(t);
    assert_eq!(
        c.run(),
        Err(ErrorCode::ContextMismatch),
        "ticket and token subjects differ"
    );
}

#[test]
fn hello_alone_can_carry_the_whole_context() {
    let mut c = Case::jwt(vec![]);
    c.hello = Some(hello(
        json!({"tenant_id": "t_demo", "mode": "lab", "project_id": "p", "app_id": "a", "request_id": "req-7"}),
    ));
    let ctx = c.run().expect("ok");
    assert_eq!(ctx.trace_id, "req-7");
    let mut c = Case::jwt(vec![]);
    c.hello = Some(hello(json!({"tenant_id": 7})));
    assert_eq!(c.run(), Err(ErrorCode::HeaderInvalid));
}

#[test]
fn seed_000_hello_missing_mode_project_or_app() {
    for (drop, code) in [
        ("mode", ErrorCode::ModeMissing),
        ("project_id", ErrorCode::ProjectMissing),
        ("app_id", ErrorCode::AppMissing),
    ] {
        let mut ctx = json!({"tenant_id": "t_demo", "mode": "saas", "project_id": "p_chat", "app_id": "app-chat", "user_id": "user-1"});
        ctx.as_object_mut().expect("obj").remove(drop);
        let mut c = Case::jwt(vec![]);
        c.hello = Some(hello(ctx));
        assert_eq!(c.run(), Err(code), "{drop}");
        assert_eq!(code.http_status(), 400);
        assert_eq!(code.ws_close_code(), 4003);
    }
}

#[test]
fn trace_id_comes_from_request_id_then_traceparent_then_fallback() {
    let mut h = full_headers();
    h.push(("X-Request-Id", "req-1"));
    h.push((
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ));
    assert_eq!(Case::jwt(h).run().map(|c| c.trace_id), Ok("req-1".into()));
    let mut h = full_headers();
    h.push((
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ));
    assert_eq!(
        Case::jwt(h).run().map(|c| c.trace_id),
        Ok("4bf92f3577b34da6a3ce929d0e0e4736".into())
    );
    for bad in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "garbage",
    ] {
        let mut h = full_headers();
        h.push(("traceparent", bad));
        assert_eq!(
            Case::jwt(h).run().map(|c| c.trace_id),
            Ok(FALLBACK.into()),
            "{bad}"
        );
    }
    let mut c = Case::jwt(vec![
        ("X-Request-Id", "a"),
        ("X-Tenant-Id", "t_demo"),
        ("X-Mode", "lab"),
        ("X-Project-Id", "p"),
        ("X-App-Id", "a"),
    ]);
    c.hello = Some(hello(json!({"request_id": "b"})));
    assert_eq!(c.run(), Err(ErrorCode::ContextMismatch));
}

#[test]
fn hello_parsing_rejects_non_hellos() {
    for bad in [
        r#"{"type":"message"}"#,
        "[]",
        "nope",
        r#"{"type":"hello","context":[]}"#,
        r#"{"type":"hello","last_event_id":5}"#,
        r#"{"type":"hello","type":"hello"}"#,
    ] {
        assert_eq!(
            parse_hello(bad.as_bytes()).map_err(|d| d.code),
            Err(ErrorCode::HeaderInvalid),
            "{bad}"
        );
    }
    let h = parse_hello(
        br#"{"type":"hello","context":{"tenant_id":"t"},"last_event_id":"42","ticket":"v1.x.y"}"#,
    )
    .expect("ok");
    assert_eq!(h.last_event_id.as_deref(), Some("42"));
    assert_eq!(h.ticket.as_deref(), Some("v1.x.y"));
}

#[test]
fn field_names_round_trip() {
    for f in Field::ALL {
        assert_eq!(Field::parse(f.short()), Some(f));
        assert_eq!(Field::parse(f.key()), Some(f));
        assert!(f.header().starts_with("x-"));
    }
    assert_eq!(Field::parse("user"), None);
}

fn ctx_of(tenant: &str, env: &str, project: Option<&str>) -> RequestContext {
    let mut fields = vec![(Field::Tenant, tenant), (Field::Env, env)];
    if let Some(p) = project {
        fields.push((Field::Project, p));
    }
    RequestContext::from_parts(&fields, "u", "t")
}

#[test]
fn thread_access_decisions() {
    let rec = ThreadRecord {
        tenant_id: "t_a".into(),
        env: "dev".into(),
        project_id: Some("p1".into()),
        disabled_routes: Vec::new(),
    };
    let code = |ctx: &RequestContext, r: Option<&ThreadRecord>, hide| {
        check_access(ctx, r, hide).map_err(|d| d.code)
    };
    assert_eq!(
        code(&ctx_of("t_a", "dev", Some("p1")), Some(&rec), false),
        Ok(())
    );
    assert_eq!(code(&ctx_of("t_a", "dev", None), Some(&rec), false), Ok(()));
    assert_eq!(
        code(&ctx_of("t_a", "dev", None), None, false),
        Err(ErrorCode::ThreadNotFound)
    );
    assert_eq!(
        code(&ctx_of("t_b", "dev", None), Some(&rec), false),
        Err(ErrorCode::ThreadForbidden)
    );
    assert_eq!(
        code(&ctx_of("t_a", "prod", None), Some(&rec), false),
        Err(ErrorCode::ThreadForbidden)
    );
    assert_eq!(
        code(&ctx_of("t_a", "dev", Some("p2")), Some(&rec), false),
        Err(ErrorCode::ThreadForbidden)
    );
    assert_eq!(
        code(&ctx_of("t_b", "dev", None), Some(&rec), true),
        Err(ErrorCode::ThreadNotFound)
    );
    assert_eq!(
        code(&ctx_of("t_a", "dev", None), None, true),
        Err(ErrorCode::ThreadNotFound)
    );
}

#[test]
fn context_values_from_credentials_follow_the_header_syntax() {
    let mut c = Case::jwt(vec![("X-Tenant-Id", "t_demo")]);
    c.require = &[Field::Tenant];
    c.token = Some(token(json!({"project_id": "p 1<script>"})));
    assert_eq!(c.run(), Err(ErrorCode::TokenInvalid), "a malformed claim");
    c.token = Some(token(json!({"sub": "user\r\nX-Injected: 1"})));
    assert_eq!(c.run(), Err(ErrorCode::TokenInvalid), "a malformed sub");
    c.token = None;
    let mut t = ticket();
    t.project_id = Some("p 1".into());
    c.ticket = Some(t);
    c.headers = vec![];
    assert_eq!(
        c.run(),
        Err(ErrorCode::TicketInvalid),
        "a malformed ticket field"
    );
    let mut t = ticket();
    t.sub = "a b".into();
    c.ticket = Some(t);
    assert_eq!(
        c.run(),
        Err(ErrorCode::TicketInvalid),
        "a malformed ticket subject"
    );
}

#[test]
fn a_path_variable_named_like_a_field_is_a_source_that_must_agree() {
    let mut c = Case::jwt(full_headers());
    c.path_fields = vec![(Field::Canvas, "cv_1")];
    let ctx = c.run().expect("admitted");
    assert_eq!(ctx.get(Field::Canvas), Some("cv_1"));

    let mut headers = full_headers();
    headers.push(("X-Canvas-Id", "cv_1"));
    let mut c = Case::jwt(headers.clone());
    c.path_fields = vec![(Field::Canvas, "cv_1")];
    assert_eq!(
        c.run().expect("same value").get(Field::Canvas),
        Some("cv_1")
    );

    let mut c = Case::jwt(headers);
    c.path_fields = vec![(Field::Canvas, "cv_2")];
    assert_eq!(c.run().err(), Some(ErrorCode::ContextMismatch));

    let mut c = Case::jwt(full_headers());
    c.path_fields = vec![(Field::Panel, "a b")];
    assert_eq!(c.run().err(), Some(ErrorCode::PathInvalid));
}

#[test]
fn a_headers_values_are_told_apart_as_none_one_or_several() {
    use railgate_policy::context::Values;
    let h: Vec<(&str, &str)> = vec![
        ("X-Tenant-Id", "t_a"),
        ("x-mode", "lab"),
        ("X-MODE", "prod"),
        ("x-mode", "dev"),
    ];
    assert_eq!(h.values("x-tenant-id"), Values::One(b"t_a"));
    assert_eq!(h.values("x-mode"), Values::Several);
    assert_eq!(h.values("x-app-id"), Values::None);
    assert_eq!(
        Values::of([b"a".as_slice(), b"b"].into_iter()),
        Values::Several
    );
    assert_eq!(Values::of(std::iter::empty()), Values::None);
}
