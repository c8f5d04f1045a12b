//! Cluster mode against real processes: a real `redis-server`, three railgate replicas with one
//! configuration, and the mock behind them.

use railgate_tests::client::{get, request, SseStream};
use railgate_tests::eventually;
use railgate_tests::process::Proc;
use railgate_tests::redis::Redis;
use railgate_tests::stack::{
    assert_envelope, full_headers, refs, scrape, ticket_for, token, Stack, ADMIN_TOKEN,
};
use serde_json::json;

struct Cluster {
    redis: Redis,
    a: Stack,
    b: (Proc, tempfile::TempDir),
    c: (Proc, tempfile::TempDir),
}

impl Cluster {
    fn start() -> Cluster {
        let redis = Redis::start();
        let a = Stack::start(&format!("[cluster]\nredis_url = \"{}\"\n", redis.url()));
        let (b, c) = (a.replica(), a.replica());
        Cluster { redis, a, b, c }
    }

    fn addrs(&self) -> [String; 3] {
        [self.a.addr(), self.b.0.addr(), self.c.0.addr()]
    }

    fn admins(&self) -> [String; 3] {
        [self.a.gw.admin(), self.b.0.admin(), self.c.0.admin()]
    }
}

async fn all_up(c: &Cluster, up: f64) -> bool {
    for admin in c.admins() {
        if scrape(&admin, "railgate_cluster_up").await != up {
            return false;
        }
    }
    true
}

