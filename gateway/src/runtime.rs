//! The runtime `railgate serve` runs on.

use std::io;
use tokio::runtime::{Builder, Runtime};

/// Most readiness events a worker takes from the OS at a time (tokio's default: 1,024). An
/// upstream burst over many private streams (one event published to a thread with 500
/// subscribers) makes 500 upstream sockets readable at once; taken all together, every upstream
/// side runs before any client's write, and the first client waits for the last upstream read.
/// Taken 32 at a time, each group's clients are written before the next group is read, as an
/// event loop that writes from its read handler does: with one worker, (a)'s p50 went from
/// 1.7–1.8× nginx's to 1.1× at the same CPU (docs/BENCHMARKS.md, item 43).
pub const IO_EVENTS_PER_TICK: usize = 32;

/// The runtime for `workers` worker threads (`workers` in the configuration; 0: one per core).
/// One worker: a current-thread runtime, so the listener, every connection and every stream
/// run on one thread with no cross-thread wake-ups or work stealing.
pub fn build(workers: usize) -> io::Result<Runtime> {
    let mut builder = match workers {
        1 => Builder::new_current_thread(),
        n => {
            let mut b = Builder::new_multi_thread();
            if n > 0 {
                b.worker_threads(n);
            }
            b
        }
    };
    builder
        .max_io_events_per_tick(IO_EVENTS_PER_TICK)
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    /// 100 sockets made readable at once, each read handing on to a task that stands for its
    /// client's write: with one worker, the first write runs before the 33rd read (with
    /// tokio's default, after all 100).
    #[test]
    fn a_burst_of_readable_sockets_is_taken_a_few_at_a_time() {
        const N: usize = 100;
        let rt = build(1).expect("runtime");
        let log = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let log = Arc::new(Mutex::new(Vec::new()));
            let armed = Arc::new(AtomicUsize::new(0));
            let (mut clients, mut tasks) = (Vec::new(), Vec::new());
            for i in 0..N {
                clients.push(std::net::TcpStream::connect(addr).expect("connect"));
                let (server, _) = listener.accept().await.expect("accept");
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let l = log.clone();
                tasks.push(tokio::spawn(async move {
                    let _ = rx.await;
                    l.lock().expect("log").push(('w', i));
                }));
                let (l, armed) = (log.clone(), armed.clone());
                tasks.push(tokio::spawn(async move {
                    let mut server = server;
                    armed.fetch_add(1, Ordering::SeqCst);
                    let mut byte = [0u8; 1];
                    let _ = server.read(&mut byte).await;
                    l.lock().expect("log").push(('r', i));
                    let _ = tx.send(());
                }));
            }
            // Every reader waits on its socket before any byte is sent.
            for _ in 0..10_000 {
                if armed.load(Ordering::SeqCst) == N {
                    break;
                }
                tokio::task::yield_now().await;
            }
            assert_eq!(armed.load(Ordering::SeqCst), N, "every reader is waiting");
            tokio::task::yield_now().await;
            // All readable at once: no await between the writes.
            for c in &mut clients {
                c.write_all(b"x").expect("write");
            }
            for t in tasks {
                tokio::time::timeout(Duration::from_secs(10), t)
                    .await
                    .expect("no hang")
                    .expect("task");
            }
            Arc::try_unwrap(log)
                .expect("tasks done")
                .into_inner()
                .expect("log")
        });
        assert_eq!(log.len(), 2 * N);
        let first_write = log.iter().position(|(k, _)| *k == 'w').expect("a write");
        assert!(
            first_write <= IO_EVENTS_PER_TICK,
            "{first_write} reads before the first write: {log:?}"
        );
    }
}
