use super::*;
use railgate_policy::{Field, RequestContext};

fn ctx() -> RequestContext {
    RequestContext::from_parts(
        &[
            (Field::Tenant, "t_a"),
            (Field::Env, "dev"),
            (Field::Mode, "lab"),
            (Field::Project, "p1"),
            (Field::App, "app"),
        ],
        "u1",
        "trace-1",
    )
}

/// A canvas panel's context for `user`.
fn canvas_ctx(user: &str) -> RequestContext {
    RequestContext::from_parts(
        &[
            (Field::Tenant, "t_a"),
            (Field::Env, "dev"),
            (Field::Canvas, "cv1"),
            (Field::Panel, "pa"),
        ],
        user,
        "trace-1",
    )
}

fn st() -> Stamp {
    Stamp::new(&ctx(), "th1")
}

const ROUTING: &str = r#"{"tenant_id":"t_a","env":"dev","thread_id":"th1","actor_id":"u1","mode":"lab","project_id":"p1","app_id":"app"}"#;

fn rewritten(data: &str) -> String {
    match stamp(data, &st()) {
        Stamped::Rewritten(s) => s,
        other => panic!("{data}: {other:?}"),
    }
}

#[test]
fn routing_and_trace_are_appended_and_other_members_keep_exact_bytes() {
    let data = r#"{"n":1e2,"big":123456789012345678901234,"s":"\u00e9\n","nested":{"x":[1, 2,{"y":null}]},"f":-0.0}"#;
    let got = rewritten(data);
    assert_eq!(
        got,
        format!(
            r#"{{"n":1e2,"big":123456789012345678901234,"s":"\u00e9\n","nested":{{"x":[1, 2,{{"y":null}}]}},"f":-0.0,"routing":{ROUTING},"meta":{{"trace_id":"trace-1"}}}}"#
        )
    );
}

