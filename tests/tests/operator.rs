//! What an operator sees from the binary: the startup line (config source, listeners, routes,
//! upstreams, credential sources, registry), flat JSON log lines, the "stopped" line after a
//! drain, warnings when nothing can authenticate, a bind error naming its address, and exit
//! codes of usage errors.

use railgate_tests::bins;
use railgate_tests::eventually;
use railgate_tests::stack::Stack;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// The gateway's JSON log lines.
fn json_logs(s: &Stack) -> Vec<Value> {
    s.gw.logs()
        .iter()
        .filter_map(|l| l.split_once("] ").map(|(_, rest)| rest.to_owned()))
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

fn line_with(s: &Stack, message: &str) -> Option<Value> {
    json_logs(s).into_iter().find(|v| v["message"] == message)
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
        json_logs(&s).iter().all(|v| v.get("fields").is_none()),
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
