//! Outbound TLS against the binary: an identity provider over https found by OpenID discovery
//! (tokens accepted, a rotated key picked up, another issuer refused, a certificate from an
//! unknown CA refused), and `https://` / `wss://` upstreams on a foreign TLS stack (uvicorn over
//! Python's ssl) for the HTTP, SSE and WebSocket rails, with `tls_server_name`.

use railgate_tests::client::{get, ws_next_json, ws_open, SseStream};
use railgate_tests::eventually;
use railgate_tests::peer::{PeerOptions, PeerStack};
use railgate_tests::stack::{full_headers, now, refs, Stack};
use railgate_tests::tls::{EcKey, HttpsDocs, TestCa};
use serde_json::{json, Value};

fn claims(iss: &str) -> Value {
    json!({"sub": "u1", "tenant_id": "t_a", "iss": iss, "exp": now() + 600, "iat": now()})
}

async fn messages_as(s: &Stack, th: &str, token: &str) -> (u16, Value) {
    let bearer = format!("Bearer {token}");
    let r = get(
        &s.addr(),
        &format!("/chat/threads/{th}/messages"),
        &[("authorization", bearer.as_str()), ("x-tenant-id", "t_a")],
    )
    .await;
    let body = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_provider_over_https_is_found_by_discovery_and_followed() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tmp");
    let ca_file = ca.write(dir.path());
    let idp = HttpsDocs::start(&ca).await;
    let issuer = format!(
        "https://localhost:{}/realms/test",
        idp.addr.rsplit(':').next().expect("port")
    );
    let k1 = EcKey::new("k1");
    idp.set(
        "/realms/test/.well-known/openid-configuration",
        &json!({"issuer": issuer, "jwks_uri": format!("{issuer}/certs")}),
    );
    idp.set("/realms/test/certs", &json!({"keys": [k1.jwk]}));
    let config = format!(
        "tls_ca_file = \"{}\"\n[auth]\noidc_issuer = \"{issuer}\"\njwks_min_refresh_s = 0\n",
        ca_file.display()
    );
    let s = Stack::start(&config);
    let th = s.thread("t_a").await;
    assert_eq!(
        messages_as(&s, &th, &k1.sign(&claims(&issuer))).await.0,
        200
    );
    let (status, body) =
        messages_as(&s, &th, &k1.sign(&claims("https://elsewhere/realms/test"))).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("auth.token_invalid"))
    );
    // The provider rotates to a new key: a token signed with it is accepted at once (the
    // unknown kid makes the gateway fetch the keys again).
    let k2 = EcKey::new("k2");
    idp.set("/realms/test/certs", &json!({"keys": [k2.jwk]}));
    assert_eq!(
        messages_as(&s, &th, &k2.sign(&claims(&issuer))).await.0,
        200
    );

    // The same provider without its CA: verification fails, nothing is trusted, it says why.
    let s2 = Stack::start(&format!("[auth]\noidc_issuer = \"{issuer}\"\n"));
    let th2 = s2.thread("t_a").await;
    assert_eq!(
        messages_as(&s2, &th2, &k2.sign(&claims(&issuer))).await.0,
        401
    );
    eventually!(10, "the TLS failure is logged", {
        s2.gw
            .logs()
            .iter()
            .any(|l| l.contains("initial JWKS fetch failed") && l.contains("certificate"))
    });

    // A discovery document naming another issuer is not followed.
    let liar = format!(
        "https://localhost:{}/realms/liar",
        idp.addr.rsplit(':').next().expect("port")
    );
    idp.set(
        "/realms/liar/.well-known/openid-configuration",
        &json!({"issuer": issuer, "jwks_uri": format!("{issuer}/certs")}),
    );
    let s3 = Stack::start(&format!(
        "tls_ca_file = \"{}\"\n[auth]\noidc_issuer = \"{liar}\"\n",
        ca_file.display()
    ));
    let th3 = s3.thread("t_a").await;
    assert_eq!(
        messages_as(&s3, &th3, &k2.sign(&claims(&liar))).await.0,
        401
    );
    eventually!(10, "the issuer mismatch is logged", {
        s3.gw
            .logs()
            .iter()
            .any(|l| l.contains("initial JWKS fetch failed") && l.contains("is not"))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_upstreams_on_a_foreign_tls_stack_serve_every_rail() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tmp");
    let ca_file = ca.write(dir.path());
    let (cert, key) = ca.issue(&["localhost"]);
    let (cert_file, key_file) = (dir.path().join("peer.pem"), dir.path().join("peer.key"));
    std::fs::write(&cert_file, cert).expect("cert");
    std::fs::write(&key_file, key).expect("key");
    let opts = PeerOptions {
        tls: Some((cert_file, key_file)),
        ..PeerOptions::ids("hex")
    };
    // Routes to the backend's TLS port by name, and by address with `tls_server_name` (its
    // certificate names `localhost` only).
    let p = PeerStack::start_tls(opts, |tls_addr| {
        let port = tls_addr.rsplit(':').next().expect("port").to_owned();
        format!(
            "tls_ca_file = \"{ca}\"\n\
             [[routes]]\nname = \"sse\"\npath = \"/sse/chat/{{thread_id}}\"\nkind = \"sse\"\nupstream = \"https://localhost:{port}\"\n\
             [[routes]]\nname = \"ws\"\npath = \"/ws/chat/{{thread_id}}\"\nkind = \"ws\"\nupstream = \"https://localhost:{port}\"\n\
             [[routes]]\nname = \"by-address\"\npath = \"/chat/threads/{{thread_id}}/**\"\nkind = \"http\"\n\
             upstream = \"https://127.0.0.1:{port}\"\ntls_server_name = \"localhost\"\n\
             [[routes]]\nname = \"unnamed\"\npath = \"/raw/threads/{{thread_id}}/**\"\nkind = \"http\"\n\
             upstream = \"https://127.0.0.1:{port}\"\nupstream_path = \"/chat/threads/{{thread_id}}/**\"\n",
            ca = ca_file.display()
        )
    });
    let s = &p.stack;
    let th = p.thread("t_a").await;
    let tok = railgate_tests::stack::token("t_a", "u1", json!({}));
    let (status, _) = messages_as(s, &th, &tok).await;
    assert_eq!(status, 200, "HTTP over https with tls_server_name");
    let bearer = format!("Bearer {tok}");
    let raw = get(
        &s.addr(),
        &format!("/raw/threads/{th}/messages"),
        &[("authorization", bearer.as_str()), ("x-tenant-id", "t_a")],
    )
    .await;
    assert_eq!(
        raw.status, 503,
        "an address the certificate does not name is refused"
    );
    let h = full_headers(&tok, "t_a");
    let mut sse = SseStream::open(&s.addr(), &format!("/sse/chat/{th}"), &refs(&h)).await;
    assert_eq!(sse.status, 200);
    let ids = p.publish(&th, 3).await;
    // The backend's opening `retry` block carries no data: an EventSource dispatches nothing.
    let mut got = Vec::new();
    while got.len() < 3 {
        let ev = sse.next_event().await.expect("stream open");
        if !ev.data.is_empty() {
            got.push(ev);
        }
    }
    assert_eq!(
        got.iter()
            .map(|e| e.id.clone().expect("id"))
            .collect::<Vec<_>>(),
        ids
    );
    assert_eq!(got[0].json()["routing"]["tenant_id"], "t_a");
    let mut ws = ws_open(&s.addr(), &format!("/ws/chat/{th}"), &tok, "t_a", None).await;
    let more = p.publish(&th, 1).await;
    // Over wss: stamped messages, up to the one just published.
    loop {
        let v = ws_next_json(&mut ws).await;
        if v["type"] == "presence" {
            continue;
        }
        assert_eq!(v["routing"]["tenant_id"], "t_a", "{v}");
        if v["id"] == more[0] {
            break;
        }
    }
}

/// node's `oidc-provider` (pinned), installed with npm into `target/oidc-peer` on first use;
/// returns the peer script's path there.
fn oidc_peer() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf();
    let dir = root.join("target/oidc-peer");
    if !dir.join("node_modules/oidc-provider/package.json").exists() {
        std::fs::create_dir_all(&dir).expect("mkdir");
        let status = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg("oidc-provider@8.8.1")
            .status()
            .expect("this test needs node and npm (apt-get install nodejs npm)");
        assert!(status.success(), "npm install oidc-provider failed");
    }
    let script = dir.join("oidc.mjs");
    std::fs::copy(root.join("tests/peers/oidc.mjs"), &script).expect("copy peer");
    script
}

