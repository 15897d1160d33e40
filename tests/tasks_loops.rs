//! Executor tests for periodic loops and the loop manager.

mod common;
use common::{ms, run};

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use glommio::timer::sleep;
use plumcore::tasks::{BackoffConfig, Loop, LoopConfig, LoopError, LoopManager, TaskTracker};

struct Counter {
    name: &'static str,
    runs: Rc<Cell<u32>>,
    fail: bool,
    panic: bool,
    started: Rc<Cell<bool>>,
    stopped: Rc<Cell<bool>>,
}

impl Counter {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            runs: Rc::default(),
            fail: false,
            panic: false,
            started: Rc::default(),
            stopped: Rc::default(),
        }
    }
}

impl Loop for Counter {
    fn name(&self) -> &str {
        self.name
    }
    fn interval(&self) -> Duration {
        ms(5)
    }
    async fn run_once(&mut self) -> Result<(), LoopError> {
        self.runs.set(self.runs.get() + 1);
        if self.panic {
            panic!("loop panic");
        }
        if self.fail {
            return Err("iteration failed".into());
        }
        Ok(())
    }
    async fn on_start(&mut self) -> Result<(), LoopError> {
        self.started.set(true);
        Ok(())
    }
    async fn on_stop(&mut self) {
        self.stopped.set(true);
    }
}

fn cfg() -> LoopConfig {
    LoopConfig {
        enabled: true,
        jitter: 0.2,
        error_backoff: BackoffConfig {
            initial: ms(2),
            max: ms(8),
            multiplier: 2.0,
            jitter: 0.0,
        },
        seed: 3,
    }
}

#[test]
fn pause_stops_runs_and_resume_restarts_them() {
    run(async {
        let mut m = LoopManager::new(TaskTracker::default());
        let c = Counter::new("tick");
        let (runs, started, stopped) = (c.runs.clone(), c.started.clone(), c.stopped.clone());
        let h = m.add(c, cfg());
        m.start_all();
        sleep(ms(60)).await;
        assert!(started.get());
        assert!(runs.get() >= 3, "runs on its interval: {}", runs.get());
        let st = m.status();
        assert_eq!(
            (st.total_loops, st.running_loops, st.paused_loops),
            (1, 1, 0)
        );

        h.pause();
        sleep(ms(10)).await; // let an in-flight iteration settle
        let frozen = runs.get();
        sleep(ms(60)).await;
        assert_eq!(runs.get(), frozen, "no runs while paused");
        let st = m.status();
        assert_eq!((st.running_loops, st.paused_loops), (0, 1));
        assert!(st.loops["tick"].paused);

        h.resume();
        sleep(ms(60)).await;
        assert!(runs.get() >= frozen + 3, "runs again after resume");
        let s = h.status();
        assert!(s.running && !s.paused && s.enabled);
        assert_eq!(s.run_count, u64::from(runs.get()));
        assert_eq!(s.error_count, 0);
        assert!(s.last_run_time.is_some());
        assert!((s.interval - 0.005).abs() < 1e-9);

        assert_eq!(m.stop_all(ms(500)).await, 1);
        assert!(stopped.get(), "on_stop called");
        assert!(!h.status().running);
        let after = runs.get();
        sleep(ms(20)).await;
        assert_eq!(runs.get(), after, "no runs after stop");
    });
}

#[test]
fn errors_and_panics_are_counted_with_backoff() {
    run(async {
        let mut m = LoopManager::new(TaskTracker::default());
        let mut bad = Counter::new("bad");
        bad.fail = true;
        let mut boom = Counter::new("boom");
        boom.panic = true;
        let good = Counter::new("good");
        m.add(bad, cfg());
        m.add(boom, cfg());
        m.add(good, cfg());
        m.start_all();
        sleep(ms(60)).await;
        let st = m.status();
        assert_eq!(st.total_loops, 3);
        assert_eq!(st.error_loops, 2);
        assert_eq!(st.running_loops, 3);
        let bad = &st.loops["bad"];
        assert!(bad.error_count >= 3);
        assert_eq!(bad.error_count, bad.run_count);
        assert_eq!(bad.consecutive_errors, bad.error_count);
        assert_eq!(bad.last_error.as_deref(), Some("iteration failed"));
        let boom = &st.loops["boom"];
        assert!(boom.error_count >= 3);
        assert_eq!(
            boom.last_error.as_deref(),
            Some("task panicked: loop panic")
        );
        assert_eq!(st.loops["good"].consecutive_errors, 0);
        assert_eq!(m.stop_all(ms(500)).await, 3);
        assert_eq!(m.status().running_loops, 0);
    });
}

#[test]
fn disabled_loop_never_runs() {
    run(async {
        let mut m = LoopManager::new(TaskTracker::default());
        let c = Counter::new("off");
        let runs = c.runs.clone();
        m.add(
            c,
            LoopConfig {
                enabled: false,
                ..cfg()
            },
        );
        m.start_all();
        sleep(ms(20)).await;
        assert_eq!(runs.get(), 0);
        let st = m.status();
        assert!(!st.loops["off"].enabled);
        assert_eq!(st.running_loops, 0);
        assert_eq!(m.stop_all(ms(100)).await, 1);
    });
}
