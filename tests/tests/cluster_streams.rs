//! Shared SSE streams in cluster mode against real processes: a real `redis-server`, railgate
//! replicas with one configuration, and the mock behind them — one upstream stream per thread
//! for the cluster, and every client's sequence whole through a holder's death, a stream resumed
//! past the cluster's journal and a Redis outage.

use railgate_tests::client::{get, SseStream};
use railgate_tests::eventually;
use railgate_tests::redis::Redis;
use railgate_tests::stack::{full_headers, refs, scrape, token, Stack};
use serde_json::json;

/// A cluster config whose chat SSE route shares upstream streams.
fn shared_cluster(redis: &Redis) -> String {
    format!(
        "[cluster]\nredis_url = \"{}\"\n[[routes]]\nname = \"chat-sse\"\npath = \"/sse/chat/{{thread_id}}\"\nkind = \"sse\"\nshare_upstream = true\nrequire = [\"tenant\"]\n",
        redis.url()
    )
}

/// The one replica (index) whose `railgate_cluster_upstream_streams` is 1, if exactly one is.
async fn lease_holder(admins: &[String]) -> Option<usize> {
    let mut held = Vec::new();
    for (i, admin) in admins.iter().enumerate() {
        if scrape(admin, "railgate_cluster_upstream_streams").await == 1.0 {
            held.push(i);
        }
    }
    held.first().copied().filter(|_| held.len() == 1)
}

/// `from..=to` as event ids.
fn ids(from: u64, to: u64) -> Vec<Option<String>> {
    (from..=to).map(|n| Some(n.to_string())).collect()
}

/// A stream resumed after `cursor` on `addr`, which no journal could replay: its first event
/// says it resumes from the upstream.
async fn resumed_from_upstream(
    addr: &str,
    path: &str,
    h: &[(String, String)],
    cursor: &str,
) -> SseStream {
    let mut with_cursor = h.to_vec();
    with_cursor.push(("last-event-id".into(), cursor.into()));
    let mut resumed = SseStream::open(addr, path, &refs(&with_cursor)).await;
    assert_eq!(resumed.status, 200);
    let head = resumed.next_event().await.expect("resume_cursor");
    assert_eq!(
        (head.event.as_str(), head.json()),
        (
            "resume_cursor",
            json!({"cursor": cursor, "source": "upstream"})
        )
    );
    resumed
}

/// Mock stats: upstream SSE streams opened so far.
async fn upstream_streams(s: &Stack) -> u64 {
    mock_stat(s, "sse_streams_opened").await
}

/// Mock stats: streams open now (each sees the next publish).
async fn mock_streams(s: &Stack) -> u64 {
    mock_stat(s, "streams_active").await
}

