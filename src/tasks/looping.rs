//! Periodic background loops: interval with jitter, error backoff, pause/resume/stop,
//! per-loop status, and a manager that starts/stops them together.
//!
//! Status bookkeeping ([`LoopStatus::record`], [`LoopManagerStatus::from_loops`],
//! [`next_delay`]) is synchronous so it is testable without an executor.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::future;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::backoff::{seed_from_name, Backoff, BackoffConfig};
use super::signal::{Notify, StopSignal};
use super::spawn::{catch_panic, TaskHandle};
use super::timeout::with_timeout;
use super::tracker::{TaskKind, TaskTracker};

/// What a loop iteration may fail with: any error; only its message is kept.
pub type LoopError = Box<dyn std::error::Error + 'static>;

/// A periodic job. `async fn` in the trait is fine here: loops run on one executor,
/// so no `Send` bound is wanted.
#[allow(async_fn_in_trait)]
pub trait Loop: 'static {
    /// Stable name (status map key, logs).
    fn name(&self) -> &str;
    /// Nominal time between runs.
    fn interval(&self) -> Duration;
    /// One iteration; an error counts towards backoff and error counters.
    async fn run_once(&mut self) -> Result<(), LoopError>;
    /// Called once before the first run; an error stops the loop before it starts.
    async fn on_start(&mut self) -> Result<(), LoopError> {
        Ok(())
    }
    /// Called once after the last run on a graceful stop.
    async fn on_stop(&mut self) {}
    /// Waits before the next iteration. The default sleeps `delay` (the jittered
    /// interval, or the error backoff while `failing`); a loop driven by events
    /// overrides it to wait for them instead. The runner interrupts the wait for
    /// pause and stop either way.
    async fn idle(&mut self, delay: Duration, failing: bool) {
        let _ = failing;
        glommio::timer::sleep(delay).await;
    }
}

/// How a loop is scheduled beyond its interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LoopConfig {
    /// Disabled loops are registered (visible in status) but never started.
    pub enabled: bool,
    /// Random extra wait, as a fraction of the interval (`>= 0`): each period is
    /// `interval + random(0, jitter * interval)`, which spreads load without ever
    /// running early (the reference library's `interval + random(0, jitter)`).
    pub jitter: f64,
    /// Delay growth after consecutive errors (replaces the interval while failing).
    pub error_backoff: BackoffConfig,
    /// Seed for the jitter RNG.
    pub seed: u64,
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            jitter: 0.1,
            error_backoff: BackoffConfig::default(),
            seed: 0,
        }
    }
}

/// Per-loop status, exposed on the node's status endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoopStatus {
    /// Loop name.
    pub name: String,
    /// Runner is alive.
    pub running: bool,
    /// Paused: alive but not running iterations.
    pub paused: bool,
    /// Enabled in config.
    pub enabled: bool,
    /// Interval in seconds.
    pub interval: f64,
    /// Interval in milliseconds.
    pub interval_ms: u64,
    /// Iterations run.
    pub run_count: u64,
    /// Iterations that failed.
    pub error_count: u64,
    /// Failures since the last success.
    pub consecutive_errors: u64,
    /// Iterations that panicked (also counted in `error_count`).
    pub panic_count: u64,
    /// Mean iteration duration.
    pub average_duration_ms: f64,
    /// UNIX time (seconds) of the last iteration's end.
    pub last_run_time: Option<f64>,
    /// Last error message.
    pub last_error: Option<String>,
}

