use super::*;
use std::collections::HashMap;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn embedded_defaults_load() {
    let c = load(None, &env(&[]), &Overrides::default()).expect("defaults");
    assert_eq!(c.listen.to_string(), "127.0.0.1:8000");
    assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9901");
    assert_eq!(c.env, "dev");
    assert_eq!(c.workers, 0, "one worker per core unless configured");
    assert_eq!(c.sse.batch_window, Duration::from_millis(2));
    assert_eq!(
        c.routes.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["chat-sse", "chat-ws", "chat-create", "chat-http"]
    );
    assert_eq!(
        c.routes[0].require,
        vec![Field::Tenant, Field::Mode, Field::Project, Field::App]
    );
    assert_eq!(c.routes[2].registers_thread.as_deref(), Some("/id"));
    assert_eq!(
        c.registry.source,
        RegistrySource::Upstream {
            url: "http://127.0.0.1:9000".into()
        }
    );
    assert_eq!(c.registry.ttl, Duration::from_secs(30));
    assert_eq!(c.auth.leeway_s, 30);
    assert!(c.routes[0].accepts.ticket && !c.routes[2].accepts.ticket);
}

#[test]
fn env_comes_from_file_then_environment_then_dev() {
    let c = load(None, &env(&[("ENV", "staging")]), &Overrides::default()).expect("ok");
    assert_eq!(c.env, "staging");
    let c = load(
        Some("env = \"prod\""),
        &env(&[("ENV", "staging")]),
        &Overrides::default(),
    )
    .expect("ok");
    assert_eq!(c.env, "prod");
}

#[test]
fn flags_override_the_file() {
    let flags = Overrides {
        listen: Some("127.0.0.1:0".into()),
        admin_listen: None,
        upstream: Some("http://10.0.0.1:81".into()),
    };
    let c = load(Some("listen = \"0.0.0.0:1\""), &env(&[]), &flags).expect("ok");
    assert_eq!(c.listen.to_string(), "127.0.0.1:0");
    assert_eq!(c.upstream, "http://10.0.0.1:81");
    assert!(c.routes.iter().all(|r| r.upstream == "http://10.0.0.1:81"));
}

#[test]
fn every_problem_is_reported_with_its_key_path() {
    let text = r#"
listen = "nowhere"
bogus = 1
workers = 5000
[sse]
batch_window_ms = 5000
[auth]
leeway_s = "thirty"
public_keys = [{ pem_file = "k.pem" }]
[registry]
source = "carrier-pigeon"
[[routes]]
name = "x"
path = "sse/{thread_id}"
kind = "smoke"
require = ["mode", "nonsense"]
extra = true
"#;
    let errs = load(Some(text), &env(&[]), &Overrides::default())
        .expect_err("bad")
        .0;
    let expect = [
        "listen: \"nowhere\" is not an IP:port address",
        "bogus: unknown key",
        "workers: must be at most 1024 (0 = one per CPU core)",
        "sse.batch_window_ms: must be at most 1000",
        "auth.leeway_s: expected an integer, found string",
        "auth.public_keys[0].alg: is required: every key is pinned to one algorithm",
        "registry.source: \"carrier-pigeon\" is not \"upstream\" or \"file\"",
        "routes[0].path: must start with /",
        "routes[0].kind: \"smoke\" is not \"sse\", \"ws\" or \"http\"",
        "routes[0].require[1]: \"nonsense\" is not a context field (tenant, mode, project, app, surface, env, workspace, canvas, projection, panel)",
        "routes[0].require: must include \"tenant\" (tenant_id is always required)",
        "routes[0].extra: unknown key",
    ];
    for e in expect {
        assert!(errs.iter().any(|x| x == e), "missing {e:?} in {errs:#?}");
    }
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
}

#[test]
fn syntax_errors_are_reported() {
    let errs = load(Some("listen = "), &env(&[]), &Overrides::default())
        .expect_err("bad")
        .0;
    assert!(errs[0].starts_with("syntax:"), "{errs:?}");
}

#[test]
fn user_routes_replace_the_defaults() {
    let text = "[[routes]]\nname = \"only\"\npath = \"/api/**\"\n";
    let c = load(Some(text), &env(&[]), &Overrides::default()).expect("ok");
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.routes[0].kind, Rail::Http);
}

