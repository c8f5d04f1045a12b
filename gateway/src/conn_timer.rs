//! One timer for every deadline of an HTTP/1.1 connection: the time its client has to send a
//! request head (hyper's, through [`hyper::rt::Timer`]) and the time the request under way waits
//! for its upstream's answer ([`ConnTimer::within`]).
//!
//! A deadline is a value, not a timer: the connection's one tokio timer is moved only when a
//! deadline comes before the one it is set to, or when it fires before the deadline of whoever
//! polls it then. Deadlines come in increasing order, nearly all are met, and so a connection
//! moves its timer about once per timeout period however many requests it carries, where a
//! timer per deadline is put into tokio's timer wheel and taken out of it for every request.
//!
//! Every deadline of a connection is polled from that connection's task (HTTP/1.1 runs its
//! requests in it): the timer wakes the task that polled it last. HTTP/2 runs each request in a
//! task of its own and keeps tokio's timers.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Where the timer rests before the first deadline (it is not in the wheel until polled).
const REST: Duration = Duration::from_secs(24 * 3600);

/// A connection's timer; clones share it.
#[derive(Clone)]
pub struct ConnTimer(Arc<Mutex<Pin<Box<Sleep>>>>);

impl ConnTimer {
    /// A timer for one connection.
    pub fn new() -> ConnTimer {
        let sleep = Box::pin(tokio::time::sleep_until(Instant::now() + REST));
        ConnTimer(Arc::new(Mutex::new(sleep)))
    }

    /// A future that is ready once `at` has passed.
    pub fn until(&self, at: Instant) -> Deadline {
        Deadline {
            at,
            timer: self.clone(),
        }
    }

    /// `work`'s output, or `None` once `wait` has passed first (counted from the coarse clock:
    /// within a tick).
    pub fn within<F: Future>(&self, wait: Duration, work: F) -> Within<F> {
        Within {
            work,
            deadline: self.until(crate::clock::coarse_tokio() + wait),
        }
    }

    /// Ready once `at` has passed; otherwise the timer will wake this task by then.
    fn poll_until(&self, at: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let mut sleep = self.0.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if sleep.deadline() > at {
                sleep.as_mut().reset(at);
            }
            ready!(sleep.as_mut().poll(cx));
            // It fired at its deadline, which is `at` or an earlier one met meanwhile.
            if sleep.deadline() >= at {
                return Poll::Ready(());
            }
            sleep.as_mut().reset(at);
        }
    }
}

impl Default for ConnTimer {
    fn default() -> Self {
        ConnTimer::new()
    }
}

/// Ready once its instant has passed ([`ConnTimer::until`]).
pub struct Deadline {
    at: Instant,
    timer: ConnTimer,
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.timer.poll_until(self.at, cx)
    }
}

impl hyper::rt::Sleep for Deadline {}

pin_project_lite::pin_project! {
    /// `work` with a deadline ([`ConnTimer::within`]): `None` if the deadline passes first.
    pub struct Within<F> {
        #[pin]
        work: F,
        deadline: Deadline,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.work.poll(cx) {
            return Poll::Ready(Some(out));
        }
        Pin::new(this.deadline).poll(cx).map(|()| None)
    }
}

impl hyper::rt::Timer for ConnTimer {
    /// The coarse clock: hyper reads it for each request head's deadline.
    fn now(&self) -> std::time::Instant {
        crate::clock::coarse()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.until(crate::clock::coarse_tokio() + duration))
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.until(deadline.into()))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: std::time::Instant) {
        match sleep.as_mut().downcast_mut_pin::<Deadline>() {
            Some(d) => d.get_mut().at = new_deadline.into(),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

#[cfg(test)]
#[path = "conn_timer_tests.rs"]
mod tests;