async fn mock_stat(s: &Stack, name: &str) -> u64 {
    let stats = get(&s.mock_addr(), "/_mock/stats", &[]).await.json();
    stats[name].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upstream_stream_per_thread_for_the_cluster_and_failover_keeps_every_sequence() {
    let redis = Redis::start();
    let a = Stack::start(&shared_cluster(&redis));
    let mut a = a;
    let (mut b, _bd) = a.replica();
    let (mut c, _cd) = a.replica();
    let th = a.thread("t_a").await;
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
    let path = format!("/sse/chat/{th}");
    let addrs = [a.addr(), b.addr(), c.addr()];
    let mut clients: Vec<(usize, SseStream)> = Vec::new();
    for i in 0..300 {
        let st = SseStream::open(&addrs[i % 3], &path, &refs(&h)).await;
        assert_eq!(st.status, 200);
        clients.push((i % 3, st));
    }
    let admins = [a.gw.admin(), b.admin(), c.admin()];
    eventually!(
        15,
        "one replica holds the thread's lease",
        lease_holder(&admins).await.is_some()
    );
    let holder = lease_holder(&admins).await.expect("holder");
    assert_eq!(
        upstream_streams(&a).await,
        1,
        "300 clients on three replicas: one upstream stream"
    );

    // 200 events at 50/s; the holder is killed once its clients have seen 20.
    let r = railgate_tests::client::post_json(
        &a.mock_addr(),
        "/_mock/publish",
        &[],
        &json!({"thread_id": th, "count": 200, "rate_per_s": 50}),
    )
    .await;
    assert_eq!(r.status, 202);
    let watcher = clients
        .iter()
        .position(|(r, _)| *r == holder)
        .expect("a client of the holder");
    let seen: Vec<_> = clients[watcher].1.take(20).await;
    assert_eq!(
        seen.last().and_then(|e| e.id.clone()),
        Some("20".to_owned())
    );
    match holder {
        0 => a.gw.kill9(),
        1 => b.kill9(),
        _ => c.kill9(),
    }
    let alive: Vec<String> = (0..3)
        .filter(|r| *r != holder)
        .map(|r| addrs[r].clone())
        .collect();
    let want = |from: u64| {
        (from..=200)
            .map(|n| Some(n.to_string()))
            .collect::<Vec<_>>()
    };
    let (mut reconnected, mut own_streams) = (0, 0);
    for (i, (replica, st)) in clients.iter_mut().enumerate() {
        if *replica != holder {
            let already = if i == watcher { 20 } else { 0 };
            let got = st.ids(200 - already).await;
            assert_eq!(got, want(already as u64 + 1), "client {i} on a survivor");
            continue;
        }
        // The killed replica's client: what it got, then the rest from a survivor.
        let mut last = if i == watcher { 20 } else { 0 };
        while let Some(ev) = st
            .next_event_within(std::time::Duration::from_secs(10))
            .await
        {
            last = ev
                .id
                .as_deref()
                .and_then(|v| v.parse().ok())
                .unwrap_or(last);
        }
        let mut hh = h.clone();
        hh.push(("last-event-id".into(), last.to_string()));
        let mut again = SseStream::open(&alive[i % 2], &path, &refs(&hh)).await;
        assert_eq!(again.status, 200);
        let mut got = Vec::new();
        while got.len() < (200 - last) as usize {
            let ev = again.next_event().await.expect("resumed event");
            match ev.event.as_str() {
                "resume_cursor" => own_streams += u64::from(ev.json()["source"] == "upstream"),
                _ => got.push(ev.id),
            }
        }
        assert_eq!(
            got,
            want(last + 1),
            "client {i} resumed on a survivor after {last}"
        );
        reconnected += 1;
    }
    assert_eq!(reconnected, 100);
    // A resumed client whose last event never reached the cluster's journal (the holder died
    // first) is resumed from the upstream on a stream of its own.
    let asked = a.mock_cursors(&path).await;
    assert_eq!(
        upstream_streams(&a).await,
        2 + own_streams,
        "the survivor that took the lease opened the only other shared one; asked after {asked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_streams_go_on_through_a_redis_outage_without_a_gap_or_a_duplicate() {
    let mut redis = Redis::start();
    let a = Stack::start(&shared_cluster(&redis));
    let (b, _bd) = a.replica();
    let th = a.thread("t_a").await;
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
    let path = format!("/sse/chat/{th}");
    let mut on_a = SseStream::open(&a.addr(), &path, &refs(&h)).await;
    let mut on_b = SseStream::open(&b.addr(), &path, &refs(&h)).await;
    let admins = [a.gw.admin(), b.admin()];
    eventually!(
        15,
        "one replica reads the upstream",
        reading(&admins).await == 1.0
    );
    a.publish(&th, 3).await;
    for st in [&mut on_a, &mut on_b] {
        assert_eq!(st.ids(3).await, ids(1, 3));
    }
    redis.kill9();
    eventually!(
        15,
        "both replicas read the upstream themselves",
        reading(&admins).await == 2.0
    );
    a.publish(&th, 3).await;
    for st in [&mut on_a, &mut on_b] {
        assert_eq!(st.ids(3).await, ids(4, 6));
    }
    redis.restart();
    a.publish(&th, 3).await;
    for st in [&mut on_a, &mut on_b] {
        assert_eq!(st.ids(3).await, ids(7, 9));
    }
    // Nothing twice: the next event on each is the next id.
    a.publish(&th, 1).await;
    for st in [&mut on_a, &mut on_b] {
        assert_eq!(st.take(1).await[0].id.as_deref(), Some("10"));
    }
}

/// The holder relays an event and stops before the cluster's journal has it; a client that got
/// it resumes on another replica, where no journal has it, and gets an upstream stream of its
/// own. What that stream relays must not reach the journal past the hole: every follower would
/// skip the event the journal never got. (The holder that stopped is a lease held by a replica
/// that never renews or reads: the replicas read nothing until it is let go.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumed_past_the_cluster_journal_leaves_no_gap_for_the_followers() {
    let redis = Redis::start();
    let mut t = Stopped::start(&redis).await;
    let (a, b, th, h, path) = (&t.a, &t.b.0, &t.th, &t.h, &t.path);
    let live = &mut t.live;
    a.publish(th, 2).await;
    // A client that got event 4 from the stopped holder comes back.
    let mut resumed = resumed_from_upstream(&b.addr(), path, h, "4").await;
    assert_eq!(resumed.ids(1).await, ids(5, 5));
    // The stopped holder's lease goes; a replica takes it and reads the upstream after 3.
    assert_eq!(redis.integer(&["DEL", &t.lease]), 1);
    for st in live.iter_mut() {
        assert_eq!(st.ids(2).await, ids(4, 5));
    }
    a.publish(th, 1).await;
    let [first, second] = live;
    for st in [first, second, &mut resumed] {
        assert_eq!(st.ids(1).await, ids(6, 6), "nothing twice, nothing skipped");
    }
    assert_eq!(
        upstream_streams(a).await,
        3,
        "the first holder's, the resumed client's own, the next holder's"
    );
}

/// A hole in the cluster's journal — what the holder's stream leaves after a write of its own
/// failed: an entry naming an event before it that the journal lacks. A follower does not take
/// it: it reads the upstream itself from the last event it relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_meeting_a_hole_in_the_cluster_journal_reads_the_upstream_itself() {
    let redis = Redis::start();
    let mut t = Stopped::start(&redis).await;
    let (a, th) = (&t.a, &t.th);
    let live = &mut t.live;
    a.publish(th, 2).await;
    // The stopped holder's stream writes event 5 after a failed write of 4.
    let journal = format!("railgate:journal:chat-sse:{th}");
    let xadd = "redis.call('XADD', KEYS[1], '*', 'id', '5', 'prev', '4', 'ev', ARGV[1]) return 1";
    let ev = json!({"event": "chat_message", "data": "not the upstream's event 5", "id": "5", "retry": null, "last": "5"});
    assert_eq!(
        redis.integer(&["EVAL", xadd, "1", &journal, &ev.to_string()]),
        1
    );
    for st in live.iter_mut() {
        let got = st.take(2).await;
        let seqs: Vec<_> = got
            .iter()
            .map(|e| (e.id.clone(), serde_json::from_str(&e.data).ok()))
            .map(|(id, v): (_, Option<serde_json::Value>)| (id, v.map(|v| v["seq"].clone())))
            .collect();
        assert_eq!(
            seqs,
            [
                (Some("4".into()), Some(json!(4))),
                (Some("5".into()), Some(json!(5)))
            ],
            "4 and 5 from the upstream"
        );
    }
    assert_eq!(
        reading(&t.admins).await,
        2.0,
        "each reads the upstream itself"
    );
    a.publish(th, 1).await;
    for st in live.iter_mut() {
        assert_eq!(st.ids(1).await, ids(6, 6));
    }
    assert_eq!(upstream_streams(a).await, 3);
}

