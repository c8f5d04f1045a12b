use super::*;
use futures_util::FutureExt;
use hyper::rt::Timer;
use tokio::time::advance;

const S: Duration = Duration::from_secs(1);

/// Whether `fut` is ready when polled once now.
fn ready<F: Future + Unpin>(fut: &mut F) -> bool {
    fut.now_or_never().is_some()
}

#[tokio::test(start_paused = true)]
async fn a_deadline_is_ready_once_its_instant_has_passed_and_not_before() {
    let timer = ConnTimer::new();
    let mut d = timer.until(Instant::now() + 10 * S);
    assert!(!ready(&mut d));
    advance(9 * S).await;
    assert!(!ready(&mut d));
    advance(S).await;
    assert!(ready(&mut d));
}

#[tokio::test(start_paused = true)]
async fn an_earlier_deadline_after_a_later_one_is_still_kept() {
    let timer = ConnTimer::new();
    let start = Instant::now();
    let mut late = timer.until(start + 30 * S);
    assert!(!ready(&mut late));
    let mut early = timer.until(start + 10 * S);
    assert!(!ready(&mut early));
    advance(10 * S).await;
    assert!(ready(&mut early));
    assert!(!ready(&mut late));
    advance(19 * S).await;
    assert!(!ready(&mut late));
    advance(S).await;
    assert!(ready(&mut late));
}

#[tokio::test(start_paused = true)]
async fn a_later_deadline_waits_past_the_earlier_one_the_timer_was_left_at() {
    let timer = ConnTimer::new();
    let start = Instant::now();
    // A request's deadline, met: the timer stays at it.
    let mut first = timer.until(start + 10 * S);
    assert!(!ready(&mut first));
    drop(first);
    let mut next = timer.until(start + 12 * S);
    assert!(!ready(&mut next));
    advance(10 * S).await;
    assert!(
        !ready(&mut next),
        "the timer fired for the deadline met before"
    );
    advance(S).await;
    assert!(!ready(&mut next));
    advance(S).await;
    assert!(ready(&mut next));
    // A deadline already past when first polled is ready at once.
    let mut past = timer.until(start + 5 * S);
    assert!(ready(&mut past));
}

#[tokio::test(start_paused = true)]
async fn within_gives_the_work_or_none_at_the_deadline() {
    let timer = ConnTimer::new();
    assert_eq!(timer.within(5 * S, async { 7 }).await, Some(7));
    // Counted from the coarse clock, which does not pause: within a tick of 5 s from now.
    let mut stuck = Box::pin(timer.within(5 * S, std::future::pending::<u8>()));
    assert!(!ready(&mut stuck));
    advance(4 * S).await;
    assert!(!ready(&mut stuck));
    advance(2 * S).await;
    assert_eq!(stuck.await, None);
}

#[tokio::test(start_paused = true)]
async fn hypers_reset_moves_a_sleep_it_was_given() {
    let timer = ConnTimer::new();
    let start = Instant::now().into_std();
    let mut sleep = timer.sleep_until(start + 10 * S);
    timer.reset(&mut sleep, start + 20 * S);
    advance(10 * S).await;
    assert!(!ready(&mut sleep));
    advance(10 * S).await;
    assert!(ready(&mut sleep));
}

#[tokio::test(start_paused = true)]
async fn hypers_sleep_counts_from_the_coarse_clock() {
    let timer = ConnTimer::new();
    // The coarse clock does not pause: within a tick of 3 s from now, before any advance.
    let mut short = timer.sleep(3 * S);
    assert!(!ready(&mut short));
    advance(2 * S).await;
    assert!(!ready(&mut short));
    advance(2 * S).await;
    assert!(ready(&mut short));
}
