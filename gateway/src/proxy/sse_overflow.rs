//! An ephemeral route's overflow. When a client's queue is full, live events wait here instead
//! of ending the client as a slow consumer: at most one per coalescing key — the newest, which
//! replaces the one before — and at most `max_keys` keys, the oldest leaving first. Once events
//! wait here, later ones queue behind them, so the client still sees them in order. The body
//! drains the overflow after its queue; memory stays bounded by `max_keys` events whatever the
//! upstream's rate.

use crate::metrics::EphemeralDropped as Dropped;
use crate::sse::Event;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::Waker;

/// An event's shared head (its fields and `data: {members,`, see the queue's batches): copied
/// into each client's write, so held as plain bytes shared by count.
pub type Head = Arc<[u8]>;

/// One waiting event: its coalescing key, the event and its shared head.
type Item = (Option<String>, Arc<Event>, Option<Head>);

/// See the module documentation.
pub struct Overflow {
    inner: Mutex<Inner>,
    max_keys: usize,
    dropped: Dropped,
}

struct Inner {
    items: VecDeque<Item>,
    waker: Option<Waker>,
}

impl Overflow {
    /// An empty overflow holding at most `max_keys` events.
    pub fn new(max_keys: usize, dropped: Dropped) -> Arc<Overflow> {
        Arc::new(Overflow {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                waker: None,
            }),
            max_keys: max_keys.max(1),
            dropped,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    /// Puts events in (with their shared heads and coalescing keys), each replacing the
    /// waiting event of its key.
    pub fn put(&self, events: &[Arc<Event>], heads: &[Option<Head>], keys: &[Option<String>]) {
        let waker = {
            let mut inner = self.lock();
            for (i, (ev, head)) in events.iter().zip(heads).enumerate() {
                let key = keys.get(i).cloned().flatten();
                if let Some(at) = inner.items.iter().position(|(k, _, _)| *k == key) {
                    inner.items.remove(at);
                    self.dropped.superseded.inc();
                } else if inner.items.len() >= self.max_keys {
                    inner.items.pop_front();
                    self.dropped.overflow.inc();
                }
                inner.items.push_back((key, ev.clone(), head.clone()));
            }
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Takes everything waiting, oldest first; when nothing waits, `waker` is woken by the next
    /// [`Overflow::put`].
    pub fn take(&self, waker: &Waker) -> Vec<(Arc<Event>, Option<Head>)> {
        let mut inner = self.lock();
        if inner.items.is_empty() {
            inner.waker = Some(waker.clone());
            return Vec::new();
        }
        inner
            .items
            .drain(..)
            .map(|(_, ev, head)| (ev, head))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::IntCounter;

    fn ev(n: u32) -> Arc<Event> {
        Arc::new(Event {
            event: None,
            data: Some(format!("{{\"n\":{n}}}")),
            id: None,
            retry: None,
            last_event_id: "".into(),
        })
    }

    fn counters() -> Dropped {
        Dropped {
            superseded: IntCounter::new("s", "s").expect("counter"),
            overflow: IntCounter::new("o", "o").expect("counter"),
        }
    }

    fn put(o: &Overflow, items: &[(u32, &str)]) {
        let events: Vec<_> = items.iter().map(|(n, _)| ev(*n)).collect();
        let keys: Vec<_> = items.iter().map(|(_, k)| Some(k.to_string())).collect();
        o.put(&events, &vec![None; items.len()], &keys);
    }

    fn data(taken: &[(Arc<Event>, Option<Head>)]) -> Vec<String> {
        taken
            .iter()
            .map(|(e, _)| e.data.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn keeps_the_newest_per_key_in_order_and_at_most_max_keys() {
        let d = counters();
        let o = Overflow::new(2, d.clone());
        put(&o, &[(1, "a"), (2, "b"), (3, "a")]);
        let waker = futures_util::task::noop_waker();
        assert_eq!(data(&o.take(&waker)), ["{\"n\":2}", "{\"n\":3}"]);
        assert_eq!(d.superseded.get(), 1);
        put(&o, &[(4, "a"), (5, "b"), (6, "c")]);
        assert_eq!(data(&o.take(&waker)), ["{\"n\":5}", "{\"n\":6}"]);
        assert_eq!(d.overflow.get(), 1);
        assert!(o.take(&waker).is_empty() && o.is_empty());
    }
}