impl LoopStatus {
    /// Fresh status for a loop.
    pub fn new(name: &str, interval: Duration, enabled: bool) -> Self {
        Self {
            name: name.to_string(),
            running: false,
            paused: false,
            enabled,
            interval: interval.as_secs_f64(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            run_count: 0,
            error_count: 0,
            consecutive_errors: 0,
            panic_count: 0,
            average_duration_ms: 0.0,
            last_run_time: None,
            last_error: None,
        }
    }

    /// Records one iteration that took `took` and ended at `now_unix`.
    pub fn record(&mut self, took: Duration, outcome: Result<(), String>, now_unix: f64) {
        self.run_count += 1;
        let ms = took.as_secs_f64() * 1e3;
        self.average_duration_ms += (ms - self.average_duration_ms) / self.run_count as f64;
        self.last_run_time = Some(now_unix);
        match outcome {
            Ok(()) => self.consecutive_errors = 0,
            Err(e) => {
                self.error_count += 1;
                self.consecutive_errors += 1;
                self.last_error = Some(e);
            }
        }
    }
}

/// Aggregate status of a [`LoopManager`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoopManagerStatus {
    /// Loops registered.
    pub total_loops: usize,
    /// Loops alive and not paused.
    pub running_loops: usize,
    /// Loops paused.
    pub paused_loops: usize,
    /// Loops whose last iteration failed.
    pub error_loops: usize,
    /// Per-loop status by name.
    pub loops: BTreeMap<String, LoopStatus>,
}

impl LoopManagerStatus {
    /// Aggregates per-loop statuses.
    pub fn from_loops(loops: impl IntoIterator<Item = LoopStatus>) -> Self {
        let loops: BTreeMap<String, LoopStatus> =
            loops.into_iter().map(|l| (l.name.clone(), l)).collect();
        Self {
            total_loops: loops.len(),
            running_loops: loops.values().filter(|l| l.running && !l.paused).count(),
            paused_loops: loops.values().filter(|l| l.paused).count(),
            error_loops: loops.values().filter(|l| l.consecutive_errors > 0).count(),
            loops,
        }
    }
}

/// Delay before the next iteration: backoff while failing, otherwise the interval
/// plus a uniform random extra wait in `[0, jitter * interval]`.
pub fn next_delay<R: Rng>(
    interval: Duration,
    jitter: f64,
    consecutive_errors: u64,
    backoff: &mut Backoff,
    rng: &mut R,
) -> Duration {
    if consecutive_errors > 0 {
        return backoff.next_delay();
    }
    backoff.reset();
    let j = if jitter.is_finite() {
        jitter.max(0.0)
    } else {
        0.0
    };
    if j == 0.0 {
        return interval;
    }
    let u: f64 = rng.gen_range(0.0..=1.0);
    interval.saturating_add(
        Duration::try_from_secs_f64(interval.as_secs_f64() * j * u).unwrap_or(Duration::ZERO),
    )
}

struct LoopCtl {
    status: RefCell<LoopStatus>,
    paused: Cell<bool>,
    stop: Cell<bool>,
    notify: Notify,
    done: StopSignal,
    task: RefCell<Option<TaskHandle<()>>>,
    starter: RefCell<Option<Box<dyn FnOnce()>>>,
}

/// Control handle for one loop (cheap `Rc` clone).
#[derive(Clone)]
pub struct LoopHandle {
    ctl: Rc<LoopCtl>,
}

impl LoopHandle {
    /// Status snapshot.
    pub fn status(&self) -> LoopStatus {
        self.ctl.status.borrow().clone()
    }

    /// Loop name.
    pub fn name(&self) -> String {
        self.ctl.status.borrow().name.clone()
    }

    /// Starts the runner if enabled and not started yet.
    pub fn start(&self) {
        let starter = self.ctl.starter.borrow_mut().take();
        if let Some(s) = starter {
            s();
        }
    }

    /// Stops running iterations (an in-flight one finishes) until resumed.
    pub fn pause(&self) {
        self.ctl.paused.set(true);
        self.ctl.status.borrow_mut().paused = true;
        self.ctl.notify.notify_all();
    }

    /// Resumes a paused loop; the next iteration runs right away.
    pub fn resume(&self) {
        self.ctl.paused.set(false);
        self.ctl.status.borrow_mut().paused = false;
        self.ctl.notify.notify_all();
    }

