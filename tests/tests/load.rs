//! CT-12 load: many concurrent clients, a burst of reconnects; all clients reach the same final
//! state. Default run: 200 clients. Long run (`--ignored`): 2,000.

use futures_util::future::join_all;
use railgate_tests::client::SseStream;
use railgate_tests::stack::{full_headers, refs, token, Stack};
use serde_json::json;
use std::time::Duration;

async fn open(s: &Stack, th: &str, cursor: &str) -> SseStream {
    let tok = token("t_a", "u1", json!({}));
    let mut h = full_headers(&tok, "t_a");
    h.push(("last-event-id".into(), cursor.into()));
    let st = SseStream::open(&s.addr(), &format!("/sse/chat/{th}"), &refs(&h)).await;
    assert_eq!(st.status, 200, "stream refused");
    st
}

async fn read_until(st: &mut SseStream, upto: u64, seen: &mut Vec<u64>) {
    while seen.last().copied().unwrap_or(0) < upto {
        let ev = st
            .next_event_within(Duration::from_secs(60))
            .await
            .expect("event");
        assert_ne!(ev.event, "error", "{}", ev.data);
        if ev.event == "chat_message" {
            seen.push(ev.json()["seq"].as_u64().expect("seq"));
        }
    }
}

async fn clients_reach_the_same_state(threads: usize, per_thread: usize, reconnects: usize) {
    let s = Stack::start("[sse]\njournal_events = 4096\n");
    let mut ths = Vec::new();
    for _ in 0..threads {
        ths.push(s.thread("t_a").await);
    }
    let mut clients = Vec::new();
    for th in &ths {
        for _ in 0..per_thread {
            clients.push((th.clone(), open(&s, th, "0").await, Vec::new()));
        }
    }
    for th in &ths {
        s.publish(th, 20).await;
    }
    let clients: Vec<_> = join_all(
        clients
            .into_iter()
            .map(|(th, mut st, mut seen)| async move {
                read_until(&mut st, 20, &mut seen).await;
                (th, st, seen)
            }),
    )
    .await;
    // A burst of reconnects: these clients drop and come back at once with their last id.
    let (burst, steady): (Vec<_>, Vec<_>) = clients
        .into_iter()
        .enumerate()
        .partition(|(i, _)| *i < reconnects);
    let s_ref = &s;
    let burst: Vec<_> = join_all(burst.into_iter().map(|(_, (th, st, seen))| async move {
        drop(st);
        let st = open(s_ref, &th, &seen.last().expect("seen").to_string()).await;
        (th, st, seen)
    }))
    .await;
    for th in &ths {
        s.publish(th, 10).await;
    }
    let all: Vec<Vec<u64>> = join_all(
        burst
            .into_iter()
            .chain(steady.into_iter().map(|(_, c)| c))
            .map(|(_, mut st, mut seen)| async move {
                read_until(&mut st, 30, &mut seen).await;
                seen
            }),
    )
    .await;
    assert_eq!(all.len(), threads * per_thread);
    for seen in all {
        assert_eq!(seen, (1..=30).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_and_a_burst_of_50_reconnects_reach_the_same_final_state() {
    clients_reach_the_same_state(10, 20, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long load run"]
async fn two_thousand_clients_reach_the_same_final_state() {
    clients_reach_the_same_state(40, 50, 500).await;
}