/// A thread's clients all leave, events come that nobody reads, and a new client starts the
/// thread's stream from now: its first event starts the cluster's journal afresh (the events
/// between are in no journal), and a client resuming from before them gets them from the
/// upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_started_from_now_starts_the_cluster_journal_afresh() {
    let redis = Redis::start();
    let a = Stack::start(&shared_cluster(&redis));
    let (b, _bd) = a.replica();
    let th = a.thread("t_a").await;
    let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
    let path = format!("/sse/chat/{th}");
    let journal = format!("railgate:journal:chat-sse:{th}");
    let mut first = SseStream::open(&a.addr(), &path, &refs(&h)).await;
    eventually!(10, "A reads the upstream", mock_streams(&a).await == 1);
    a.publish(&th, 3).await;
    assert_eq!(first.ids(3).await, ids(1, 3));
    eventually!(
        10,
        "1 to 3 in the cluster's journal",
        redis.integer(&["XLEN", &journal]) == 3
    );
    drop(first);
    // The thread's hub is gone once its lease is given back (a client joining before that
    // would keep it, and it would resume after 3).
    let lease = format!("railgate:lease:chat-sse:{th}");
    eventually!(
        10,
        "the thread's hub is gone",
        redis.integer(&["EXISTS", &lease]) == 0 && mock_streams(&a).await == 0
    );
    a.publish(&th, 2).await;
    let mut later = SseStream::open(&a.addr(), &path, &refs(&h)).await;
    eventually!(
        10,
        "A reads the upstream again",
        mock_streams(&a).await == 1
    );
    a.publish(&th, 1).await;
    assert_eq!(later.ids(1).await, ids(6, 6));
    eventually!(
        10,
        "the journal starts afresh at 6",
        redis.integer(&["XLEN", &journal]) == 1
    );
    let mut resumed = resumed_from_upstream(&b.addr(), &path, &h, "3").await;
    assert_eq!(resumed.ids(3).await, ids(4, 6));
}