    /// Asks the loop to stop and waits up to `timeout` for it (then cancels it,
    /// skipping `on_stop`). Returns true on a graceful stop.
    pub async fn stop(&self, timeout: Duration) -> bool {
        self.ctl.stop.set(true);
        self.ctl.starter.borrow_mut().take();
        self.ctl.notify.notify_all();
        if self.ctl.task.borrow().is_none() {
            return true;
        }
        if with_timeout(timeout, self.ctl.done.wait()).await.is_ok() {
            return true;
        }
        if let Some(t) = self.ctl.task.borrow().as_ref() {
            t.cancel();
        }
        self.ctl.done.set();
        let mut st = self.ctl.status.borrow_mut();
        st.running = false;
        st.paused = false;
        false
    }
}

async fn run_loop<L: Loop>(mut lp: L, ctl: Rc<LoopCtl>, cfg: LoopConfig, tracker: TaskTracker) {
    let name = lp.name().to_string();
    let interval = lp.interval();
    let seed = seed_from_name(cfg.seed, &name);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut backoff = Backoff::new(cfg.error_backoff, seed ^ 1);
    ctl.status.borrow_mut().running = true;
    let start_err = match catch_panic(lp.on_start()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("on_start: {e:#}")),
        Err(e) => Some(format!("on_start: {e}")),
    };
    if let Some(e) = start_err {
        tracing::error!(loop_name = %name, error = %e, "loop failed to start");
        let mut st = ctl.status.borrow_mut();
        st.running = false;
        st.last_error = Some(e);
        drop(st);
        ctl.done.set();
        return;
    }
    while !ctl.stop.get() {
        if ctl.paused.get() {
            let n = ctl.notify.notified();
            n.await;
            continue;
        }
        let began = Instant::now();
        let mut panicked = false;
        let outcome = match catch_panic(lp.run_once()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(e) => {
                panicked = true;
                tracker.note_panic(&name);
                Err(e.to_string())
            }
        };
        if let Err(e) = &outcome {
            tracing::warn!(loop_name = %name, error = %e, "loop iteration failed");
        }
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let consecutive = {
            let mut st = ctl.status.borrow_mut();
            st.record(began.elapsed(), outcome, now_unix);
            if panicked {
                st.panic_count += 1;
            }
            st.consecutive_errors
        };
        let delay = next_delay(interval, cfg.jitter, consecutive, &mut backoff, &mut rng);
        let n = ctl.notify.notified();
        if ctl.stop.get() || ctl.paused.get() {
            continue;
        }
        future::or(lp.idle(delay, consecutive > 0), n).await;
    }
    if let Err(e) = catch_panic(lp.on_stop()).await {
        tracing::error!(loop_name = %name, error = %e, "loop on_stop panicked");
    }
    {
        let mut st = ctl.status.borrow_mut();
        st.running = false;
        st.paused = false;
    }
    ctl.done.set();
}

/// Owns a set of loops on one executor; starts, stops and reports them together.
pub struct LoopManager {
    tracker: TaskTracker,
    loops: Vec<LoopHandle>,
}

impl LoopManager {
    /// A manager registering loop runners in `tracker`.
    pub fn new(tracker: TaskTracker) -> Self {
        Self {
            tracker,
            loops: Vec::new(),
        }
    }

    /// Registers a loop (not started until [`LoopManager::start_all`] or
    /// [`LoopHandle::start`]).
    pub fn add<L: Loop>(&mut self, lp: L, cfg: LoopConfig) -> LoopHandle {
        let ctl = Rc::new(LoopCtl {
            status: RefCell::new(LoopStatus::new(lp.name(), lp.interval(), cfg.enabled)),
            paused: Cell::new(false),
            stop: Cell::new(false),
            notify: Notify::new(),
            done: StopSignal::new(),
            task: RefCell::new(None),
            starter: RefCell::new(None),
        });
        if cfg.enabled {
            let tracker = self.tracker.clone();
            let ctl2 = ctl.clone();
            let name = lp.name().to_string();
            *ctl.starter.borrow_mut() = Some(Box::new(move || {
                let ctl3 = ctl2.clone();
                let h = tracker.spawn_named(&format!("loop/{name}"), TaskKind::Maintenance, {
                    run_loop(lp, ctl3, cfg, tracker.clone())
                });
                *ctl2.task.borrow_mut() = Some(h);
            }));
        }
        let handle = LoopHandle { ctl };
        self.loops.push(handle.clone());
        handle
    }