async fn open_with_ticket(addr: &str, thread: &str, ticket: &str) -> SseStream {
    SseStream::open(addr, &format!("/sse/chat/{thread}?ticket={ticket}"), &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_is_used_once_across_replicas_and_their_restarts() {
    let mut c = Cluster::start();
    eventually!(10, "every replica reaches Redis", all_up(&c, 1.0).await);
    let th = c.a.thread("t_a").await;
    let used = ticket_for("t_a", "u1", &th, "tid-cluster-1", None);
    // Minted now, first used only after every replica restarted: in cluster mode a replica
    // trusts the shared book, not its own start time.
    let later = ticket_for("t_a", "u1", &th, "tid-cluster-2", None);
    let [a, b, cc] = c.addrs();
    assert_eq!(open_with_ticket(&a, &th, &used).await.status, 200);
    for addr in [&b, &cc] {
        let r = get(addr, &format!("/sse/chat/{th}?ticket={used}"), &[]).await;
        assert_envelope(&r, 401, "auth.ticket_replayed");
    }
    c.a.restart_gateway(false);
    Stack::restart_replica(&mut c.b.0, c.b.1.path());
    Stack::restart_replica(&mut c.c.0, c.c.1.path());
    eventually!(
        10,
        "every replica reaches Redis again",
        all_up(&c, 1.0).await
    );
    for addr in c.addrs() {
        let r = get(&addr, &format!("/sse/chat/{th}?ticket={used}"), &[]).await;
        assert_envelope(&r, 401, "auth.ticket_replayed");
    }
    let [_, _, cc] = c.addrs();
    assert_eq!(open_with_ticket(&cc, &th, &later).await.status, 200);
    let r = get(&c.a.addr(), &format!("/sse/chat/{th}?ticket={later}"), &[]).await;
    assert_envelope(&r, 401, "auth.ticket_replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_tickets_are_refused_and_streams_go_on() {
    let mut c = Cluster::start();
    eventually!(10, "every replica reaches Redis", all_up(&c, 1.0).await);
    let th = c.a.thread("t_a").await;
    let before = ticket_for("t_a", "u1", &th, "tid-outage-1", None);
    let mut stream = open_with_ticket(&c.a.addr(), &th, &before).await;
    assert_eq!(stream.status, 200);

    c.redis.kill9();
    eventually!(10, "every replica sees Redis down", all_up(&c, 0.0).await);
    let fresh = ticket_for("t_a", "u1", &th, "tid-outage-2", None);
    let r = get(
        &c.b.0.addr(),
        &format!("/sse/chat/{th}?ticket={fresh}"),
        &[],
    )
    .await;
    assert_envelope(&r, 503, "cluster.unavailable");
    let ready = get(&c.b.0.admin(), "/readyz", &[]).await;
    assert_eq!(
        (ready.status, String::from_utf8_lossy(&ready.body).into_owned()),
        (
            200,
            "ready\nupstream: reachable\ncluster: down (first uses of tickets are refused; streams go on)\n".to_owned()
        )
    );
    // A JWT stream opens, and the open ticket stream keeps flowing.
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
    let jwt = SseStream::open(&c.c.0.addr(), &format!("/sse/chat/{th}"), &refs(&h)).await;
    assert_eq!(jwt.status, 200);
    c.a.publish(&th, 2).await;
    let ids = stream.ids(2).await;
    assert_eq!(ids, [Some("1".to_owned()), Some("2".to_owned())]);

    c.redis.restart();
    eventually!(
        15,
        "every replica reaches Redis again",
        all_up(&c, 1.0).await
    );
    let r = open_with_ticket(&c.b.0.addr(), &th, &fresh).await;
    assert_eq!(
        r.status, 200,
        "the refused ticket was never used: it works now"
    );
    // Redis kept what it had answered (fsync'd append-only file): the first ticket stays used.
    let r = get(
        &c.c.0.addr(),
        &format!("/sse/chat/{th}?ticket={before}"),
        &[],
    )
    .await;
    assert_envelope(&r, 401, "auth.ticket_replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_evictions_and_learned_owners_reach_every_replica() {
    let c = Cluster::start();
    eventually!(10, "every replica reaches Redis", all_up(&c, 1.0).await);
    let th = c.a.thread("t_a").await;
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
    let lookups = |path: String| {
        let mock = c.a.mock_addr();
        async move {
            let r = get(&mock, "/_mock/requests", &[]).await.json();
            r.as_array()
                .map(|a| a.iter().filter(|x| x["path"] == path).count())
                .unwrap_or(0)
        }
    };
    let [a, _, cc] = c.addrs();
    let path = format!("/chat/threads/{th}/messages");
    assert_eq!(get(&cc, &path, &refs(&h)).await.status, 200);
    assert_eq!(get(&cc, &path, &refs(&h)).await.status, 200);
    let registry_path = format!("/registry/threads/{th}");
    assert_eq!(
        lookups(registry_path.clone()).await,
        1,
        "C caches the owner"
    );
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let del = request(
        "DELETE",
        &c.a.gw.admin(),
        &format!("/admin/registry/{th}"),
        &[("authorization", bearer.as_str())],
        vec![],
    )
    .await;
    assert_eq!(del.json(), json!({"thread_id": th, "dropped": false}));
    // The eviction published on A drops C's cached owner: C asks again.
    eventually!(10, "C looked the owner up again", {
        assert_eq!(get(&cc, &path, &refs(&h)).await.status, 200);
        lookups(registry_path.clone()).await == 2
    });

    // A thread made through A: C learns its owner from A, without asking the registry.
    let created =
        railgate_tests::client::post_json(&a, "/chat/threads", &refs(&h), &json!({"title": "x"}))
            .await;
    assert_eq!(created.status, 201);
    let new_th = created.json()["id"].as_str().expect("id").to_owned();
    let learned = "railgate_registry_lookups_total{result=\"learned\"}";
    eventually!(
        10,
        "C heard of the new owner",
        scrape(&c.c.0.admin(), learned).await == 1.0
    );
    let new_path = format!("/chat/threads/{new_th}/messages");
    assert_eq!(get(&cc, &new_path, &refs(&h)).await.status, 200);
    assert_eq!(
        lookups(format!("/registry/threads/{new_th}")).await,
        1,
        "only A's check that the new thread is nobody else's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_crosses_replicas_and_a_dead_replicas_members_leave() {
    use railgate_tests::client::{ws_next_json, ws_open};
    let mut c = Cluster::start();
    eventually!(10, "every replica reaches Redis", all_up(&c, 1.0).await);
    let th = c.a.thread("t_a").await;
    let path = format!("/ws/chat/{th}");
    let routing = json!({"tenant_id": "t_a", "env": "dev", "thread_id": th});
    let mut alice = ws_open(
        &c.a.addr(),
        &path,
        &token("t_a", "alice", json!({})),
        "t_a",
        None,
    )
    .await;
    // Bob joins on B once A's announcement of Alice has reached B (the admin listing shows her).
    let listed = |admin: String| {
        let th = th.clone();
        async move {
            let bearer = format!("Bearer {ADMIN_TOKEN}");
            get(
                &admin,
                &format!("/admin/presence/t_a/{th}"),
                &[("authorization", bearer.as_str())],
            )
            .await
            .json()
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["actor_id"].as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
        }
    };
    eventually!(
        10,
        "B knows Alice",
        listed(c.b.0.admin()).await == ["alice"]
    );
    let mut bob = ws_open(
        &c.b.0.addr(),
        &path,
        &token("t_a", "bob", json!({})),
        "t_a",
        None,
    )
    .await;
    // Alice hears of Bob: as a join, or — when he came within her own first window — in the
    // snapshot a newcomer gets.
    let heard = ws_next_json(&mut alice).await;
    assert!(
        heard
            == json!({"type": "presence", "op": "join", "actor_id": "bob", "surface_id": null, "routing": routing})
            || heard
                == json!({"type": "presence", "op": "snapshot", "members": [{"actor_id": "bob", "surface_id": null}], "routing": routing}),
        "{heard}"
    );
    assert_eq!(
        ws_next_json(&mut bob).await,
        json!({"type": "presence", "op": "snapshot", "members": [{"actor_id": "alice", "surface_id": null}], "routing": routing})
    );
    // B dies: on A, Bob leaves within the silence bound.
    c.b.0.kill9();
    let started = std::time::Instant::now();
    assert_eq!(
        ws_next_json(&mut alice).await,
        json!({"type": "presence", "op": "leave", "actor_id": "bob", "surface_id": null, "routing": routing})
    );
    println!("bob left {:?} after B was killed", started.elapsed());
    assert_eq!(listed(c.a.gw.admin()).await, ["alice"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_replica_from_the_cluster_journal() {
    let mut c = Cluster::start();
    eventually!(10, "every replica reaches Redis", all_up(&c, 1.0).await);
    let th = c.a.thread("t_a").await;
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
    let path = format!("/sse/chat/{th}");
    let mut first = SseStream::open(&c.b.0.addr(), &path, &refs(&h)).await;
    assert_eq!(first.status, 200);
    c.a.publish(&th, 5).await;
    let got = first.ids(5).await;
    assert_eq!(
        got,
        (1..=5).map(|n| Some(n.to_string())).collect::<Vec<_>>()
    );
    let journal = format!("railgate:journal:chat-sse:{th}");
    eventually!(
        10,
        "B wrote the five events to the cluster journal",
        c.redis.integer(&["XLEN", &journal]) == 5
    );
    // B dies; three more events; the client comes back to C, which never served it.
    c.b.0.kill9();
    drop(first);
    c.a.publish(&th, 3).await;
    let mut h = h.clone();
    h.push(("last-event-id".into(), "3".into()));
    let mut resumed = SseStream::open(&c.c.0.addr(), &path, &refs(&h)).await;
    assert_eq!(resumed.status, 200);
    let head = resumed.next_event().await.expect("resume_cursor");
    assert_eq!(
        (head.event.as_str(), head.json()),
        ("resume_cursor", json!({"cursor": "3", "source": "cluster"}))
    );
    let got = resumed.ids(5).await;
    assert_eq!(
        got,
        (4..=8).map(|n| Some(n.to_string())).collect::<Vec<_>>()
    );
    // 4 and 5 came from the cluster journal: C asked the upstream only for what followed 5.
    let asked = c.a.mock_cursors(&path).await;
    assert_eq!(
        asked,
        [json!(null), json!("5")],
        "B's stream from the live end, then C's after 5"
    );
}

/// On a route without `share_upstream` each client's stream writes the cluster's journal; one
/// that starts from now on a busy thread joins it only where its events follow on, so the
/// journal stays whole for resumes elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_joining_a_busy_thread_keeps_the_cluster_journal_whole() {
    let c = Cluster::start();
    eventually!(10, "every replica reaches Redis", all_up(&c, 1.0).await);
    let th = c.a.thread("t_a").await;
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
    let path = format!("/sse/chat/{th}");
    let journal = format!("railgate:journal:chat-sse:{th}");
    let ids = |from: u64, to: u64| (from..=to).map(|n| Some(n.to_string())).collect::<Vec<_>>();
    let mut first = SseStream::open(&c.a.addr(), &path, &refs(&h)).await;
    c.a.publish(&th, 3).await;
    assert_eq!(first.ids(3).await, ids(1, 3));
    eventually!(
        10,
        "1 to 3 in the cluster's journal",
        c.redis.integer(&["XLEN", &journal]) == 3
    );
    let mut second = SseStream::open(&c.b.0.addr(), &path, &refs(&h)).await;
    c.a.publish(&th, 2).await;
    assert_eq!(first.ids(2).await, ids(4, 5));
    assert_eq!(second.ids(2).await, ids(4, 5));
    eventually!(
        10,
        "4 and 5 after 1 to 3",
        c.redis.integer(&["XLEN", &journal]) == 5
    );
    let mut after_1 = h.clone();
    after_1.push(("last-event-id".into(), "1".into()));
    let mut resumed = SseStream::open(&c.c.0.addr(), &path, &refs(&after_1)).await;
    let head = resumed.next_event().await.expect("resume_cursor");
    assert_eq!(
        (head.event.as_str(), head.json()),
        ("resume_cursor", json!({"cursor": "1", "source": "cluster"}))
    );
    assert_eq!(resumed.ids(4).await, ids(2, 5));
}
