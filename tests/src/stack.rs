//! A running upstream-mock plus a railgate in front of it, with known secrets.

use crate::bins;
use crate::client::{post_json, HttpResponse};
use crate::process::Proc;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use railgate_policy::ticket::{encode as encode_ticket, TicketRequest, TicketSecrets};
use serde_json::{json, Value};

/// The HS256 secret every stack uses.
pub const JWT_SECRET: &str = "stack-jwt-secret-0123456789";
/// The ticket secret every stack uses.
pub const TICKET_SECRET: &str = "stack-ticket-secret-0123456789";
/// The admin token every stack uses.
pub const ADMIN_TOKEN: &str = "stack-admin-token";

/// Mock + gateway.
pub struct Stack {
    /// The upstream.
    pub mock: Proc,
    /// The gateway.
    pub gw: Proc,
    /// Holds the config file (and any files tests add).
    pub dir: tempfile::TempDir,
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Stack {
    /// Starts a mock and a gateway whose config is the defaults plus `extra_toml`
    /// (`{upstream}` in it is replaced by the mock's base URL).
    pub fn start(extra_toml: &str) -> Stack {
        let mock = Proc::spawn(
            &bins::path("upstream-mock"),
            &["--listen", "127.0.0.1:0"],
            &[],
        );
        Self::start_with_mock(mock, extra_toml)
    }

    /// Starts a gateway in front of an already running mock.
    pub fn start_with_mock(mock: Proc, extra_toml: &str) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let upstream = format!("http://{}", mock.addr());
        let config = format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\n{}",
            extra_toml.replace("{upstream}", &upstream).replace("{dir}", &dir.path().display().to_string())
        );
        std::fs::write(dir.path().join("railgate.toml"), config).expect("write config");
        let gw = spawn_gateway(dir.path(), None);
        Stack { mock, gw, dir }
    }

    /// Like [`Stack::start`], with the gateway limited to `nofile` open files.
    pub fn start_with_nofile(extra_toml: &str, nofile: u32) -> Stack {
        let mock = Proc::spawn(
            &bins::path("upstream-mock"),
            &["--listen", "127.0.0.1:0"],
            &[],
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nupstream = \"http://{}\"\n{extra_toml}",
            mock.addr()
        );
        std::fs::write(dir.path().join("railgate.toml"), config).expect("write config");
        let gw = spawn_gateway_limited(dir.path(), None, Some(nofile));
        Stack { mock, gw, dir }
    }

    /// Ends the gateway (`kill -9` when `kill9`, else SIGTERM and its drain) and starts a new one
    /// with the same config on the same client address (clients reconnect to the same URL).
    pub fn restart_gateway(&mut self, kill9: bool) {
        let addr = self.addr();
        if kill9 {
            self.gw.kill9();
        } else {
            self.gw.signal(15);
            assert!(
                self.gw
                    .wait_exit(std::time::Duration::from_secs(30))
                    .is_some(),
                "gateway did not exit after SIGTERM"
            );
        }
        self.gw = spawn_gateway(self.dir.path(), Some(&addr));
    }

    /// Another gateway with this stack's configuration, in front of the same mock (a replica),
    /// and the directory holding its copy of the config.
    pub fn replica(&self) -> (Proc, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(
            self.dir.path().join("railgate.toml"),
            dir.path().join("railgate.toml"),
        )
        .expect("copy config");
        (spawn_gateway(dir.path(), None), dir)
    }

    /// Restarts a replica started by [`Stack::replica`] (SIGTERM and drain) on its address.
    pub fn restart_replica(replica: &mut Proc, dir: &std::path::Path) {
        let addr = replica.addr();
        replica.signal(15);
        assert!(
            replica
                .wait_exit(std::time::Duration::from_secs(30))
                .is_some(),
            "replica did not exit after SIGTERM"
        );
        *replica = spawn_gateway(dir, Some(&addr));
    }

    /// Gateway address.
    pub fn addr(&self) -> String {
        self.gw.addr()
    }

    /// Mock address.
    pub fn mock_addr(&self) -> String {
        self.mock.addr()
    }

    /// Creates a thread directly on the mock (owned by `tenant` in env `dev`, project `p_chat`).
    pub async fn thread(&self, tenant: &str) -> String {
        let r = post_json(
            &self.mock_addr(),
            "/chat/threads",
            &[
                ("x-tenant-id", tenant),
                ("x-env", "dev"),
                ("x-project-id", "p_chat"),
            ],
            &json!({"title": "t"}),
        )
        .await;
        assert_eq!(r.status, 201);
        r.json()["id"].as_str().expect("id").to_owned()
    }

    /// Publishes `count` messages on the mock, synchronously.
    pub async fn publish(&self, thread: &str, count: u64) -> Value {
        let r = post_json(
            &self.mock_addr(),
            "/_mock/publish",
            &[],
            &json!({"thread_id": thread, "count": count}),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.json()
    }

    /// Replaces the mock's faults (`{}` clears them).
    pub async fn faults(&self, faults: Value) {
        let r = post_json(&self.mock_addr(), "/_mock/faults", &[], &faults).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }

    /// What the mock received, oldest first.
    pub async fn mock_requests(&self) -> Vec<Value> {
        let r = crate::client::get(&self.mock_addr(), "/_mock/requests", &[]).await;
        r.json().as_array().cloned().unwrap_or_default()
    }

    /// The `Last-Event-ID` of each request the mock got for `path`, oldest first (`null`:
    /// none).
    pub async fn mock_cursors(&self, path: &str) -> Vec<Value> {
        let requests = self.mock_requests().await.into_iter();
        requests
            .filter(|r| r["path"] == path)
            .map(|r| r["headers"]["last-event-id"].clone())
            .collect()
    }

    /// The gateway's metrics text.
    pub async fn metrics(&self) -> String {
        let r = crate::client::get(&self.gw.admin(), "/metrics", &[]).await;
        String::from_utf8_lossy(&r.body).into_owned()
    }

    /// The value of one metric sample line (`name{labels}`), 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        scrape(&self.gw.admin(), sample).await
    }
}