    /// Starts every enabled loop, in registration order.
    pub fn start_all(&self) {
        for l in &self.loops {
            l.start();
        }
    }

    /// Stops every loop in reverse order, each with `timeout`; returns how many
    /// stopped gracefully.
    pub async fn stop_all(&self, timeout: Duration) -> usize {
        let mut graceful = 0;
        for l in self.loops.iter().rev() {
            if l.stop(timeout).await {
                graceful += 1;
            }
        }
        graceful
    }

    /// Handle of a loop by name.
    pub fn get(&self, name: &str) -> Option<LoopHandle> {
        self.loops.iter().find(|l| l.name() == name).cloned()
    }

    /// Aggregate status.
    pub fn status(&self) -> LoopManagerStatus {
        LoopManagerStatus::from_loops(self.loops.iter().map(|l| l.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_record_math() {
        let mut s = LoopStatus::new("x", Duration::from_millis(10), true);
        s.record(Duration::from_millis(10), Ok(()), 1.0);
        s.record(Duration::from_millis(20), Err("e1".into()), 2.0);
        s.record(Duration::from_millis(30), Err("e2".into()), 3.0);
        assert_eq!(
            (s.run_count, s.error_count, s.consecutive_errors),
            (3, 2, 2)
        );
        assert!((s.average_duration_ms - 20.0).abs() < 1e-6);
        assert_eq!(s.last_error.as_deref(), Some("e2"));
        assert_eq!(s.last_run_time, Some(3.0));
        s.record(Duration::from_millis(40), Ok(()), 4.0);
        assert_eq!(s.consecutive_errors, 0);
        assert_eq!(s.error_count, 2);
    }

    #[test]
    fn manager_status_aggregates() {
        let mut a = LoopStatus::new("a", Duration::from_secs(1), true);
        a.running = true;
        let mut b = LoopStatus::new("b", Duration::from_secs(1), true);
        b.running = true;
        b.paused = true;
        let mut c = LoopStatus::new("c", Duration::from_secs(1), true);
        c.running = true;
        c.consecutive_errors = 3;
        let d = LoopStatus::new("d", Duration::from_secs(1), false);
        let m = LoopManagerStatus::from_loops([a, b, c, d]);
        assert_eq!(
            (
                m.total_loops,
                m.running_loops,
                m.paused_loops,
                m.error_loops
            ),
            (4, 2, 1, 1)
        );
        let j = serde_json::to_value(&m).unwrap();
        assert_eq!(j["loops"]["c"]["consecutive_errors"], 3);
    }

    #[test]
    fn delay_jitters_on_success_and_backs_off_on_error() {
        let cfg = BackoffConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
            multiplier: 2.0,
            jitter: 0.0,
        };
        let mut b = Backoff::new(cfg, 1);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let iv = Duration::from_millis(100);
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..1000 {
            let d = next_delay(iv, 0.2, 0, &mut b, &mut rng);
            // interval + random(0, jitter): never early, at most 20 ms late.
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(120));
            seen_low |= d < Duration::from_millis(105);
            seen_high |= d > Duration::from_millis(115);
        }
        assert!(
            seen_low && seen_high,
            "the extra wait spreads over [0, jitter]"
        );
        // A jitter larger than the interval (500 ms on 200 ms) is not clamped.
        for _ in 0..100 {
            let d = next_delay(Duration::from_millis(200), 2.5, 0, &mut b, &mut rng);
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(700));
        }
        let errs: Vec<_> = (1..=4)
            .map(|k| next_delay(iv, 0.2, k, &mut b, &mut rng).as_millis())
            .collect();
        assert_eq!(errs, vec![50, 100, 200, 200]);
        next_delay(iv, 0.0, 0, &mut b, &mut rng);
        assert_eq!(b.attempt(), 0);
    }
}
