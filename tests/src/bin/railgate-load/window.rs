//! The measured window: events counted and their latencies from the mock's `sent_at_us`, read
//! from the frames as they arrive. One clock read, one counter add and one lock of the reading
//! thread's own histogram per frame, so that the load tool reading a million events a second is
//! not what a run measures.

use hdrhistogram::Histogram;
use std::cell::OnceCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

const KEY: &[u8] = b"\"sent_at_us\":";

pub struct Window {
    /// Events are counted while this is set.
    pub measuring: AtomicBool,
    /// Events counted.
    pub events: AtomicU64,
    /// Every worker thread's latencies (see `thread_histogram`).
    hists: Mutex<Vec<Arc<Mutex<Histogram<u64>>>>>,
    key: memchr::memmem::Finder<'static>,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            measuring: AtomicBool::new(false),
            events: AtomicU64::new(0),
            hists: Mutex::new(Vec::new()),
            key: memchr::memmem::Finder::new(KEY),
        }
    }
}

thread_local! {
    /// This worker thread's histogram, registered in the window's list on first use (one
    /// `Window` per process).
    static HISTOGRAM: OnceCell<Arc<Mutex<Histogram<u64>>>> = const { OnceCell::new() };
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Window {
    /// Finds every `"sent_at_us":N` in `data` (with `carry` holding a key or value cut by the
    /// frame before) and, inside the window, records each event's latency at the frame's arrival.
    pub fn scan(&self, data: &[u8], carry: &mut Vec<u8>) {
        let joined;
        let buf: &[u8] = if carry.is_empty() {
            data
        } else {
            carry.extend_from_slice(data);
            joined = std::mem::take(carry);
            &joined
        };
        let measuring = self.measuring.load(Ordering::Relaxed);
        let now = if measuring { now_us() } else { 0 };
        let hist = measuring.then(|| self.thread_histogram());
        let mut hist = hist.as_ref().and_then(|h| h.lock().ok());
        let (mut seen, mut pos, mut cut_value) = (0, 0, None);
        while let Some(i) = self.key.find(&buf[pos..]) {
            let start = pos + i + KEY.len();
            let digits = buf[start..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if start + digits == buf.len() {
                cut_value = Some(pos + i);
                break;
            }
            let sent = std::str::from_utf8(&buf[start..start + digits]).ok();
            if let (Some(sent), Some(hist)) = (
                sent.and_then(|s| s.parse::<u64>().ok()),
                hist.as_deref_mut(),
            ) {
                seen += 1;
                let _ = hist.record(now.saturating_sub(sent).clamp(1, 60_000_000));
            }
            pos = start + digits;
        }
        drop(hist);
        // A value cut by the frame's end, or a key: the longest end of `buf` that begins it.
        let keep_from = cut_value.unwrap_or_else(|| {
            let cut = (1..KEY.len())
                .rev()
                .find(|&k| buf[pos..].ends_with(&KEY[..k]));
            buf.len() - cut.unwrap_or(0)
        });
        if seen > 0 {
            self.events.fetch_add(seen, Ordering::Relaxed);
        }
        carry.clear();
        carry.extend_from_slice(&buf[keep_from..]);
    }

    /// This thread's histogram, registered with the window on first use.
    fn thread_histogram(&self) -> Arc<Mutex<Histogram<u64>>> {
        HISTOGRAM.with(|cell| {
            cell.get_or_init(|| {
                let hist = Arc::new(Mutex::new(new_histogram()));
                if let Ok(mut all) = self.hists.lock() {
                    all.push(hist.clone());
                }
                hist
            })
            .clone()
        })
    }

    /// Every thread's latencies, added up.
    pub fn latencies(&self) -> Histogram<u64> {
        let mut total = new_histogram();
        for each in self.hists.lock().map(|a| a.clone()).unwrap_or_default() {
            if let Ok(each) = each.lock() {
                let _ = total.add(&*each);
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_counted_once_wherever_the_frames_are_cut() {
        let stream = b"id: 1\ndata: {\"sent_at_us\":17,\"x\":\"\\\"sent_at_us\"}\n\n\
            id: 2\ndata: {\"sent_at_us\":4000000}\n\nid: 3\ndata: {\"sent_at_us\":x}\n\n\
            id: 4\ndata: {\"sent_at_us\":12}\n\n";
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                let (w, mut carry) = (Window::default(), Vec::new());
                w.measuring.store(true, Ordering::Relaxed);
                for part in [&stream[..a], &stream[a..b], &stream[b..]] {
                    w.scan(part, &mut carry);
                }
                assert_eq!(w.events.load(Ordering::Relaxed), 3, "cut at {a}, {b}");
                assert!(carry.is_empty(), "cut at {a}, {b}: {carry:?} kept");
            }
        }
        let not_measuring = Window::default();
        not_measuring.scan(stream, &mut Vec::new());
        assert_eq!(not_measuring.events.load(Ordering::Relaxed), 0);
        // A thread of its own: its histogram is registered with this window.
        let recorded = std::thread::spawn(move || {
            let w = Window::default();
            w.measuring.store(true, Ordering::Relaxed);
            w.scan(stream, &mut Vec::new());
            w.latencies().len()
        });
        assert_eq!(recorded.join().expect("thread"), 3);
    }
}
