//! What an operator sees from the binary: the startup line (config source, listeners, routes,
//! upstreams, credential sources, registry), flat JSON log lines, the "stopped" line after a
//! drain, warnings when nothing can authenticate, a bind error naming its address, exit codes of
//! usage errors, and the allocator's build settings.

use railgate_tests::bins;
use railgate_tests::eventually;
use railgate_tests::stack::Stack;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// The gateway's first JSON log line with this message.
fn line_with(s: &Stack, message: &str) -> Option<Value> {
    s.gw.json_logs()
        .into_iter()
        .find(|v| v["message"] == message)
}

#[tokio::test]
async fn startup_says_where_everything_comes_from_and_stopping_says_stopped() {
    let mut s = Stack::start("");
    eventually!(10, "the startup line is logged", {
        line_with(&s, "started").is_some()
    });
    let started = line_with(&s, "started").expect("started");
    assert!(
        started["config"]
            .as_str()
            .is_some_and(|c| c.ends_with("railgate.toml")),
        "{started}"
    );
    assert_eq!(
        started["listeners"],
        format!("listen={} admin={}", s.addr(), s.gw.admin())
    );
    let routes = started["routes"].as_str().expect("routes");
    for want in [
        "sse /sse/chat/{thread_id} -> http://",
        "ws /ws/chat/{thread_id} -> http://",
    ] {
        assert!(routes.contains(want), "{want} in {routes}");
    }
    assert_eq!(started["upstreams"], format!("http://{}", s.mock_addr()));
    assert_eq!(
        started["credentials"],
        "HS256 secret $AUTH_JWT_SIGNING, ticket secret $ENGINES_TICKET_SECRET"
    );
    assert_eq!(
        started["registry"],
        format!("http://{}/registry/threads/{{id}}", s.mock_addr())
    );
    assert_eq!(started["target"], "railgate::lifecycle");
    assert!(
        s.gw.json_logs().iter().all(|v| v.get("fields").is_none()),
        "log lines are flat"
    );
    assert!(line_with(&s, "stopped").is_none());
    s.gw.signal(15);
    assert_eq!(
        s.gw.wait_exit(Duration::from_secs(30))
            .and_then(|st| st.code()),
        Some(0)
    );
    eventually!(5, "the stopped line is logged", {
        line_with(&s, "stopped").is_some_and(|v| v["ok"] == true)
    });
}

fn railgate(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(bins::path("railgate"))
        .args(args)
        .current_dir(dir)
        .env_remove("AUTH_JWT_SIGNING")
        .env_remove("ENGINES_TICKET_SECRET")
        .env("RUST_LOG", "info")
        .output()
        .expect("run railgate")
}

