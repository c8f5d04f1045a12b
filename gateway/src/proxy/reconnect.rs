//! Bringing a long-lived upstream stream back, for the SSE and WebSocket rails alike: what an
//! upstream's answer means ([`classify`]), the backoff and resume deadline with their metrics
//! ([`Reconnect`]), and the two limits every resumable stream shares — the shape of a cursor
//! ([`cursor`]) and the end of the caller's credential ([`credential_end`]).

use crate::config::Rail;
use crate::metrics::{self, Metrics};
use prometheus::IntCounter;
use railgate_policy::{Denial, ErrorCode};
use std::time::{Duration, Instant};

/// The first wait after a break; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The longest cursor (`Last-Event-ID`, hello `last_event_id`) accepted.
pub const MAX_CURSOR: usize = 256;
/// How far a credential's end is looked ahead at most (its `exp` may be absurdly far away).
const FOREVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What an upstream's non-success answer to a stream request means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Terminal: the clients get this code.
    Gone(ErrorCode),
    /// Transient: try again after the backoff.
    Retry,
}

/// Classifies an upstream status other than success: 404 is an unknown thread, 410 a cursor the
/// upstream cannot resume from, 408/425/429/5xx are transient, anything else is terminal.
pub fn classify(status: u16) -> Refusal {
    match status {
        404 => Refusal::Gone(ErrorCode::ThreadNotFound),
        410 => Refusal::Gone(ErrorCode::CursorInvalid),
        408 | 425 | 429 | 500..=599 => Refusal::Retry,
        _ => Refusal::Gone(ErrorCode::UpstreamUnavailable),
    }
}

/// A client's resume cursor, checked: at most [`MAX_CURSOR`] bytes, no NUL, CR or LF. Empty
/// means none. `what` names the field in the refusal.
pub fn cursor(raw: Option<&str>, what: &'static str) -> Result<Option<String>, Denial> {
    match raw {
        Some(c) if c.len() > MAX_CURSOR || c.contains(['\0', '\r', '\n']) => {
            Err(malformed_cursor(what))
        }
        Some("") | None => Ok(None),
        Some(c) => Ok(Some(c.to_owned())),
    }
}

/// The refusal of a malformed cursor; `what` names the field.
pub fn malformed_cursor(what: &str) -> Denial {
    Denial::with_message(ErrorCode::CursorInvalid, format!("{what} is malformed"))
}

/// When a stream whose credential ends at `expires_at` (unix seconds) must end, with `leeway`.
pub fn credential_end(expires_at: u64, leeway_s: u64, now: u64) -> tokio::time::Instant {
    let remaining = Duration::from_secs(expires_at.saturating_add(leeway_s).saturating_sub(now));
    tokio::time::Instant::now() + remaining.min(FOREVER)
}

/// A reconnect delay around `base`: uniformly between half and one and a half times it, so
/// clients cut by one upstream restart do not come back in step.
pub fn jittered(base: Duration) -> Duration {
    let ms = base.as_millis() as u64;
    Duration::from_millis(ms / 2 + rand::random_range(0..=ms.max(1)))
}

/// The reconnect state of one upstream stream: jittered backoff (50 ms doubling to 2 s) while it
/// is down, the resume deadline counted from when it went down, and the outcome metrics.
pub struct Reconnect {
    backoff: Duration,
    down_since: Option<Instant>,
    deadline: Duration,
    ok: IntCounter,
    failed: IntCounter,
    gave_up: IntCounter,
}

impl Reconnect {
    /// The state of a stream of `route` that gives up after `deadline` down.
    pub fn new(metrics: &Metrics, route: &str, rail: Rail, deadline: Duration) -> Reconnect {
        use metrics::Reconnect as Outcome;
        Reconnect {
            backoff: FIRST_BACKOFF,
            down_since: None,
            deadline,
            ok: metrics.reconnect(route, rail, Outcome::Ok),
            failed: metrics.reconnect(route, rail, Outcome::Failed),
            gave_up: metrics.reconnect(route, rail, Outcome::GaveUp),
        }
    }

    /// The stream is up; after a break or failed attempts this counts as a reconnect.
    pub fn connected(&mut self) {
        if self.down_since.take().is_some() {
            self.ok.inc();
        }
        self.backoff = FIRST_BACKOFF;
    }