/// The value of one metric sample line of the gateway whose admin listener is `admin`.
pub async fn scrape(admin: &str, sample: &str) -> f64 {
    let r = crate::client::get(admin, "/metrics", &[]).await;
    metric_value(&String::from_utf8_lossy(&r.body), sample)
}

/// Finds `sample` (exact name and label set as rendered) in a Prometheus text body.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

fn spawn_gateway(dir: &std::path::Path, listen: Option<&str>) -> Proc {
    spawn_gateway_limited(dir, listen, None)
}

/// Spawns the gateway; with `nofile`, under that soft limit of open files (through `sh`'s
/// `ulimit -n`, then `exec`, so the process is the gateway itself).
fn spawn_gateway_limited(dir: &std::path::Path, listen: Option<&str>, nofile: Option<u32>) -> Proc {
    let path = dir.join("railgate.toml");
    let bin = bins::path("railgate");
    let bin_text = bin.to_str().expect("utf8").to_owned();
    let mut args = vec!["serve", "--config", path.to_str().expect("utf8")];
    if let Some(addr) = listen {
        args.extend(["--listen", addr]);
    }
    let script = format!("ulimit -n {} && exec \"$0\" \"$@\"", nofile.unwrap_or(0));
    let program = match nofile {
        Some(_) => {
            args.splice(0..0, ["-c", script.as_str(), bin_text.as_str()]);
            std::path::PathBuf::from("/bin/sh")
        }
        None => bin,
    };
    Proc::spawn(
        &program,
        &args,
        &[
            ("AUTH_JWT_SIGNING", JWT_SECRET),
            ("ENGINES_TICKET_SECRET", TICKET_SECRET),
            ("RAILGATE_ADMIN_TOKEN", ADMIN_TOKEN),
            ("ENV", "dev"),
            ("RUST_LOG", "info"),
        ],
    )
}