#[test]
fn file_registry_needs_a_file_and_https_is_accepted() {
    let errs = load(
        Some("[registry]\nsource = \"file\"\n"),
        &env(&[]),
        &Overrides::default(),
    )
    .expect_err("bad")
    .0;
    assert_eq!(
        errs,
        vec!["registry.file: is required when source = \"file\""]
    );
    let config = load(
        Some("upstream = \"https://app.internal:8443\"\ntls_ca_file = \"ca.pem\"\n[[routes]]\nname = \"r\"\npath = \"/x/**\"\ntls_server_name = \"app\"\n"),
        &env(&[]),
        &Overrides::default(),
    )
    .expect("https upstreams are accepted");
    assert_eq!(config.routes[0].upstream, "https://app.internal:8443");
    assert_eq!(config.routes[0].tls_server_name.as_deref(), Some("app"));
    let errs = load(
        Some("upstream = \"ftp://x:1\""),
        &env(&[]),
        &Overrides::default(),
    )
    .expect_err("bad")
    .0;
    assert_eq!(
        errs,
        vec!["upstream: \"ftp://x:1\" is not an http:// or https:// URL"],
        "reported once, where it was written, not again for each route that inherits it"
    );
}

#[test]
fn patterns_match_vars_and_tails() {
    let p = Pattern::parse("/chat/threads/{thread_id}/**").expect("ok");
    let c = p.matches("/chat/threads/th1/messages").expect("match");
    assert_eq!(c.get("thread_id"), Some("th1"));
    assert_eq!(c.tail(), Some("messages"));
    assert_eq!(
        p.matches("/chat/threads/th1")
            .map(|c| c.tail().map(str::to_owned)),
        Some(Some(String::new()))
    );
    assert!(p.matches("/chat/threads").is_none());
    assert!(p.matches("/chat/threads/bad id/x").is_none());
    assert!(p.matches("/chat/threads/th1/../../admin").is_none());
    let exact = Pattern::parse("/chat/threads").expect("ok");
    assert!(exact.matches("/chat/threads").is_some());
    assert!(exact.matches("/chat/threads/x").is_none());
    assert!(Pattern::parse("/a/**/b").is_err());
    assert!(Pattern::parse("/a/{}").is_err());
}

/// What a match captured, as owned text: the variables in order, and the tail.
type Plain = (Vec<(String, String)>, Option<String>);

fn plain(c: &pattern::Captures) -> Plain {
    let vars = c.vars().map(|(n, v)| (n.to_owned(), v.to_owned()));
    (vars.collect(), c.tail().map(str::to_owned))
}

/// The matching rule written plainly (every segment collected first), for comparison.
fn plain_match(pattern: &str, path: &str) -> Option<Plain> {
    let mut segs: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    let tail = segs.last() == Some(&"**");
    if tail {
        segs.pop();
    }
    let rest = path.strip_prefix('/')?;
    let parts: Vec<&str> = match rest.is_empty() {
        true => Vec::new(),
        false => rest.split('/').collect(),
    };
    if parts.len() < segs.len() || (!tail && parts.len() != segs.len()) {
        return None;
    }
    let mut caps: Plain = Default::default();
    for (seg, part) in segs.iter().zip(&parts) {
        match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) if railgate_policy::field::valid_value(part.as_bytes()) => {
                caps.0.push((name.to_owned(), (*part).to_owned()))
            }
            Some(_) => return None,
            None if seg == part => {}
            None => return None,
        }
    }
    if tail {
        let t = parts[segs.len()..].join("/");
        if t.split('/').any(|s| s == ".." || s == ".") {
            return None;
        }
        caps.1 = Some(t);
    }
    Some(caps)
}

