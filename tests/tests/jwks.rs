//! JWKS URL rotation: a new `kid` is accepted after one refetch, a removed key is refused after
//! the refresh, and unknown kids do not refetch more than once per `jwks_min_refresh_s`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use railgate_tests::client::get;
use railgate_tests::stack::{assert_envelope, now, Stack};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const RSA: &[u8] = include_bytes!("../../policy/tests/keys/rsa_private.pem");
const EC: &[u8] = include_bytes!("../../policy/tests/keys/ec_private.pem");

struct JwksServer {
    addr: String,
    doc: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

async fn jwks_server(initial: Value) -> JwksServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let doc = Arc::new(Mutex::new(initial));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (d, f) = (doc.clone(), fetches.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (d, f) = (d.clone(), f.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    f.fetch_add(1, Ordering::SeqCst);
                    let body = d.lock().expect("doc").to_string();
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    JwksServer { addr, doc, fetches }
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut v = serde_json::to_value(Jwk::from_encoding_key(key, alg).expect("jwk")).expect("json");
    v["kid"] = json!(kid);
    v
}

fn signed(key: &EncodingKey, alg: Algorithm, kid: &str) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    encode(
        &h,
        &json!({"sub": "u1", "tenant_id": "t_a", "exp": now() + 600}),
        key,
    )
    .expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_accepts_new_kids_after_one_refetch_and_drops_removed_keys() {
    let rsa = EncodingKey::from_rsa_pem(RSA).expect("rsa");
    let ec = EncodingKey::from_ec_pem(EC).expect("ec");
    let server = jwks_server(json!({"keys": [jwk(&rsa, Algorithm::RS256, "k1")]})).await;
    let s = Stack::start(&format!(
        "[auth]\njwks_url = \"http://{}/jwks.json\"\njwks_min_refresh_s = 2\njwks_refresh_s = 3600\n",
        server.addr
    ));
    let addr = s.addr();
    let th = s.thread("t_a").await;
    let path = format!("/chat/threads/{th}/messages");
    let call = |tok: String| {
        let (addr, path) = (addr.clone(), path.clone());
        async move {
            let a = format!("Bearer {tok}");
            get(
                &addr,
                &path,
                &[("authorization", a.as_str()), ("x-tenant-id", "t_a")],
            )
            .await
        }
    };
    assert_eq!(
        server.fetches.load(Ordering::SeqCst),
        1,
        "fetched once before READY"
    );
    assert_eq!(call(signed(&rsa, Algorithm::RS256, "k1")).await.status, 200);

    *server.doc.lock().expect("doc") = json!({"keys": [jwk(&ec, Algorithm::ES256, "k2")]});
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await; // let jwks_min_refresh_s pass
    assert_eq!(
        call(signed(&ec, Algorithm::ES256, "k2")).await.status,
        200,
        "new kid accepted after a refetch"
    );
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2);
    assert_envelope(
        &call(signed(&rsa, Algorithm::RS256, "k1")).await,
        401,
        "auth.token_invalid",
    );
    assert_envelope(
        &call(signed(&rsa, Algorithm::RS256, "k3")).await,
        401,
        "auth.token_invalid",
    );
    assert_eq!(
        server.fetches.load(Ordering::SeqCst),
        2,
        "unknown kids within jwks_min_refresh_s do not refetch"
    );
    // A token claiming HS256 with the RSA kid is refused: the key is pinned to its algorithm.
    assert_envelope(
        &call(signed(
            &EncodingKey::from_secret(b"x"),
            Algorithm::HS256,
            "k2",
        ))
        .await,
        401,
        "auth.token_invalid",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_refresh_keeps_the_previous_keys() {
    let rsa = EncodingKey::from_rsa_pem(RSA).expect("rsa");
    let server = jwks_server(json!({"keys": [jwk(&rsa, Algorithm::RS256, "k1")]})).await;
    let s = Stack::start(&format!(
        "[auth]\njwks_url = \"http://{}/jwks.json\"\njwks_min_refresh_s = 0\n",
        server.addr
    ));
    let th = s.thread("t_a").await;
    *server.doc.lock().expect("doc") = json!("not a jwks");
    let a = format!("Bearer {}", signed(&rsa, Algorithm::RS256, "k9"));
    let r = get(
        &s.addr(),
        &format!("/chat/threads/{th}/messages"),
        &[("authorization", a.as_str()), ("x-tenant-id", "t_a")],
    )
    .await;
    assert_eq!(r.status, 401, "unknown kid still refused");
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2, "it did try");
    let a = format!("Bearer {}", signed(&rsa, Algorithm::RS256, "k1"));
    let r = get(
        &s.addr(),
        &format!("/chat/threads/{th}/messages"),
        &[("authorization", a.as_str()), ("x-tenant-id", "t_a")],
    )
    .await;
    assert_eq!(
        r.status,
        200,
        "stale keys still served after a failed refresh: {}",
        String::from_utf8_lossy(&r.body)
    );
}
