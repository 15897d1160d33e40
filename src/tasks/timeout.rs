//! Deadlines for futures, with named defaults, and a guard that logs slow operations.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_lite::future;

use super::error::TaskError;

/// Default deadline for a network round trip (connect, handshake, request).
pub const NETWORK_TIMEOUT: Duration = Duration::from_secs(5);
/// Default deadline for control-plane operations (admin RPC, config reload).
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);
/// Default deadline for draining work at shutdown.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `fut` for at most `d`; on expiry `fut` is dropped and `Err(Timeout(d))` returned.
pub async fn with_timeout<F: Future>(d: Duration, fut: F) -> Result<F::Output, TaskError> {
    future::or(async { Ok(fut.await) }, async {
        glommio::timer::sleep(d).await;
        Err(TaskError::Timeout(d))
    })
    .await
}

/// [`with_timeout`] with [`NETWORK_TIMEOUT`].
pub async fn with_network_timeout<F: Future>(fut: F) -> Result<F::Output, TaskError> {
    with_timeout(NETWORK_TIMEOUT, fut).await
}

/// [`with_timeout`] with [`CONTROL_TIMEOUT`].
pub async fn with_control_timeout<F: Future>(fut: F) -> Result<F::Output, TaskError> {
    with_timeout(CONTROL_TIMEOUT, fut).await
}

/// [`with_timeout`] with [`SHUTDOWN_TIMEOUT`].
pub async fn with_shutdown_timeout<F: Future>(fut: F) -> Result<F::Output, TaskError> {
    with_timeout(SHUTDOWN_TIMEOUT, fut).await
}

/// How far past `budget` an operation ran, or `None` if within budget.
pub fn over_budget(elapsed: Duration, budget: Duration) -> Option<Duration> {
    elapsed.checked_sub(budget).filter(|d| !d.is_zero())
}

/// RAII guard that logs a warning when dropped after more than its budget, so slow
/// operations show up in logs without changing behaviour.
pub struct SlowGuard {
    name: &'static str,
    budget: Duration,
    started: Instant,
}

impl SlowGuard {
    /// Starts timing `name` against `budget`.
    pub fn new(name: &'static str, budget: Duration) -> Self {
        Self {
            name,
            budget,
            started: Instant::now(),
        }
    }

    /// Time elapsed so far.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether the budget is already exceeded.
    pub fn is_over(&self) -> bool {
        over_budget(self.elapsed(), self.budget).is_some()
    }
}

impl Drop for SlowGuard {
    fn drop(&mut self) {
        let elapsed = self.elapsed();
        if let Some(over) = over_budget(elapsed, self.budget) {
            tracing::warn!(
                op = self.name,
                elapsed_ms = elapsed.as_secs_f64() * 1e3,
                budget_ms = self.budget.as_secs_f64() * 1e3,
                over_ms = over.as_secs_f64() * 1e3,
                "slow operation"
            );
        }
    }
}

/// Awaits `fut` under a [`SlowGuard`]; returns the output and whether it was slow.
pub async fn timed<F: Future>(name: &'static str, budget: Duration, fut: F) -> (F::Output, bool) {
    let guard = SlowGuard::new(name, budget);
    let out = fut.await;
    let slow = guard.is_over();
    drop(guard);
    (out, slow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_budget_math() {
        let ms = Duration::from_millis;
        assert_eq!(over_budget(ms(5), ms(10)), None);
        assert_eq!(over_budget(ms(10), ms(10)), None);
        assert_eq!(over_budget(ms(15), ms(10)), Some(ms(5)));
    }

    #[test]
    fn defaults_are_ordered() {
        assert!(CONTROL_TIMEOUT <= NETWORK_TIMEOUT);
        assert!(NETWORK_TIMEOUT <= SHUTDOWN_TIMEOUT);
    }
}
