//! CT-09 resume: read N events, disconnect, reconnect with Last-Event-ID: no gap, no duplicate,
//! in order — from the journal, from the upstream once the journal is outgrown, and for several
//! threads at once.

use futures_util::future::join_all;
use railgate_tests::client::SseStream;
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
