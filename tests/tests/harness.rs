//! The harness itself: binaries are found, READY is parsed, children die with their handle.

use railgate_tests::bins;
use railgate_tests::client::get;
use railgate_tests::process::Proc;
use std::time::Duration;

#[tokio::test]
async fn mock_is_found_started_on_port_0_and_killed_on_drop() {
    let bin = bins::path("upstream-mock");
    let m = Proc::spawn(&bin, &["--listen", "127.0.0.1:0"], &[]);
    let addr = m.addr();
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );
    assert_eq!(get(&addr, "/healthz", &[]).await.status, 200);
    drop(m);
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if tokio::net::TcpStream::connect(&addr).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "process still accepting after drop");
}

#[tokio::test]
async fn sigterm_gives_a_clean_exit_code() {
    let bin = bins::path("upstream-mock");
    let mut m = Proc::spawn(&bin, &["--listen", "127.0.0.1:0"], &[]);
    m.signal(15);
    assert_eq!(
        m.wait_exit(Duration::from_secs(10)).and_then(|s| s.code()),
        Some(0)
    );
}

/// The signal handlers are installed before READY: SIGTERM right after it drains and exits 0.
#[tokio::test]
async fn gateway_sigterm_right_after_ready_exits_cleanly() {
    let mut s = railgate_tests::stack::Stack::start("");
    s.gw.signal(15);
    assert_eq!(
        s.gw.wait_exit(Duration::from_secs(20))
            .and_then(|st| st.code()),
        Some(0)
    );
}
