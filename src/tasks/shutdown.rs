//! Graceful tracker shutdown with statistics; a second shutdown is a no-op that says so.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::tracker::TaskTracker;

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownStatus {
    /// Every task finished within the grace period.
    Completed,
    /// Some tasks were still running at the deadline and were cancelled.
    Timeout,
    /// Shutdown had already been requested; nothing was done.
    AlreadyShutdown,
}

/// What a shutdown did, for logs and the node's exit report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ShutdownStats {
    /// Outcome.
    pub status: ShutdownStatus,
    /// Active tasks when shutdown started.
    pub initial_tasks: usize,
    /// Tasks that finished on their own within the grace period.
    pub completed_tasks: usize,
    /// Tasks still running at the deadline (then cancelled).
    pub remaining_tasks: usize,
    /// Wall time the shutdown took.
    pub duration_seconds: f64,
}

impl ShutdownStats {
    /// Stats for a finished drain: status follows from whether anything remained.
    pub fn from_counts(initial: usize, remaining: usize, duration: Duration) -> Self {
        let remaining = remaining.min(initial);
        Self {
            status: if remaining == 0 {
                ShutdownStatus::Completed
            } else {
                ShutdownStatus::Timeout
            },
            initial_tasks: initial,
            completed_tasks: initial - remaining,
            remaining_tasks: remaining,
            duration_seconds: duration.as_secs_f64(),
        }
    }

    /// The answer to a repeated shutdown request.
    pub fn already_shutdown() -> Self {
        Self {
            status: ShutdownStatus::AlreadyShutdown,
            initial_tasks: 0,
            completed_tasks: 0,
            remaining_tasks: 0,
            duration_seconds: 0.0,
        }
    }
}

/// Poll period while draining; short because drains are rare and bounded by `grace`.
const DRAIN_POLL: Duration = Duration::from_millis(1);

impl TaskTracker {
    /// Refuses new spawns, waits up to `grace` for active tasks to finish, then cancels
    /// whatever remains. Calling it again returns [`ShutdownStatus::AlreadyShutdown`].
    pub async fn shutdown(&self, grace: Duration) -> ShutdownStats {
        let started = Instant::now();
        let initial = {
            let mut inner = self.inner.borrow_mut();
            if inner.shut_down {
                return ShutdownStats::already_shutdown();
            }
            inner.shut_down = true;
            inner.registry.active_count()
        };
        let deadline = started + grace;
        loop {
            let active = self.active_count();
            let now = Instant::now();
            if active == 0 || now >= deadline {
                break;
            }
            glommio::timer::sleep(DRAIN_POLL.min(deadline - now)).await;
        }
        let remaining = self.active_count();
        if remaining > 0 {
            let n = self.cancel_all();
            tracing::warn!(
                remaining,
                cancelled = n,
                "shutdown grace expired; cancelling"
            );
            // Let cancelled tasks observe the signal and record their final state.
            for _ in 0..100 {
                if self.active_count() == 0 {
                    break;
                }
                glommio::timer::sleep(DRAIN_POLL).await;
            }
        }
        let stats = ShutdownStats::from_counts(initial, remaining, started.elapsed());
        tracing::info!(?stats, "task tracker shut down");
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_math() {
        let s = ShutdownStats::from_counts(5, 0, Duration::from_millis(1500));
        assert_eq!(s.status, ShutdownStatus::Completed);
        assert_eq!((s.completed_tasks, s.remaining_tasks), (5, 0));
        assert!((s.duration_seconds - 1.5).abs() < 1e-9);
        let t = ShutdownStats::from_counts(5, 2, Duration::ZERO);
        assert_eq!(t.status, ShutdownStatus::Timeout);
        assert_eq!((t.completed_tasks, t.remaining_tasks), (3, 2));
        let j = serde_json::to_value(ShutdownStats::already_shutdown()).unwrap();
        assert_eq!(j["status"], "already_shutdown");
    }
}
