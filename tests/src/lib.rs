//! Harness for suites that run railgate and upstream-mock as real processes.
//!
//! - [`process`]: spawn a binary on port 0, read its `READY` line, keep its logs, kill on Drop.
//! - [`bins`]: find (or build) the workspace binaries.
//! - [`browser`]: headless Chromium over the DevTools protocol, in real time.
//! - [`client`]: minimal HTTP and SSE clients that record exact bytes and sequences (and,
//!   re-exported from [`ws_client`], WebSocket).
//! - [`stack`]: a gateway in front of a mock on free ports, with tokens, threads and metrics.
//! - [`redis`]: a real `redis-server` on a free port, for cluster mode.
//! - [`chaos`]: a replayable seed, and events parsed from a prefix cut mid-event.
//! - [`peer`]: a backend on third-party Python stacks (starlette, sse-starlette, websockets).
//! - [`autobahn`]: the header-and-hello relay that lets the Autobahn suite through admission.
//! - [`eventually!`]: wait for a condition with a deadline instead of sleeping.

pub mod autobahn;
pub mod bins;
pub mod browser;
pub mod chaos;
pub mod client;
pub mod peer;
pub mod process;
pub mod redis;
pub mod stack;
pub mod tally;
pub mod tls;
pub mod ws_client;

/// Polls `$cond` (an expression returning `bool`) every 20 ms until it holds or `$secs` pass;
/// panics with `$msg` on timeout.
#[macro_export]
macro_rules! eventually {
    ($secs:expr, $msg:expr, $cond:expr) => {{
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64($secs as f64);
        loop {
            if $cond {
                break;
            }
            if std::time::Instant::now() > deadline {
                panic!("condition not met within {}s: {}", $secs, $msg);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }};
}
