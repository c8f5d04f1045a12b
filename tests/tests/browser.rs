//! The demo's browser example in headless Chromium (Debian's `chromium`): tickets from the page,
//! an `EventSource` and a `WebSocket`, and stamped events arriving on both. Long run only.

use railgate_tests::process::Proc;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
#[ignore = "needs Debian's chromium (apt-get install chromium); part of the long run"]
fn the_demo_page_receives_stamped_events_over_sse_and_websocket() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let chromium = chromium.expect("chromium not found: apt-get install chromium");
    let demo = Proc::spawn(&railgate_tests::bins::path("railgate"), &["demo"], &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !demo.logs().iter().any(|l| l.contains("/demo")) {
        assert!(Instant::now() < deadline, "instructions not printed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let profile = tempfile::tempdir().expect("profile");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.path().display()),
            "--virtual-time-budget=15000",
            "--dump-dom",
            &format!("http://{}/demo?once", demo.addr()),
        ])
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("railgate demo"),
        "page not loaded: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sse_lines = dom
        .lines()
        .filter(|l| l.contains("sse ") && l.contains("tenant=t_demo"))
        .count();
    let ws_lines = dom
        .lines()
        .filter(|l| l.contains("ws ") && l.contains("tenant=t_demo"))
        .count();
    assert!(sse_lines >= 1, "no stamped event over EventSource:\n{dom}");
    assert!(ws_lines >= 1, "no stamped event over WebSocket:\n{dom}");
}