#[test]
fn upstream_routing_is_overwritten_in_place_and_meta_keeps_its_members() {
    let data = r#"{"a":1,"routing":{"tenant_id":"t_a","extra":"x"},"meta":{"v":2,"trace_id":"spoofed"},"z":true}"#;
    assert_eq!(
        rewritten(data),
        format!(r#"{{"a":1,"routing":{ROUTING},"meta":{{"v":2,"trace_id":"trace-1"}},"z":true}}"#)
    );
}

#[test]
fn duplicate_routing_members_collapse_into_the_verified_one() {
    let data = r#"{"routing":{"tenant_id":"t_a"},"x":1,"routing":{"env":"dev"}}"#;
    assert_eq!(
        rewritten(data),
        format!(r#"{{"routing":{ROUTING},"x":1,"meta":{{"trace_id":"trace-1"}}}}"#)
    );
}

#[test]
fn escaped_keys_keep_their_exact_text() {
    let data = r#"{"k\u0041y" : "v" ,	"rout\u0069ng":{"tenant_id":"t_a"}}"#;
    assert_eq!(
        rewritten(data),
        format!(r#"{{"k\u0041y":"v","routing":{ROUTING},"meta":{{"trace_id":"trace-1"}}}}"#)
    );
}

#[test]
fn non_object_data_is_unchanged() {
    for data in [
        "[1,2]",
        "\"text\"",
        "plain words",
        "",
        "42",
        "[1,2]",
        " [{\"routing\":{\"tenant_id\":\"t_a\"}}]",
    ] {
        assert_eq!(stamp(data, &st()), Stamped::Unchanged, "{data}");
    }
}

#[test]
fn json_looking_data_that_is_not_strict_json_is_malformed() {
    for data in [
        "{broken",
        "{\"a\":1} trailing",
        r#"{"routing":{"tenant_id":"t_b"},"x":NaN}"#,
        r#"{"x":Infinity,"routing":{"tenant_id":"t_b"}}"#,
        r#"{"x":-Infinity}"#,
        r#"{"\ud800":1,"routing":{"tenant_id":"t_b"}}"#,
        r#"  [1, NaN]"#,
        "[1,",
    ] {
        assert_eq!(stamp(data, &st()), Stamped::Malformed, "{data}");
    }
}

#[test]
fn foreign_tenant_or_env_in_routing_is_reported() {
    for data in [
        r#"{"routing":{"tenant_id":"t_b"}}"#,
        r#"{"routing":{"tenant_id":"t_a","env":"prod"}}"#,
        r#"{"routing":{"tenant_id":7}}"#,
        r#"{"routing":{"tenant_id":"t_a"},"routing":{"tenant_id":"t_b"}}"#,
    ] {
        assert_eq!(
            stamp(data, &st()),
            Stamped::Foreign(Crossing::Tenant),
            "{data}"
        );
    }
    assert!(matches!(
        stamp(r#"{"routing":"not an object"}"#, &st()),
        Stamped::Rewritten(_)
    ));
}

#[test]
fn injected_values_cannot_add_a_line() {
    // Context values are syntax-checked upstream of here, but the trace id could come from a
    // header: even a CR/LF in it is escaped by JSON serialisation.
    let c = RequestContext::from_parts(
        &[(Field::Tenant, "t_a"), (Field::Env, "dev")],
        "u\r\n1",
        "tr\nace",
    );
    let s = Stamp::new(&c, "th");
    let Stamped::Rewritten(out) = stamp(r#"{"a":1}"#, &s) else {
        panic!("object")
    };
    assert!(!out.contains('\n') && !out.contains('\r'), "{out}");
}

#[test]
fn stamped_output_is_valid_json_with_the_same_other_values() {
    let data = r#"{"a":{"b":[1,2,3]},"c":"d","meta":7}"#;
    let out = rewritten(data);
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v["a"]["b"][2], 3);
    assert_eq!(
        v["meta"],
        serde_json::json!({"trace_id": "trace-1"}),
        "non-object meta is replaced"
    );
    assert_eq!(v["routing"]["actor_id"], "u1");
}

#[test]
fn client_routing_and_context_are_replaced() {
    let r = r#"{"tenant_id":"t_a"}"#;
    let c = r#"{"tenant_id":"t_a","user_id":"u1"}"#;
    assert_eq!(
        client_text(
            r#"{"type":"message","routing":{"tenant_id":"t_evil"},"context":{"tenant_id":"t_evil"},"text":"hi"}"#,
            r,
            c
        ),
        ClientText::Object(
            r#"{"type":"message","text":"hi","routing":{"tenant_id":"t_a"},"context":{"tenant_id":"t_a","user_id":"u1"}}"#.into()
        )
    );
    assert_eq!(
        client_text(r#"{"type":"message"}"#, r, c),
        ClientText::Object(
            r#"{"type":"message","routing":{"tenant_id":"t_a"},"context":{"tenant_id":"t_a","user_id":"u1"}}"#.into()
        )
    );
    assert_eq!(client_text("not json", r, c), ClientText::Plain);
    assert_eq!(
        client_text(r#"{"type":"hello","context":{}}"#, r, c),
        ClientText::Hello
    );
    assert_eq!(
        client_text(r#"{"type":"hell\u006f"}"#, r, c),
        ClientText::Hello
    );
    assert_eq!(
        client_text(r#"{"routing":{"tenant_id":"t_b"},"x":NaN}"#, r, c),
        ClientText::Malformed
    );
}

#[test]
fn shared_prefix_plus_tail_equals_the_full_stamp() {
    for data in [
        r#"{"type":"chat_message","seq":1,"n":1e2}"#,
        "{}",
        r#"{ "a" : [1, 2] }"#,
        // Line ends between members, none inside one: still one line once stamped.
        "{\"a\":1,\n\"b\":2\r\n}",
    ] {
        let p = prepare(data);
        let prefix = p.shared_prefix().expect("fast path applies");
        let fast = format!("{prefix}{}", st().tail());
        assert_eq!(Stamped::Rewritten(fast), p.stamp(&st()), "{data}");
    }
    for data in [
        r#"{"routing":{"tenant_id":"t_a"}}"#,
        r#"{"meta":{}}"#,
        "{\"a\":{\"b\":\n1}}",
        "{\"a\":1,\n\"b\":{\"c\":\r1}}",
        "[1]",
    ] {
        assert_eq!(prepare(data).shared_prefix(), None, "{data}");
    }
}

#[test]
fn another_scope_in_routing_is_reported_with_its_key() {
    let canvas = canvas_ctx("u1");
    let cst = Stamp::for_resource(&canvas, "canvas_id", "cv1");
    let scope = |k: &str| Stamped::Foreign(Crossing::Scope(k.to_owned()));
    for (data, want) in [
        (r#"{"routing":{"canvas_id":"cv2"}}"#, scope("canvas_id")),
        (
            r#"{"routing":{"canvas_id":"cv1","panel_id":"pb"}}"#,
            scope("panel_id"),
        ),
        (r#"{"routing":{"panel_id":7}}"#, scope("panel_id")),
        (
            r#"{"routing":{"tenant_id":"t_b","canvas_id":"cv2"}}"#,
            Stamped::Foreign(Crossing::Tenant),
        ),
    ] {
        assert_eq!(stamp(data, &cst), want, "{data}");
    }
    // Keys the stream has no value for (a thread, a projection) are not its boundary.
    for data in [
        r#"{"routing":{"canvas_id":"cv1","panel_id":"pa"},"x":1}"#,
        r#"{"routing":{"thread_id":"th9","projection_id":"pr1"},"x":1}"#,
    ] {
        let Stamped::Rewritten(out) = stamp(data, &cst) else {
            panic!("{data}")
        };
        assert!(
            out.contains(r#""canvas_id":"cv1""#) && out.contains(r#""panel_id":"pa""#),
            "{out}"
        );
    }
    // A thread's stream: another thread is another scope; a canvas is not its boundary.
    assert_eq!(
        stamp(r#"{"routing":{"thread_id":"th2"}}"#, &st()),
        scope("thread_id")
    );
    assert!(matches!(
        stamp(r#"{"routing":{"canvas_id":"cv9"}}"#, &st()),
        Stamped::Rewritten(_)
    ));
}

/// `routing` as a JSON map (insertion order kept, a repeated key keeping its first place and
/// taking the later value) would write it.
fn routing_by_map(ctx: &RequestContext, resource_key: &str, id: &str) -> String {
    let mut m = serde_json::Map::new();
    m.insert("tenant_id".into(), ctx.tenant_id().into());
    m.insert("env".into(), ctx.env().into());
    m.insert(resource_key.into(), id.into());
    m.insert("actor_id".into(), ctx.user_id.as_str().into());
    for (f, v) in ctx.fields() {
        if !matches!(f, Field::Tenant | Field::Env) {
            m.insert(f.key().into(), v.into());
        }
    }
    serde_json::Value::Object(m).to_string()
}

#[test]
fn routing_is_exact_json_with_a_resource_key_that_is_also_a_field() {
    let canvas = canvas_ctx("u\"1\\\u{1}é");
    let st = Stamp::for_resource(&canvas, "canvas_id", "cv1");
    assert_eq!(
        st.routing(),
        r#"{"tenant_id":"t_a","env":"dev","canvas_id":"cv1","actor_id":"u\"1\\\u0001é","panel_id":"pa"}"#
    );
    assert_eq!(st.routing(), routing_by_map(&canvas, "canvas_id", "cv1"));
    assert_eq!(
        st.scope.to_vec(),
        vec![
            ("canvas_id".to_owned(), "cv1".to_owned()),
            ("panel_id".to_owned(), "pa".to_owned())
        ]
    );
    assert_eq!(
        st.routing(),
        serde_json::from_str::<serde_json::Value>(st.routing())
            .map(|v| v.to_string())
            .unwrap_or_default()
    );
    let thread = Stamp::for_resource(&ctx(), "thread_id", "th1");
    assert_eq!(thread.routing(), ROUTING);
    assert_eq!(thread.routing(), routing_by_map(&ctx(), "thread_id", "th1"));
}

#[test]
fn routing_and_trace_id_are_read_out_of_the_one_tail() {
    let st = st();
    assert_eq!(
        st.tail(),
        format!(r#""routing":{ROUTING},"meta":{{"trace_id":"trace-1"}}}}"#)
    );
    assert_eq!(st.routing(), ROUTING);
    assert_eq!(st.trace_json(), r#""trace-1""#);
}