    /// One attempt failed (counted); the stream is down from now on if it was not already.
    pub fn attempt_failed(&mut self) {
        self.failed.inc();
        self.down_since.get_or_insert_with(Instant::now);
    }

    /// The stream is down: how long to wait before the next attempt, or `None` once the resume
    /// deadline has passed (counted as given up).
    pub fn next_delay(&mut self) -> Option<Duration> {
        let since = *self.down_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.deadline {
            self.gave_up.inc();
            return None;
        }
        let delay = jittered(self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Some(delay)
    }
}

/// The client's cursor: one `Last-Event-ID` header, else the `last_event_id` query parameter.
pub fn cursor_of(req: &http::Request<hyper::body::Incoming>) -> Result<Option<String>, Denial> {
    let mut values = req.headers().get_all("last-event-id").iter();
    let raw = match (values.next(), values.next()) {
        (Some(_), Some(_)) => return Err(malformed_sse_cursor()),
        (Some(v), None) => Some(v.to_str().map_err(|_| malformed_sse_cursor())?.to_owned()),
        (None, _) => req.uri().query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "last_event_id")
                .map(|(_, v)| v.into_owned())
        }),
    };
    cursor(raw.as_deref(), "Last-Event-ID")
}

fn malformed_sse_cursor() -> Denial {
    malformed_cursor("Last-Event-ID")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_once_for_both_rails() {
        assert_eq!(classify(404), Refusal::Gone(ErrorCode::ThreadNotFound));
        assert_eq!(classify(410), Refusal::Gone(ErrorCode::CursorInvalid));
        for s in [408, 425, 429, 500, 502, 503, 599] {
            assert_eq!(classify(s), Refusal::Retry, "{s}");
        }
        for s in [301, 400, 401, 403, 418] {
            assert_eq!(
                classify(s),
                Refusal::Gone(ErrorCode::UpstreamUnavailable),
                "{s}"
            );
        }
    }

    #[test]
    fn cursors_are_bounded_and_single_line() {
        assert_eq!(cursor(None, "x"), Ok(None));
        assert_eq!(cursor(Some(""), "x"), Ok(None));
        assert_eq!(cursor(Some("42"), "x"), Ok(Some("42".into())));
        let long = "a".repeat(MAX_CURSOR);
        assert_eq!(cursor(Some(&long), "x"), Ok(Some(long.clone())));
        for bad in [
            format!("{long}a"),
            "a\nb".into(),
            "a\rb".into(),
            "a\0b".into(),
        ] {
            let d = cursor(Some(&bad), "Last-Event-ID").expect_err("refused");
            assert_eq!(d.code, ErrorCode::CursorInvalid);
            assert_eq!(d.message, "Last-Event-ID is malformed");
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_the_deadline_ends_it() {
        let m = Metrics::new(vec![]).expect("metrics");
        let mut r = Reconnect::new(&m, "r", Rail::Sse, Duration::from_secs(3600));
        let mut bases = Vec::new();
        for _ in 0..8 {
            bases.push(r.backoff);
            let d = r.next_delay().expect("within the deadline");
            let base = *bases.last().expect("base");
            assert!(d >= base / 2 && d <= base + base / 2 + Duration::from_millis(1));
        }
        assert_eq!(
            bases.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
            vec![50, 100, 200, 400, 800, 1600, 2000, 2000]
        );
        r.connected();
        assert_eq!(r.backoff, FIRST_BACKOFF);
        let mut r = Reconnect::new(&m, "r", Rail::Ws, Duration::ZERO);
        r.attempt_failed();
        assert_eq!(r.next_delay(), None);
        let text = String::from_utf8(m.render()).expect("utf8");
        for line in [
            "railgate_upstream_reconnects_total{outcome=\"ok\",route=\"r\",transport=\"sse\"} 1",
            "railgate_upstream_reconnects_total{outcome=\"failed\",route=\"r\",transport=\"ws\"} 1",
            "railgate_upstream_reconnects_total{outcome=\"gave_up\",route=\"r\",transport=\"ws\"} 1",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }
}