/// A client-credentials access token from the provider at `addr`.
async fn provider_token(addr: &str, ca_pem: &str) -> String {
    use base64::Engine;
    use http_body_util::BodyExt;
    let (io, _) = railgate_tests::tls::tls_connect(addr, ca_pem, &[b"http/1.1"])
        .await
        .expect("tls to the provider");
    let (mut h1, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .expect("h1");
    tokio::spawn(conn);
    let basic =
        base64::engine::general_purpose::STANDARD.encode("railgate-test:railgate-test-secret");
    let req = hyper::Request::post("/token")
        .header(
            "host",
            format!("localhost:{}", addr.rsplit(':').next().expect("port")),
        )
        .header("authorization", format!("Basic {basic}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"grant_type=client_credentials&scope=chat&resource=urn%3Arailgate",
        )))
        .expect("request");
    let resp = h1.send_request(req).await.expect("token answer");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).expect("json");
    v["access_token"].as_str().expect("access_token").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "installs node's oidc-provider with npm (tests/run-long)"]
async fn tokens_of_a_real_openid_provider_are_accepted_and_its_key_rotation_followed() {
    let script = oidc_peer();
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tmp");
    let ca_file = ca.write(dir.path());
    let (cert, key) = ca.issue(&["localhost"]);
    let (cert_file, key_file) = (dir.path().join("idp.pem"), dir.path().join("idp.key"));
    std::fs::write(&cert_file, cert).expect("cert");
    std::fs::write(&key_file, key).expect("key");
    let node = |kid: &str, port: Option<&str>| {
        let mut args = vec![
            script.to_str().expect("utf8"),
            cert_file.to_str().expect("utf8"),
            key_file.to_str().expect("utf8"),
            kid,
        ];
        args.extend(port);
        railgate_tests::process::Proc::spawn(std::path::Path::new("node"), &args, &[])
    };
    let mut idp = node("k1", None);
    let (addr, issuer) = (idp.addr(), idp.ready["issuer"].clone());
    let s = Stack::start(&format!(
        "tls_ca_file = \"{}\"\n[auth]\noidc_issuer = \"{issuer}\"\naudience = \"railgate\"\njwks_min_refresh_s = 0\n",
        ca_file.display()
    ));
    let th = s.thread("t_a").await;
    let first = provider_token(&addr, &ca.pem).await;
    assert_eq!(
        messages_as(&s, &th, &first).await.0,
        200,
        "the provider's token"
    );
    let forged = EcKey::new("k1").sign(&claims(&issuer));
    assert_eq!(
        messages_as(&s, &th, &forged).await.0,
        401,
        "same kid, another key"
    );
    // The provider restarts with a new key: its new tokens are accepted at once.
    idp.kill9();
    let port = addr.rsplit(':').next().expect("port").to_owned();
    let idp2 = node("k2", Some(&port));
    assert_eq!(idp2.addr(), addr);
    let second = provider_token(&addr, &ca.pem).await;
    assert_eq!(
        messages_as(&s, &th, &second).await.0,
        200,
        "the rotated key"
    );
}
