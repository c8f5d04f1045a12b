//! Headless Chromium (Debian's `chromium`) driven over the DevTools protocol in real time: open
//! a page at a gateway's origin, run JavaScript in it, read back values. A page's own
//! `EventSource` and `WebSocket` are then the browser's, reconnect logic and cookies included.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long one DevTools command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// A running headless Chromium; killed on Drop.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

/// Flags for headless Chromium on a machine with no network beyond loopback (background
/// networking would fail against the closed network, many connections at a time).
pub const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// Path of Debian's Chromium; panics saying how to install it.
pub fn chromium() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromium not found: apt-get install chromium")
}

impl Browser {
    /// Starts Chromium headless with a fresh profile and connects to its DevTools endpoint.
    pub async fn launch() -> Browser {
        Browser::launch_with(&[]).await
    }

    /// Like [`Browser::launch`], with `extra` flags.
    pub async fn launch_with(extra: &[&str]) -> Browser {
        let profile = tempfile::tempdir().expect("profile");
        let mut child = Command::new(chromium())
            .args(FLAGS)
            .args(extra)
            .args([
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium printed its DevTools address");
        let (ws, _) = tokio::time::timeout(COMMAND_TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .expect("devtools connect in time")
            .expect("devtools connect");
        Browser {
            child,
            _profile: profile,
            ws,
            next_id: 1,
        }
    }

    /// Sends one command (to a page session when `session` is set) and returns its result.
    pub async fn command(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("send devtools command");
        let reply = tokio::time::timeout(COMMAND_TIMEOUT, async {
            loop {
                let Some(Ok(Message::Text(t))) = self.ws.next().await else {
                    panic!("devtools connection ended");
                };
                let v: Value = serde_json::from_str(t.as_str()).expect("devtools json");
                if v["id"] == id {
                    return v;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to {method} within {COMMAND_TIMEOUT:?}"));
        assert!(reply.get("error").is_none(), "{method}: {reply}");
        reply["result"].clone()
    }

    /// Opens a tab at `url` and returns its session, once the page's origin is `origin`.
    pub async fn open(&mut self, url: &str, origin: &str) -> String {
        let target = self
            .command(None, "Target.createTarget", json!({"url": url}))
            .await;
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = self
            .command(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        let session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
        while self.eval(&session, "location.origin").await != json!(origin) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "page {url} did not load"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        session
    }

    /// Evaluates `expression` in the page; returns its value (JSON-serialisable values only).
    pub async fn eval(&mut self, session: &str, expression: &str) -> Value {
        let r = self
            .command(
                Some(session),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
