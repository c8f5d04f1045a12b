//! Helpers for randomised suites: a seed that can be replayed, and event parsing from an
//! arbitrary byte prefix (what a client has when its connection drops mid-event).

use crate::client::SseEvent;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// The environment variable that replays a run: `RAILGATE_TEST_SEED=1234 cargo test …`.
pub const SEED_VAR: &str = "RAILGATE_TEST_SEED";

/// A seeded RNG. The seed is printed (shown with the output of a failing test) and read from
/// [`SEED_VAR`] when set.
pub fn rng(test: &str) -> StdRng {
    let seed = std::env::var(SEED_VAR)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("{test}: {SEED_VAR}={seed}");
    StdRng::seed_from_u64(seed)
}

/// The complete events in `bytes` (blocks ended by a blank line); a trailing partial block is
/// ignored, as a browser would.
pub fn complete_events(bytes: &[u8]) -> Vec<SseEvent> {
    let text = String::from_utf8_lossy(bytes);
    let Some(end) = text.rfind("\n\n") else {
        return Vec::new();
    };
    text[..end]
        .split("\n\n")
        .filter_map(|block| {
            let mut ev = SseEvent::default();
            let mut data = Vec::new();
            let mut any = false;
            for line in block
                .split('\n')
                .filter(|l| !l.starts_with(':') && !l.is_empty())
            {
                any = true;
                let (k, v) = line
                    .split_once(':')
                    .map(|(k, v)| (k, v.strip_prefix(' ').unwrap_or(v)))
                    .unwrap_or((line, ""));
                match k {
                    "event" => ev.event = v.to_owned(),
                    "id" => ev.id = Some(v.to_owned()),
                    "data" => data.push(v.to_owned()),
                    _ => {}
                }
            }
            ev.data = data.join("\n");
            any.then_some(ev)
        })
        .collect()
}

/// Decodes an HTTP/1.1 chunked body prefix; stops at the first incomplete chunk.
pub fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let Some(nl) = raw[pos..].windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&raw[pos..pos + nl]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
        else {
            return out;
        };
        let start = pos + nl + 2;
        if size == 0 || start + size > raw.len() {
            out.extend_from_slice(&raw[start.min(raw.len())..(start + size).min(raw.len())]);
            return out;
        }
        out.extend_from_slice(&raw[start..start + size]);
        pos = start + size + 2;
        if pos > raw.len() {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::complete_events;

    #[test]
    fn partial_trailing_event_is_ignored() {
        let got = complete_events(b"id: 1\ndata: a\n\n: keep\n\nid: 2\ndata: b\n\nid: 3\nda");
        let ids: Vec<_> = got
            .iter()
            .map(|e| e.id.clone().unwrap_or_default())
            .collect();
        assert_eq!(ids, vec!["1", "2"]);
        assert!(complete_events(b"id: 1\ndata: a\n").is_empty());
    }
}
