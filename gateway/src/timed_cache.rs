//! A bounded cache whose entries carry their own end, and whose misses for one key make a
//! single load that every concurrent asker shares — its failure too.
//!
//! Over `quick_cache`, which keeps no clock: a hit is a hash, a shard's read lock and a lookup.
//! moka, used before, records every read for its admission policy and runs its housekeeping in
//! the reader's task; its two lookups per HTTP-rail request (the remembered token, the owner)
//! took ~3% of the request's CPU, sampled by time.

use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::UnitWeighter;
use std::future::Future;
use std::time::{Duration, Instant};

#[derive(Clone)]
struct Entry<V> {
    value: V,
    /// When the value was made.
    at: Instant,
    /// Stale from then on.
    until: Instant,
}

/// A bounded map from text keys, hashed with foldhash (seeded per process).
pub type Bounded<V> = Cache<String, V, UnitWeighter, foldhash::fast::RandomState>;

/// An empty [`Bounded`] map of at most `capacity` entries (room is taken as entries come; the
/// least used go first).
pub fn bounded<V: Clone>(capacity: u64) -> Bounded<V> {
    Cache::with(
        capacity.min(1024) as usize,
        capacity.max(1),
        UnitWeighter,
        foldhash::fast::RandomState::default(),
        DefaultLifecycle::default(),
    )
}

/// At most `capacity` entries, each fresh for the time it was given.
pub struct TimedCache<V> {
    map: Bounded<Entry<V>>,
}

impl<V: Clone> TimedCache<V> {
    /// An empty cache of at most `capacity` entries.
    pub fn new(capacity: u64) -> TimedCache<V> {
        TimedCache {
            map: bounded(capacity),
        }
    }

    /// The value of `key`, while it is fresh: read against the coarse clock (within a tick),
    /// a value given no freshness (a failure) never.
    pub fn get(&self, key: &str) -> Option<V> {
        let e = self.map.get(key)?;
        (e.until > e.at && crate::clock::coarse() < e.until).then_some(e.value)
    }

    /// Keeps `value` under `key`, fresh for `ttl`.
    pub fn insert(&self, key: String, value: V, ttl: Duration) {
        let at = Instant::now();
        let until = at + ttl;
        self.map.insert(key, Entry { value, at, until });
    }

    /// Drops `key`; whether a fresh value was there.
    pub fn remove(&self, key: &str) -> bool {
        let now = Instant::now();
        self.map.remove(key).is_some_and(|(_, e)| now < e.until)
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.map.clear();
    }

    /// The fresh value of `key`, or the one `load` makes, and whether this call made it. Askers
    /// of a key that is being loaded wait for that load and take what it gives, even a value
    /// given no freshness (`None`: a failure, shared by the askers waiting for it and by no
    /// later one).
    pub async fn get_or_load<F, Fut>(&self, key: &str, load: F) -> (V, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = (V, Option<Duration>)>,
    {
        let asked = Instant::now();
        let usable = |e: &Entry<V>| e.at >= asked || Instant::now() < e.until;
        let guard = loop {
            match self.map.get_value_or_guard_async(key).await {
                Ok(e) if usable(&e) => return (e.value, false),
                Ok(_) => {
                    // Stale: dropped (unless a fresh one took its place meanwhile), then loaded.
                    self.map.remove_if(key, |e| !usable(e));
                }
                Err(guard) => break guard,
            }
        };
        let (value, ttl) = load().await;
        let at = Instant::now();
        let until = at + ttl.unwrap_or_default();
        let _ = guard.insert(Entry {
            value: value.clone(),
            at,
            until,
        });
        (value, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn concurrent_misses_make_one_load_and_share_it_even_when_it_failed() {
        let cache = Arc::new(TimedCache::<Result<u32, String>>::new(100));
        let loads = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut askers = Vec::new();
        for _ in 0..20 {
            let (cache, loads, gate) = (cache.clone(), loads.clone(), gate.clone());
            askers.push(tokio::spawn(async move {
                cache
                    .get_or_load("k", || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        (Err("down".to_owned()), None)
                    })
                    .await
            }));
        }
        // Every asker is waiting on the one load (the loader on the gate).
        let deadline = Instant::now() + Duration::from_secs(10);
        while loads.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "no load started");
            tokio::task::yield_now().await;
        }
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        let mut loaded = 0;
        for a in askers {
            let (value, made) = tokio::time::timeout(Duration::from_secs(10), a)
                .await
                .expect("answered")
                .expect("joined");
            assert_eq!(value, Err("down".to_owned()));
            loaded += usize::from(made);
        }
        assert_eq!((loads.load(Ordering::SeqCst), loaded), (1, 1));
        // A failure is not kept for later askers.
        let (value, made) = cache
            .get_or_load("k", || async { (Ok(7), Some(LONG)) })
            .await;
        assert_eq!((value, made), (Ok(7), true));
        assert_eq!(cache.get("k"), Some(Ok(7)));
    }

    #[tokio::test]
    async fn a_value_is_served_while_fresh_and_loaded_again_once_stale() {
        let cache = TimedCache::<u32>::new(100);
        cache.insert("fresh".into(), 1, LONG);
        cache.insert("stale".into(), 2, Duration::ZERO);
        assert_eq!(cache.get("fresh"), Some(1));
        assert_eq!(cache.get("stale"), None);
        let (v, made) = cache
            .get_or_load("fresh", || async { (9, Some(LONG)) })
            .await;
        assert_eq!((v, made), (1, false));
        let (v, made) = cache
            .get_or_load("stale", || async { (3, Some(LONG)) })
            .await;
        assert_eq!((v, made), (3, true));
        assert_eq!(cache.get("stale"), Some(3));
        assert!(cache.remove("stale"));
        assert!(!cache.remove("stale"));
        cache.clear();
        assert_eq!(cache.get("fresh"), None);
    }

    #[test]
    fn it_holds_at_most_its_capacity() {
        let cache = TimedCache::<u32>::new(1_000);
        for i in 0..5_000 {
            cache.insert(format!("k{i}"), i, LONG);
        }
        let held = (0..5_000)
            .filter(|i| cache.get(&format!("k{i}")).is_some())
            .count();
        assert!((500..=1_000).contains(&held), "{held} held");
    }
}
