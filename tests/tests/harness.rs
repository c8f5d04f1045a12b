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

/// The newest modification time of the files under `dir`.
fn newest_under(dir: &std::path::Path) -> std::time::SystemTime {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).expect("read source dir") {
        let path = entry.expect("entry").path();
        let t = if path.is_dir() {
            newest_under(&path)
        } else {
            path.metadata().and_then(|m| m.modified()).expect("mtime")
        };
        newest = newest.max(t);
    }
    newest
}

/// A suite never runs a binary older than its sources: each is brought up to date on first
/// use, also when only this package's tests were built.
#[test]
fn the_binaries_the_suites_run_are_not_older_than_their_sources() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (bin, sources) in [
        ("railgate", &["gateway/src", "policy/src"][..]),
        ("upstream-mock", &["upstream-mock/src"][..]),
    ] {
        let built = bins::path(bin)
            .metadata()
            .and_then(|m| m.modified())
            .expect("binary mtime");
        for dir in sources {
            let newest = newest_under(&root.join(dir));
            assert!(built >= newest, "{bin} is older than {dir}");
        }
    }
}
