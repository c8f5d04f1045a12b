//! `railgate demo`: an embedded upstream-mock and a gateway with fresh random secrets, a demo
//! thread receiving a message every second, a demo canvas streaming its three channels (a commit
//! every second, an artifact every five, gestures of three actors at 10/s each), and
//! ready-to-paste client commands. The gateway runs deploy/examples/railgate.canvas.toml's routes.

use crate::config::{self, Overrides};
use crate::env::names;
use crate::mint::{self, random_hex_id, TokenSpec};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::TcpListener;

/// The demo's tenant and context.
pub const TENANT: &str = "t_demo";
const PROJECT: &str = "p_chat";

async fn bind_or_any(preferred: &str) -> std::io::Result<TcpListener> {
    match TcpListener::bind(preferred).await {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind("127.0.0.1:0").await,
    }
}

/// The routes the demo's gateway runs: chat and canvases.
const ROUTES: &str = include_str!("../../deploy/examples/railgate.canvas.toml");

/// The commands a newcomer pastes, one per line.
pub fn instructions(
    listen: SocketAddr,
    admin: SocketAddr,
    (thread, canvas): (&str, &str),
    token: &str,
) -> String {
    let h = format!(
        "-H \"Authorization: Bearer {token}\" -H \"X-Tenant-Id: {TENANT}\" -H \"X-Mode: lab\" -H \"X-Project-Id: {PROJECT}\" -H \"X-App-Id: app-chat\""
    );
    let hello = format!(
        "{{\"type\":\"hello\",\"context\":{{\"tenant_id\":\"{TENANT}\",\"mode\":\"lab\",\"project_id\":\"{PROJECT}\",\"app_id\":\"app-chat\"}}}}"
    );
    format!(
        "railgate demo is running: a gateway on http://{listen} in front of an embedded chat backend.\n\
         A message is published to thread {thread} every second.\n\n\
         SSE (stamped events, one per second):\n\
         curl -N {h} http://{listen}/sse/chat/{thread}\n\n\
         Resume after event 3 (served from the gateway's journal, which the demo keeps\n\
         filled with a stream of its own; after 5 minutes event 3 is older than the journal\n\
         keeps and the backend answers the resume instead):\n\
         curl -N {h} -H \"Last-Event-ID: 3\" http://{listen}/sse/chat/{thread}\n\n\
         WebSocket (sends the hello, then prints messages for 30 s; npm install -g wscat):\n\
         wscat -H \"Authorization: Bearer {token}\" -c ws://{listen}/ws/chat/{thread} -x '{hello}' -w 30\n\n\
         Canvas {canvas}: commits (durable: ids, resume), then gestures (ephemeral: the newest\n\
         per actor, at most 30 per second each, no resume):\n\
         curl -N {h} http://{listen}/sse/canvas/{canvas}/commits\n\
         curl -N {h} http://{listen}/sse/canvas/{canvas}/gestures\n\n\
         A refusal (no X-Mode header):\n\
         curl -s -H \"Authorization: Bearer {token}\" -H \"X-Tenant-Id: {TENANT}\" http://{listen}/sse/chat/{thread}\n\n\
         Browser (tickets, EventSource and WebSocket from a page): http://{listen}/demo\n\n\
         Metrics: curl -s http://{admin}/metrics\n\
         Ctrl-C stops everything.\n"
    )
}

/// Runs the demo until Ctrl-C / SIGTERM.
pub fn run() -> ExitCode {
    crate::init_logging_at("warn");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("railgate: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        match demo().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("railgate demo: {e}");
                ExitCode::from(1)
            }
        }
    })
}

