//! Supervision policy every executor shares: the supervisor its receive path runs
//! under and the backoff of its loops. Shard and control executors both use it, so it
//! lives below them rather than in either.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;

use tracing::error;

use super::plan::Shared;
use super::snapshot::LoopInfo;
use crate::tasks::{
    BackoffConfig, ChildSpec, LoopStatus, RestartIntensity, RestartType, StopSignal, Supervisor,
    TaskTracker,
};

/// Maps a loop runner's status to the status-page shape.
pub(crate) fn loop_info(s: &LoopStatus) -> LoopInfo {
    LoopInfo {
        name: s.name.clone(),
        enabled: s.enabled,
        running: s.running,
        paused: s.paused,
        interval_ms: s.interval_ms,
        run_count: s.run_count,
        error_count: s.error_count,
        consecutive_errors: s.consecutive_errors,
        panic_count: s.panic_count,
        average_duration_ms: s.average_duration_ms,
        last_run_time: s.last_run_time.map(|t| (t * 1000.0) as u64),
        last_error: s.last_error.clone(),
    }
}

/// Error backoff for the node's loops: quick first retry, capped at 5 s.
pub(crate) fn loop_backoff() -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_millis(50),
        max: Duration::from_secs(5),
        multiplier: 2.0,
        jitter: 0.2,
    }
}

/// The supervisor every executor runs its receive path under: a critical permanent
/// child restarted with [`loop_backoff`]; more than 20 restarts in 10 s (the count
/// resets after 30 s stable) escalates to `Shared::degrade`, which for a critical
/// child makes the node shut down and exit non-zero.
pub(crate) fn executor_supervisor<F, Fut>(
    name: &str,
    child: String,
    tracker: &TaskTracker,
    seed: u64,
    shared: Arc<Shared>,
    receive: F,
) -> Supervisor
where
    F: Fn(StopSignal) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + 'static,
{
    let sup = Supervisor::new(
        name,
        RestartIntensity {
            max_restarts: 20,
            within: Duration::from_secs(10),
            stable_after: Duration::from_secs(30),
        },
        tracker.clone(),
        seed,
    );
    sup.add_child(
        ChildSpec::new(child, RestartType::Permanent, receive)
            .critical(true)
            .backoff(loop_backoff()),
    );
    sup.on_escalation(move |e| {
        error!(task = %e.task, critical = e.critical, "restart intensity exceeded");
        shared.degrade(&e.task, e.critical);
    });
    sup.start();
    sup
}

/// How a loop that keeps its own deadline sleeps between runs (the shard's tick, the
/// control core's membership loop). A failing loop backs off for `delay`. Otherwise
/// `plan` says how long until the loop's next deadline and what wakes it earlier (a
/// command, or a timer armed by the receive path). With work due now it yields once,
/// so the executor's receive path runs first and neither starves the other. Returns
/// whether it waited on the plan (a wake-up the caller counts), not a back-off.
pub(crate) async fn idle_until<W: Future<Output = ()>>(
    delay: Duration,
    failing: bool,
    plan: impl FnOnce() -> (Duration, W),
) -> bool {
    if failing {
        glommio::timer::sleep(delay).await;
        return false;
    }
    let (wait, wake) = plan();
    if wait.is_zero() {
        future::yield_now().await;
    } else {
        future::or(glommio::timer::sleep(wait), wake).await;
    }
    true
}