/// Two replicas with a live client each on one thread, its events 1 to 3 delivered, both
/// following the cluster's journal under a lease held by a replica that stopped (it never renews
/// nor writes): nothing is read from the upstream until the test lets the lease go.
struct Stopped {
    a: Stack,
    b: (railgate_tests::process::Proc, tempfile::TempDir),
    th: String,
    h: Vec<(String, String)>,
    path: String,
    live: [SseStream; 2],
    admins: [String; 2],
    lease: String,
}

impl Stopped {
    async fn start(redis: &Redis) -> Stopped {
        let a = Stack::start(&shared_cluster(redis));
        let b = a.replica();
        let th = a.thread("t_a").await;
        let h = full_headers(&token("t_a", "u1", json!({})), "t_a");
        let path = format!("/sse/chat/{th}");
        let mut live = [
            SseStream::open(&a.addr(), &path, &refs(&h)).await,
            SseStream::open(&b.0.addr(), &path, &refs(&h)).await,
        ];
        let admins = [a.gw.admin(), b.0.admin()];
        eventually!(
            15,
            "one replica holds the thread's lease",
            lease_holder(&admins).await.is_some()
        );
        a.publish(&th, 3).await;
        for st in &mut live {
            assert_eq!(st.ids(3).await, ids(1, 3));
        }
        let lease = format!("railgate:lease:chat-sse:{th}");
        let set = "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1";
        assert_eq!(
            redis.integer(&["EVAL", set, "1", &lease, "stopped-replica", "60000"]),
            1
        );
        eventually!(
            10,
            "both replicas follow the journal",
            reading(&admins).await == 0.0
        );
        Stopped {
            a,
            b,
            th,
            h,
            path,
            live,
            admins,
            lease,
        }
    }
}

/// Shared threads whose upstream stream the replicas behind `admins` read, summed.
async fn reading(admins: &[String]) -> f64 {
    let mut n = 0.0;
    for admin in admins {
        n += scrape(admin, "railgate_cluster_upstream_streams").await;
    }
    n
}