#[test]
fn without_any_credential_check_and_serve_warn() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = railgate(&["check"], dir.path());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "configuration is valid\n"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("railgate: warning: no JWT key and no ticket secret are configured: every request will be refused with 401"),
        "{err}"
    );
    let config = dir.path().join("railgate.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:9\"\n",
    )
    .expect("write");
    let mut gw = railgate_tests::process::Proc::spawn(
        &bins::path("railgate"),
        &["serve", "--config", config.to_str().expect("utf8")],
        &[("AUTH_JWT_SIGNING", ""), ("ENGINES_TICKET_SECRET", "")],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !gw.logs().iter().any(|l| {
        l.contains("\"level\":\"WARN\"") && l.contains("every request will be refused with 401")
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "no warning: {:?}",
            gw.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    gw.kill9();
}

#[test]
fn a_bind_error_names_the_address() {
    let dir = tempfile::tempdir().expect("tmp");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = railgate(&["serve", "--listen", &addr], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("railgate: cannot listen on {addr}: ")),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    let dir = tempfile::tempdir().expect("tmp");
    for args in [
        &["--bogus"][..],
        &["serve", "--nope"],
        &["token"],
        &["frobnicate"],
    ] {
        let out = railgate(args, dir.path());
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
    for args in [&["--help"][..], &["--version"], &["check", "--help"]] {
        let out = railgate(args, dir.path());
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
}

#[test]
fn check_reports_every_problem_at_once_with_its_line_and_a_suggestion() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("railgate.toml");
    std::fs::write(
        &config,
        "upstream = \"ftp://app:8443\"\n\
         [sse]\n\
         keepalive = 15\n\
         [limits]\n\
         max_header_bytes = 10\n\
         [auth]\n\
         jwks_file = \"missing-jwks.json\"\n\
         [[auth.public_keys]]\n\
         pem_file = \"missing.pem\"\n\
         alg = \"RS256\"\n\
         [registry]\n\
         source = \"file\"\n\
         file = \"missing-threads.json\"\n",
    )
    .expect("write");
    let out = Command::new(bins::path("railgate"))
        .args(["check", "--config", config.to_str().expect("utf8")])
        .env("AUTH_JWT_SIGNING", "x")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    let at = config.display().to_string();
    for want in [
        format!("{at}:1: upstream: \"ftp://app:8443\" is not an http:// or https:// URL"),
        format!("{at}:3: sse.keepalive: unknown key (did you mean `keepalive_s`?)"),
        format!("{at}:5: limits.max_header_bytes: must be at least 1024"),
        "missing-jwks.json".to_owned(),
        "missing.pem".to_owned(),
        "missing-threads.json".to_owned(),
    ] {
        assert!(err.contains(&want), "missing {want:?} in\n{err}");
    }
    assert_eq!(
        err.matches("is not an http://").count(),
        1,
        "one problem reported once:\n{err}"
    );
    assert!(err.starts_with("railgate: configuration ("), "{err}");
    assert!(err.contains("has 6 problem(s):"), "{err}");
}

/// The binary's allocator is built with a deep thread cache (`.cargo/config.toml`: at least 128
/// freed objects per small size class; docs/BENCHMARKS.md, item 49). jemalloc prints its build
/// configuration and options at exit when asked to through its environment variable.
#[test]
fn the_allocator_is_built_with_a_deep_thread_cache() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(bins::path("railgate"))
        .arg("--version")
        .current_dir(dir.path())
        .env(
            "_RJEM_MALLOC_CONF",
            "stats_print:true,stats_print_opts:mdablxeh",
        )
        .output()
        .expect("run railgate");
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().map(str::trim).collect();
    for line in [
        "config.malloc_conf: \"tcache_nslots_small_min:128\"",
        "opt.tcache_nslots_small_min: 128",
    ] {
        assert!(lines.contains(&line), "no {line:?} in:\n{err}");
    }
}

#[test]
fn token_and_ticket_take_the_env_of_the_config() {
    use base64::Engine;
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("staging.toml");
    std::fs::write(&config, "env = \"staging\"\n").expect("write");
    let path = config.to_str().expect("utf8");
    let mint = |args: &[&str]| {
        let out = Command::new(bins::path("railgate"))
            .args(args)
            .current_dir(dir.path())
            .env("AUTH_JWT_SIGNING", "jwt-secret")
            .env("ENGINES_TICKET_SECRET", "ticket-secret")
            .env_remove("ENV")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        (
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (jwt, _) = mint(&["token", "--config", path, "--tenant", "t_a"]);
    let payload = jwt.split('.').nth(1).expect("payload");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64"),
    )
    .expect("json");
    assert_eq!(claims["env"], "staging");
    let (jwt, _) = mint(&["token", "--tenant", "t_a"]);
    let payload = jwt.split('.').nth(1).expect("payload");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64"),
    )
    .expect("json");
    assert!(
        claims.get("env").is_none(),
        "no file, no env claim: {claims}"
    );
    let secrets =
        railgate_policy::ticket::TicketSecrets::new(b"ticket-secret", None).expect("secrets");
    let base = [
        "ticket", "--config", path, "--tenant", "t_a", "--sub", "u1", "--thread", "th_1",
    ];
    let (raw, note) = mint(&base);
    let t = railgate_policy::ticket::open(&raw, &secrets, railgate_tests::stack::now())
        .expect("ticket");
    assert_eq!(t.env, "staging");
    assert!(
        note.contains("railgate: note: the stream routes require mode, project_id, app_id"),
        "{note}"
    );
    let full = [
        &base[..],
        &["--mode", "lab", "--project", "p_chat", "--app", "app-chat"],
    ]
    .concat();
    let (_, note) = mint(&full);
    assert!(note.is_empty(), "{note}");
}

/// `workers = 1` runs the gateway on a current-thread runtime (the startup line says which), and
/// that runtime serves the SSE and HTTP rails and drains on SIGTERM like the default one.
#[tokio::test]
async fn one_worker_runs_on_a_current_thread_runtime_and_serves_every_rail() {
    use railgate_tests::client::{get, SseStream};
    use railgate_tests::stack::{full_headers, refs, token};
    for (workers, flavor) in [("workers = 1\n", "current_thread"), ("", "multi_thread")] {
        let mut s = Stack::start(workers);
        eventually!(10, "the startup line is logged", {
            line_with(&s, "started").is_some()
        });
        assert_eq!(
            line_with(&s, "started").expect("started")["runtime"],
            flavor
        );
        let th = s.thread("t_a").await;
        let tok = token("t_a", "u1", serde_json::json!({}));
        let h = full_headers(&tok, "t_a");
        let mut st = SseStream::open(&s.addr(), &format!("/sse/chat/{th}"), &refs(&h)).await;
        assert_eq!(st.status, 200);
        s.publish(&th, 3).await;
        let mut seqs = Vec::new();
        while seqs.len() < 3 {
            let e = st
                .next_event_within(Duration::from_secs(20))
                .await
                .expect("an event within 20 s");
            if e.event == "chat_message" {
                seqs.push(e.json()["seq"].as_u64().expect("seq"));
            }
        }
        assert_eq!(seqs, [1, 2, 3]);
        let r = get(
            &s.addr(),
            &format!("/chat/threads/{th}/messages"),
            &refs(&h),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        s.gw.signal(15);
        assert_eq!(
            s.gw.wait_exit(Duration::from_secs(30))
                .and_then(|st| st.code()),
            Some(0)
        );
    }
}
