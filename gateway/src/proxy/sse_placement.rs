//! Whether a hub's source is in place: a shared hub in cluster mode follows the cluster's journal
//! from the position its reader takes when its task first runs, so a client answered before that
//! could miss an event written in between. Such a hub starts unplaced; its first client is
//! answered once the reader is placed (or after [`WAIT`], when Redis is slow to say).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// The longest a client's answer waits for its hub's placement.
pub const WAIT: Duration = Duration::from_secs(2);

/// A hub's placement.
pub struct Placement {
    placed: AtomicBool,
    changed: Notify,
}

impl Default for Placement {
    /// Placed: a hub fed by the upstream directly has nothing to wait for.
    fn default() -> Self {
        Placement {
            placed: AtomicBool::new(true),
            changed: Notify::new(),
        }
    }
}

impl Placement {
    /// The hub's source is not in place yet (a cluster follower not yet positioned).
    pub fn pending(&self) {
        self.placed.store(false, Ordering::SeqCst);
    }

    /// The hub's source is in place.
    pub fn placed(&self) {
        self.placed.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Waits until the source is in place, at most `wait`; whether it is.
    pub async fn wait(&self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
            if self.placed.load(Ordering::SeqCst) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.placed.load(Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_pending_placement_waits_until_placed_and_no_longer() {
        let p = Arc::new(Placement::default());
        assert!(p.wait(Duration::ZERO).await, "placed from the start");
        p.pending();
        assert!(!p.wait(Duration::from_millis(20)).await, "bounded");
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.wait(Duration::from_secs(30)).await }
        });
        tokio::task::yield_now().await;
        p.placed();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("task");
        assert!(got);
    }
}