#[test]
fn matching_agrees_with_the_plain_rule_on_every_short_path() {
    let words = ["", "chat", "threads", "th1", "..", ".", "a b", "sse"];
    let mut paths = vec![String::new()];
    let mut level = vec![String::new()];
    for _ in 0..5 {
        level = level
            .iter()
            .flat_map(|p| words.iter().map(move |w| format!("{p}/{w}")))
            .collect();
        paths.extend(level.iter().cloned());
    }
    paths.push("chat/threads/th1".into());
    let patterns = [
        "/chat/threads/{thread_id}/**",
        "/chat/threads",
        "/sse/chat/{thread_id}",
        "/**",
        "/chat/{thread_id}/{x}",
    ];
    for text in patterns {
        let p = Pattern::parse(text).expect("pattern");
        for path in &paths {
            assert_eq!(
                p.matches(path).as_ref().map(plain),
                plain_match(text, path),
                "{text} on {path:?}"
            );
        }
    }
}

#[test]
fn templates_render_from_captures() {
    let p = Pattern::parse("/sse/chat/{thread_id}").expect("ok");
    let c = p.matches("/sse/chat/th9").expect("match");
    assert_eq!(
        Pattern::render("/v2/stream/{thread_id}", &c),
        "/v2/stream/th9"
    );
    let p = Pattern::parse("/chat/{thread_id}/**").expect("ok");
    let c = p.matches("/chat/t1/a/b").expect("match");
    assert_eq!(
        Pattern::render("/backend/{thread_id}/**", &c),
        "/backend/t1/a/b"
    );
}

#[test]
fn ws_event_id_must_be_a_json_pointer() {
    let route = |ptr: &str| {
        format!("[[routes]]\nname = \"w\"\npath = \"/ws/{{thread_id}}\"\nkind = \"ws\"\nws_event_id = \"{ptr}\"\n")
    };
    let errs = load(Some(&route("event_id")), &env(&[]), &Overrides::default())
        .expect_err("not a pointer")
        .0;
    assert_eq!(
        errs,
        vec!["routes[0].ws_event_id: \"event_id\" is not a JSON pointer such as \"/id\" or \"/event/id\""]
    );
    let c = load(Some(&route("/event/id")), &env(&[]), &Overrides::default()).expect("pointer");
    assert_eq!(c.routes[0].ws_event_id, "/event/id");
}

#[test]
fn resources_and_delivery_are_read_and_checked() {
    let sse = |extra: &str| {
        format!("[[routes]]\nname = \"g\"\npath = \"/sse/canvas/{{canvas_id}}/gestures\"\nkind = \"sse\"\nresource = \"canvas_id\"\nresource_kind = \"canvas\"\n{extra}")
    };
    let c = load(
        Some(&sse("delivery = \"ephemeral\"\n")),
        &env(&[]),
        &Overrides::default(),
    )
    .expect("ephemeral");
    let r = &c.routes[0];
    assert_eq!(
        (r.resource.as_str(), r.resource_kind.as_str()),
        ("canvas_id", "canvas")
    );
    assert_eq!(
        r.delivery,
        Delivery::Ephemeral(Ephemeral {
            coalesce_key: "/actor_id".into(),
            key_rate_per_s: 60
        })
    );
    assert!(!r.resumable());
    let errs = |text: &str| {
        load(Some(text), &env(&[]), &Overrides::default())
            .expect_err("refused")
            .0
    };
    assert_eq!(
        errs(&sse("delivery = \"lossy\"\n")),
        vec!["routes[0].delivery: \"lossy\" is not \"durable\" or \"ephemeral\""]
    );
    assert_eq!(
        errs(&sse("coalesce_key = \"/actor_id\"\n")),
        vec!["routes[0].delivery: coalesce_key and key_rate_per_s need delivery = \"ephemeral\""]
    );
    assert_eq!(
        errs(&sse(
            "delivery = \"ephemeral\"\ncoalesce_key = \"actor_id\"\n"
        )),
        vec!["routes[0].coalesce_key: \"actor_id\" is not a JSON pointer such as \"/actor_id\""]
    );
    assert_eq!(
        errs(&sse("").replace("resource_kind = \"canvas\"", "resource_kind = \"Canvas\"")),
        vec!["routes[0].resource_kind: \"Canvas\" is not a lower-case name such as \"canvas\" (a-z, 0-9, _)"]
    );
    assert_eq!(
        errs(&sse("").replace("resource = \"canvas_id\"", "resource = \"board_id\"")),
        vec!["routes[0].path: sse and ws routes need a {board_id} segment (the route's resource)"]
    );
}
