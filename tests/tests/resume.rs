//! CT-09 resume: read N events, disconnect, reconnect with Last-Event-ID: no gap, no duplicate,
//! in order — from the journal, from the upstream once the journal is outgrown, and for several
//! threads at once.

use futures_util::future::join_all;
use railgate_tests::client::{get, post_json, SseStream};
use railgate_tests::eventually;
use railgate_tests::stack::{full_headers, refs, token, Stack};
use serde_json::json;
use std::time::Duration;

async fn open(s: &Stack, th: &str, cursor: Option<&str>) -> SseStream {
    let tok = token("t_a", "u1", json!({}));
    let mut h = full_headers(&tok, "t_a");
    if let Some(c) = cursor {
        h.push(("last-event-id".into(), c.into()));
    }
    let st = SseStream::open(&s.addr(), &format!("/sse/chat/{th}"), &refs(&h)).await;
    assert_eq!(st.status, 200);
    st
}

/// Reads `n` messages; returns their seqs and the `resume_cursor` source, if one came first.
async fn read(st: &mut SseStream, n: usize) -> (Vec<u64>, Option<String>) {
    let mut seqs = Vec::new();
    let mut source = None;
    while seqs.len() < n {
        let ev = st
            .next_event_within(Duration::from_secs(20))
            .await
            .expect("event");
        match ev.event.as_str() {
            "resume_cursor" => {
                assert!(seqs.is_empty(), "resume_cursor comes first");
                assert_eq!(ev.id, None);
                source = ev.json()["source"].as_str().map(String::from);
            }
            "chat_message" => seqs.push(ev.json()["seq"].as_u64().expect("seq")),
            other => panic!("unexpected {other}: {}", ev.data),
        }
    }
    (seqs, source)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_threads_resume_in_order_from_journal_and_upstream() {
    let s = Stack::start("[sse]\njournal_events = 8\n");
    let mut ths = Vec::new();
    for _ in 0..3 {
        ths.push(s.thread("t_a").await);
    }
    let mut first = Vec::new();
    for th in &ths {
        first.push(open(&s, th, Some("0")).await);
        s.publish(th, 6).await;
    }
    let firsts = join_all(
        first
            .into_iter()
            .map(|mut st| async move { read(&mut st, 3).await }),
    )
    .await;
    for (seqs, source) in &firsts {
        assert_eq!(
            (seqs.clone(), source.as_deref()),
            (vec![1, 2, 3], Some("upstream"))
        );
    }
    // Journal path: the cursor (3) is still held.
    let again = join_all(ths.iter().map(|th| {
        let s = &s;
        async move {
            let mut st = open(s, th, Some("3")).await;
            read(&mut st, 3).await
        }
    }))
    .await;
    for (seqs, source) in again {
        assert_eq!((seqs, source.as_deref()), (vec![4, 5, 6], Some("journal")));
    }
    // Upstream path: outgrow the journal (8 events) while a live stream feeds it, then resume
    // from a cursor only the upstream still has.
    for th in &ths {
        let mut live = open(&s, th, Some("6")).await;
        s.publish(th, 12).await;
        read(&mut live, 12).await;
    }
    let last = join_all(ths.iter().map(|th| {
        let s = &s;
        async move {
            let mut st = open(s, th, Some("2")).await;
            read(&mut st, 16).await
        }
    }))
    .await;
    for (seqs, source) in last {
        assert_eq!(
            (seqs, source.as_deref()),
            ((3..=18).collect::<Vec<_>>(), Some("upstream"))
        );
    }
}

/// On a shared thread a resuming client is replayed its backlog from the journal before it joins
/// the thread's hub, which meanwhile may have no client at all. The hub made for it reads the
/// upstream after the journal's newest event (events that came while no hub read are not
/// skipped), and what the upstream sends during a long replay is journaled for the client all
/// the same: it gets every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_replay_on_a_shared_thread_misses_nothing_sent_meanwhile() {
    let s = Stack::start(
        "[sse]\njournal_events = 2048\njournal_bytes = 67108864\n[[routes]]\nname = \"chat-sse\"\n\
         path = \"/sse/chat/{thread_id}\"\nkind = \"sse\"\nshare_upstream = true\nrequire = [\"tenant\"]\n",
    );
    let th = s.thread("t_a").await;
    let streams = || async {
        let stats = get(&s.mock_addr(), "/_mock/stats", &[]).await.json();
        stats["streams_active"].as_u64().unwrap_or(0)
    };
    // 1,000 events of 32 KiB: a backlog larger than the queue and the sockets between hold.
    let mut live = open(&s, &th, None).await;
    eventually!(
        10,
        "the thread's upstream stream is open",
        streams().await == 1
    );
    let big = json!({"thread_id": th, "count": 1000, "payload_bytes": 32768});
    let r = post_json(&s.mock_addr(), "/_mock/publish", &[], &big).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        read(&mut live, 1000).await.0,
        (1..=1000).collect::<Vec<_>>()
    );
    drop(live);
    eventually!(
        10,
        "the thread's hub let its stream go",
        streams().await == 0
    );
    s.publish(&th, 2).await;
    // A client resumes from 1 and does not read yet: its replay waits for room.
    let mut resumed = open(&s, &th, Some("1")).await;
    eventually!(
        10,
        "the thread's hub reads the upstream again",
        streams().await == 1
    );
    s.publish(&th, 3).await;
    let (seqs, source) = read(&mut resumed, 1004).await;
    assert_eq!(source.as_deref(), Some("journal"));
    assert_eq!(seqs, (2..=1005).collect::<Vec<_>>());
}
