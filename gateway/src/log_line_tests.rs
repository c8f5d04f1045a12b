use super::*;
use rand::{Rng, SeedableRng};
use std::io;
use std::sync::{Arc, Mutex};
use tracing_subscriber::fmt::MakeWriter;

/// Lines written, shared with the subscriber.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("sink").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = Sink;

    fn make_writer(&'a self) -> Sink {
        self.clone()
    }
}

/// What `events` log through the stock JSON format and through [`Lines`], each line's
/// timestamp value replaced by `T` (the two runs differ in time only).
fn both(events: impl Fn()) -> (String, String) {
    let stock = Sink::default();
    let ours = Sink::default();
    let sub = tracing_subscriber::fmt()
        .json()
        .with_writer(stock.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_current_span(false)
        .flatten_event(true)
        .finish();
    tracing::subscriber::with_default(sub, &events);
    let sub = tracing_subscriber::fmt()
        .json()
        .with_writer(ours.clone())
        .with_max_level(tracing::Level::TRACE)
        .event_format(Lines::new())
        .finish();
    tracing::subscriber::with_default(sub, &events);
    let text = |s: &Sink| {
        let bytes = s.0.lock().expect("sink").clone();
        untimed(&String::from_utf8(bytes).expect("utf-8 lines"))
    };
    (text(&stock), text(&ours))
}

/// `text` with every timestamp's value replaced by `T`, after checking its shape.
fn untimed(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let rest = line
            .strip_prefix("{\"timestamp\":\"")
            .expect("a line starts with its timestamp");
        let (stamp, rest) = rest.split_once('"').expect("the timestamp ends");
        assert_eq!(stamp.len(), 27, "{stamp}");
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{stamp}"
        );
        out.push_str("{\"timestamp\":\"T\"");
        out.push_str(rest);
        out.push('\n');
    }
    out
}

#[test]
fn an_access_line_is_the_stock_formats_bytes() {
    let (stock, ours) = both(|| {
        let path = String::from("/chat/threads/th_1/messages");
        tracing::info!(
            target: "railgate::access",
            method = "GET",
            path = %path,
            http_version = ?http::Version::HTTP_11,
            route = path.as_str(),
            tenant_id = Some("t_a"),
            env = None::<&str>,
            outcome = "ok",
            status = 200u16,
            delta = -3i64,
            ok = true,
            duration_ms = 2.4273599999999997f64,
            tiny = 1e-7f64,
        );
        tracing::warn!(
            reason = "x",
            "upstream not reachable yet; keeping the stream open"
        );
        tracing::error!("plain message");
        tracing::debug!(n = u64::MAX, "debug line");
    });
    assert_eq!(stock.lines().count(), 4);
    assert!(
        ours.contains("\"duration_ms\":2.4273599999999997,"),
        "{ours}"
    );
    assert!(ours.contains("\"level\":\"WARN\",\"message\":\"upstream not reachable yet; keeping the stream open\",\"reason\":\"x\",\"target\""), "{ours}");
    assert_eq!(ours, stock);
}

#[test]
fn any_text_is_escaped_as_the_stock_format_escapes_it() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let alphabet: Vec<char> = "ab\"\\/\n\r\t\u{0}\u{1f}\u{7f}é€😀 {}:,".chars().collect();
    let texts: Vec<String> = (0..300)
        .map(|_| {
            let len = rng.random_range(0..40);
            (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect()
        })
        .collect();
    let (stock, ours) = both(|| {
        for t in &texts {
            tracing::info!(target: "railgate::access", path = %t, route = t.as_str(), "{t}");
        }
    });
    assert_eq!(stock.lines().count(), texts.len());
    assert_eq!(ours, stock);
}

#[test]
fn an_event_in_a_span_keeps_the_stock_formats_span_list() {
    let (stock, ours) = both(|| {
        let span = tracing::info_span!("poll", stream = 3);
        let _in = span.enter();
        tracing::info!(k = "v", "inside");
    });
    assert!(stock.contains("\"spans\":[{"), "{stock}");
    assert_eq!(ours, stock);
}

#[test]
fn a_huge_line_does_not_stay_in_the_threads_buffer() {
    let big = "x".repeat(200 * 1024);
    let (stock, ours) = both(|| tracing::info!(big = big.as_str()));
    assert_eq!(ours, stock);
    let room = LINE.with(|cell| cell.borrow().0.capacity());
    assert!(room <= KEEP, "{room}");
}