async fn demo() -> Result<(), String> {
    let store = upstream_mock::store::Store::in_memory();
    let canvases = std::sync::Arc::new(upstream_mock::canvas::Canvases::default());
    let mock_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let mock_addr = mock_listener.local_addr().map_err(|e| e.to_string())?;
    let (stop_mock, mock_stopped) = tokio::sync::oneshot::channel::<()>();
    let (mock_store, mock_canvases) = (store.clone(), canvases.clone());
    let mock = tokio::spawn(async move {
        let _ = upstream_mock::run_with(mock_listener, mock_store, mock_canvases, async {
            let _ = mock_stopped.await;
        })
        .await;
    });

    let env: HashMap<String, String> = HashMap::from([
        (names::JWT_SIGNING.to_owned(), random_hex_id()),
        (names::TICKET_SECRET.to_owned(), random_hex_id()),
        (names::ENV.to_owned(), "dev".to_owned()),
    ]);
    let main = bind_or_any("127.0.0.1:8000")
        .await
        .map_err(|e| e.to_string())?;
    let admin = bind_or_any("127.0.0.1:9901")
        .await
        .map_err(|e| e.to_string())?;
    let (listen, admin_addr) = (
        main.local_addr().map_err(|e| e.to_string())?,
        admin.local_addr().map_err(|e| e.to_string())?,
    );
    let flags = Overrides {
        listen: Some(listen.to_string()),
        admin_listen: Some(admin_addr.to_string()),
        upstream: Some(format!("http://{mock_addr}")),
    };
    let config = config::load(Some(ROUTES), &env, &flags).map_err(|e| e.to_string())?;
    let gw = crate::Gateway::new(config, &env).map_err(|e| e.join("; "))?;

    let thread = store
        .create_thread(TENANT, "dev", "demo", Some(PROJECT))
        .await
        .map_err(|e| format!("{e:?}"))?;
    let token = demo_token(&env)?;
    let publisher = tokio::spawn(publish_thread(store.clone(), thread.id.clone()));

    let canvas = canvases.create(TENANT, "dev", Some(PROJECT));
    let canvas_publisher = tokio::spawn(publish_canvas(canvas.clone()));
    let page_config = serde_json::json!({"token": token, "tenant": TENANT, "project": PROJECT, "thread": thread.id, "canvas": canvas.id()});
    let _ = gw.demo_page.set(
        include_str!("demo_page/index.html").replace("__RAILGATE_DEMO__", &page_config.to_string()),
    );
    let shutdown = crate::cli::shutdown_signal();
    crate::tickets_epoch(&gw).await;
    let keeper = tokio::spawn(keep_journal(listen, thread.id.clone(), token.clone()));
    println!("READY listen={listen} admin={admin_addr}");
    println!(
        "{}",
        instructions(listen, admin_addr, (&thread.id, canvas.id()), &token)
    );
    let listeners = crate::Listeners { main, admin };
    let result = crate::run(gw, listeners, shutdown).await;
    publisher.abort();
    canvas_publisher.abort();
    keeper.abort();
    let _ = stop_mock.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), mock).await;
    result.map_err(|e| e.to_string())
}

/// An hour's token for the demo user.
fn demo_token(env: &HashMap<String, String>) -> Result<String, String> {
    let spec = TokenSpec {
        tenant: TENANT.into(),
        sub: "demo-user".into(),
        env: None,
        ttl: Duration::from_secs(3600),
        claims: vec![],
    };
    mint::token(&spec, env, crate::clock::now()).map_err(|e| e.to_string())
}

/// The demo thread's life: a message every second.
async fn publish_thread(store: std::sync::Arc<upstream_mock::store::Store>, thread: String) {
    for n in 1u64.. {
        let _ = store
            .append(&thread, format!("demo message {n}"), None)
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The demo canvas's life: gestures of three actors at 10/s each, a commit every second, an
/// artifact every fifth.
async fn publish_canvas(canvas: std::sync::Arc<upstream_mock::canvas::Canvas>) {
    canvas.generate(3, 30 * 86_400, 30.0);
    for n in 1u64.. {
        let op = serde_json::json!({"actor_id": "demo-user", "op": {"stroke": n}});
        canvas.publish("commits", op, None);
        if n % 5 == 0 {
            let artifact = serde_json::json!({"actor_id": "demo-user", "kind": "preview", "uri": format!("/previews/{n}.png")});
            canvas.publish("artifacts", artifact, None);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A stream of the demo's own on its thread, through the gateway: the thread's journal holds
/// the recent events, so a pasted resume is answered from it. Reconnects when it ends.
async fn keep_journal(listen: SocketAddr, thread: String, token: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "GET /sse/chat/{thread} HTTP/1.1\r\nHost: {listen}\r\nAuthorization: Bearer {token}\r\n\
         X-Tenant-Id: {TENANT}\r\nX-Mode: lab\r\nX-Project-Id: {PROJECT}\r\nX-App-Id: app-chat\r\n\r\n"
    );
    let mut sink = vec![0u8; 16 * 1024];
    loop {
        if let Ok(mut conn) = tokio::net::TcpStream::connect(listen).await {
            if conn.write_all(request.as_bytes()).await.is_ok() {
                while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