/// An HS256 token for `tenant` / `sub` valid for an hour, plus `extra` claims.
pub fn token(tenant: &str, sub: &str, extra: Value) -> String {
    let mut claims = json!({"sub": sub, "tenant_id": tenant, "exp": now() + 3600, "iat": now()});
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("sign")
}

/// A ticket for `thread`, signed with the stack's ticket secret (the default 60 s lifetime).
pub fn ticket(tenant: &str, sub: &str, thread: &str, tid: &str) -> String {
    ticket_for(tenant, sub, thread, tid, None)
}

/// A ticket for `thread` living `ttl_s` seconds (its session: an hour).
pub fn ticket_for(tenant: &str, sub: &str, thread: &str, tid: &str, ttl_s: Option<u64>) -> String {
    let secrets = TicketSecrets::new(TICKET_SECRET.as_bytes(), None).expect("secret");
    let req = TicketRequest {
        sub: sub.into(),
        tenant_id: tenant.into(),
        env: "dev".into(),
        thread_id: thread.into(),
        mode: Some("lab".into()),
        project_id: Some("p_chat".into()),
        app_id: Some("app-chat".into()),
        ttl_s,
        ..Default::default()
    };
    encode_ticket(&req.issue(tid.into(), now()), &secrets)
}

/// `Authorization` plus the four context headers the default SSE/WS routes require.
pub fn full_headers(bearer: &str, tenant: &str) -> Vec<(String, String)> {
    vec![
        ("authorization".into(), format!("Bearer {bearer}")),
        ("x-tenant-id".into(), tenant.into()),
        ("x-mode".into(), "lab".into()),
        ("x-project-id".into(), "p_chat".into()),
        ("x-app-id".into(), "app-chat".into()),
    ]
}

/// Borrows owned header pairs for the clients.
pub fn refs(h: &[(String, String)]) -> Vec<(&str, &str)> {
    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Asserts an envelope response: status, code, and the envelope's consistency.
pub fn assert_envelope(r: &HttpResponse, status: u16, code: &str) {
    assert_eq!(
        r.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert_eq!(v["error"]["http_status"], status);
    let trace = v["error"]["trace_id"].as_str().expect("trace_id");
    assert!(!trace.is_empty());
    assert_eq!(
        r.header("x-request-id"),
        Some(trace),
        "X-Request-Id echoes the trace id"
    );
    let keys: Vec<&str> = v["error"]
        .as_object()
        .expect("obj")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        vec!["code", "message", "http_status", "retryable", "trace_id"]
    );
}

/// The mock's resident memory, in KiB (from `/proc`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A stack whose mock keeps its state in a data dir, so it can be killed and restarted.
pub struct DurableStack {
    /// The stack.
    pub stack: Stack,
    data: tempfile::TempDir,
}

impl DurableStack {
    /// Starts a durable mock and a gateway (config = defaults + `extra_toml`).
    pub fn start(extra_toml: &str) -> DurableStack {
        let data = tempfile::tempdir().expect("data dir");
        let mock = Proc::spawn(
            &bins::path("upstream-mock"),
            &[
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data.path().to_str().expect("utf8"),
            ],
            &[],
        );
        DurableStack {
            stack: Stack::start_with_mock(mock, extra_toml),
            data,
        }
    }

    /// `kill -9` the mock and start it again on the same port and data dir.
    pub fn crash_and_restart_mock(&mut self) {
        let addr = self.stack.mock_addr();
        self.stack.mock.kill9();
        self.stack.mock = Proc::spawn(
            &bins::path("upstream-mock"),
            &[
                "--listen",
                &addr,
                "--data-dir",
                self.data.path().to_str().expect("utf8"),
            ],
            &[],
        );
    }

    /// Every seq the mock stored for a thread.
    pub async fn stored(&self, thread: &str) -> u64 {
        let r = crate::client::get(
            &self.stack.mock_addr(),
            &format!("/chat/threads/{thread}/messages"),
            &[],
        )
        .await;
        r.json().as_array().map(|a| a.len() as u64).unwrap_or(0)
    }
}

/// The process id of a running child.
pub fn pid_of(p: &Proc) -> u32 {
    p.pid()
}
