//! Foreign peers: a chat backend built on third-party Python stacks (`tests/peers/backend.py`:
//! starlette, sse-starlette, uvicorn with `websockets`), run as a real process in front of which
//! the suites put railgate. Its interpreter is the venv that `tests/run` installs
//! (`target/peers-venv`), or `RAILGATE_PEER_PYTHON`; a missing one fails the test saying so.

use crate::client::post_json;
use crate::process::Proc;
use crate::stack::Stack;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// The Python interpreter that has the peers' packages.
pub fn python() -> PathBuf {
    let path = std::env::var_os("RAILGATE_PEER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/peers-venv/bin/python"));
    assert!(
        path.exists(),
        "the foreign-peer suite needs its Python venv at {}: run `tests/run` (it installs \
         tests/peers/requirements.txt there) or set RAILGATE_PEER_PYTHON",
        path.display()
    );
    path
}

/// How the backend behaves.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Event id style (`numeric`, `hex`, `ulid`, `random64`, `decreasing`, `list:a,b,…`).
    pub ids: String,
    /// End lines with CRLF.
    pub crlf: bool,
    /// Also serve TLS on a second port with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How long an idle keep-alive connection is kept, in seconds (uvicorn's default: 5).
    pub keep_alive_s: u32,
}

impl PeerOptions {
    /// Ids of `style`, LF line ends.
    pub fn ids(style: &str) -> PeerOptions {
        PeerOptions {
            ids: style.to_owned(),
            crlf: false,
            tls: None,
            keep_alive_s: 5,
        }
    }
}

/// Starts the backend on `listen` with its state in `data`.
fn spawn(listen: &str, data: &Path, opts: &PeerOptions) -> Proc {
    let script = workspace().join("tests/peers/backend.py");
    let data = data.to_str().expect("utf8");
    let mut args = vec![
        script.to_str().expect("utf8"),
        "--listen",
        listen,
        "--data",
        data,
        "--ids",
        &opts.ids,
    ];
    if opts.crlf {
        args.push("--crlf");
    }
    let keep_alive = opts.keep_alive_s.to_string();
    args.extend(["--keep-alive", keep_alive.as_str()]);
    let tls: Option<(String, String)> = opts.tls.as_ref().map(|(c, k)| {
        (
            c.to_str().expect("utf8").to_owned(),
            k.to_str().expect("utf8").to_owned(),
        )
    });
    if let Some((cert, key)) = &tls {
        args.extend(["--tls-cert", cert.as_str(), "--tls-key", key.as_str()]);
    }
    Proc::spawn(&python(), &args, &[("PYTHONUNBUFFERED", "1")])
}

/// railgate in front of the Python backend, whose state survives `kill -9`.
pub struct PeerStack {
    /// The gateway and the backend (as `mock`).
    pub stack: Stack,
    data: tempfile::TempDir,
    opts: PeerOptions,
}

impl PeerStack {
    /// Starts the backend and a gateway (config = defaults + `extra_toml`).
    pub fn start(opts: PeerOptions, extra_toml: &str) -> PeerStack {
        let data = tempfile::tempdir().expect("data dir");
        let backend = spawn("127.0.0.1:0", data.path(), &opts);
        PeerStack {
            stack: Stack::start_with_mock(backend, extra_toml),
            data,
            opts,
        }
    }

    /// Starts the backend with TLS on a second port (`opts.tls`) and a gateway whose config is
    /// the defaults plus what `config` makes of that TLS address.
    pub fn start_tls(opts: PeerOptions, config: impl FnOnce(&str) -> String) -> PeerStack {
        let data = tempfile::tempdir().expect("data dir");
        let backend = spawn("127.0.0.1:0", data.path(), &opts);
        let tls = backend.ready.get("tls").cloned().expect("READY has tls=");
        let extra = config(&tls);
        PeerStack {
            stack: Stack::start_with_mock(backend, &extra),
            data,
            opts,
        }
    }

    /// The backend's address.
    pub fn backend(&self) -> String {
        self.stack.mock_addr()
    }

    /// `kill -9` the backend and start it again on the same port with the same state.
    pub fn crash_and_restart_backend(&mut self) {
        let addr = self.backend();
        self.stack.mock.kill9();
        self.stack.mock = spawn(&addr, self.data.path(), &self.opts);
    }

    /// A thread owned by `tenant` (env `dev`, project `p_chat`); its id is opaque.
    pub async fn thread(&self, tenant: &str) -> String {
        let owner = json!({"tenant_id": tenant, "env": "dev", "project_id": "p_chat"});
        let r = post_json(&self.backend(), "/_peer/threads", &[], &owner).await;
        assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
        r.json()["id"].as_str().expect("id").to_owned()
    }

    /// Publishes `count` JSON messages; returns their ids.
    pub async fn publish(&self, thread: &str, count: u64) -> Vec<String> {
        self.publish_body(json!({"thread_id": thread, "count": count}))
            .await
    }

    /// Publishes events with exactly these `data` texts; returns their ids.
    pub async fn publish_data(&self, thread: &str, data: &[&str]) -> Vec<String> {
        self.publish_body(json!({"thread_id": thread, "data": data}))
            .await
    }

    /// Publishes events whose data a WebSocket gets as the message itself (not wrapped).
    pub async fn publish_raw(&self, thread: &str, data: &[&str]) -> Vec<String> {
        self.publish_body(json!({"thread_id": thread, "data": data, "raw": true}))
            .await
    }

    /// Every event's data the backend stored for a thread (client messages included).
    pub async fn stored(&self, thread: &str) -> Vec<String> {
        let r = crate::client::get(&self.backend(), &format!("/_peer/events/{thread}"), &[]).await;
        assert_eq!(r.status, 200);
        r.json()
            .as_array()
            .expect("list")
            .iter()
            .map(|v| v.as_str().expect("data").to_owned())
            .collect()
    }

    async fn publish_body(&self, body: Value) -> Vec<String> {
        let r = post_json(&self.backend(), "/_peer/publish", &[], &body).await;
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
        r.json()["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_str().expect("id").to_owned())
            .collect()
    }
}
