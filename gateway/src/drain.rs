//! The gateway's drain signal ([`Drain`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_util::sync::{
    CancellationToken, WaitForCancellationFuture, WaitForCancellationFutureOwned,
};

/// The gateway's drain signal: a flag read where every request or frame passes (an atomic
/// load), and a token to wait on. Clones share it.
#[derive(Clone, Default)]
pub struct Drain {
    started: Arc<AtomicBool>,
    token: CancellationToken,
}

impl Drain {
    /// Starts the drain: the flag first, then every wait is woken.
    pub fn start(&self) {
        self.started.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether the drain has started. (A token's own check takes its lock, which every clone of
    /// it shares.)
    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Ready once the drain starts.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// Ready once the drain starts, owning a handle on it.
    pub fn cancelled_owned(self) -> WaitForCancellationFutureOwned {
        self.token.cancelled_owned()
    }
}
