//! Executor tests for OTP-style supervision.

mod common;
use common::{ms, run};

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use glommio::timer::sleep;
use plumcore::tasks::supervisor::{ChildRunState, StopKind, CRITICAL_EXIT_CODE};
use plumcore::tasks::{
    BackoffConfig, ChildSpec, RestartIntensity, RestartType, StopSignal, Supervisor,
    SupervisorOutcome, TaskTracker,
};

fn fast_backoff() -> BackoffConfig {
    BackoffConfig {
        initial: ms(1),
        max: ms(4),
        multiplier: 2.0,
        jitter: 0.5,
    }
}

fn roomy() -> RestartIntensity {
    RestartIntensity {
        max_restarts: 1000,
        within: Duration::from_secs(10),
        stable_after: Duration::from_secs(10),
    }
}

/// A child that counts its runs and ends with `result` after a millisecond.
fn counting(name: &str, restart: RestartType, runs: Rc<Cell<u32>>, fail: bool) -> ChildSpec {
    ChildSpec::new(name, restart, move |_stop: StopSignal| {
        let runs = runs.clone();
        async move {
            runs.set(runs.get() + 1);
            sleep(ms(1)).await;
            if fail {
                Err("failed".to_string())
            } else {
                Ok(())
            }
        }
    })
    .backoff(fast_backoff())
}

#[test]
fn restart_types_behave() {
    run(async {
        let sup = Supervisor::new("s", roomy(), TaskTracker::default(), 1);
        let perm_ok = Rc::new(Cell::new(0));
        let trans_ok = Rc::new(Cell::new(0));
        let trans_err = Rc::new(Cell::new(0));
        let temp_err = Rc::new(Cell::new(0));
        sup.add_child(counting(
            "perm_ok",
            RestartType::Permanent,
            perm_ok.clone(),
            false,
        ));
        sup.add_child(counting(
            "trans_ok",
            RestartType::Transient,
            trans_ok.clone(),
            false,
        ));
        sup.add_child(counting(
            "trans_err",
            RestartType::Transient,
            trans_err.clone(),
            true,
        ));
        sup.add_child(counting(
            "temp_err",
            RestartType::Temporary,
            temp_err.clone(),
            true,
        ));
        sup.start();
        sleep(ms(80)).await;
        assert!(
            perm_ok.get() >= 3,
            "permanent restarts after normal exit: {}",
            perm_ok.get()
        );
        assert_eq!(trans_ok.get(), 1, "transient normal exit is final");
        assert!(
            trans_err.get() >= 3,
            "transient restarts after error: {}",
            trans_err.get()
        );
        assert_eq!(temp_err.get(), 1, "temporary never restarts");
        let st = sup.status();
        assert_eq!(st.children[1].state, ChildRunState::Exited);
        assert_eq!(st.children[3].state, ChildRunState::Exited);
        assert!(st.children[0].restarts >= 2);
        assert!(!st.degraded);
        assert_eq!(sup.stop().await, SupervisorOutcome::Stopped);
    });
}

#[test]
fn panicking_child_escalates_when_intensity_exceeded() {
    run(async {
        let tracker = TaskTracker::default();
        let sup = Supervisor::new(
            "s",
            RestartIntensity {
                max_restarts: 2,
                within: Duration::from_secs(10),
                stable_after: Duration::from_secs(10),
            },
            tracker.clone(),
            1,
        );
        let seen = Rc::new(RefCell::new(Vec::new()));
        let seen2 = seen.clone();
        sup.on_escalation(move |e| seen2.borrow_mut().push(e.clone()));
        let runs = Rc::new(Cell::new(0));
        let r2 = runs.clone();
        sup.add_child(
            ChildSpec::new("flaky", RestartType::Permanent, move |_stop| {
                let r = r2.clone();
                async move {
                    r.set(r.get() + 1);
                    if r.get() < 1000 {
                        panic!("flaky #{}", r.get());
                    }
                    Ok::<(), String>(())
                }
            })
            .backoff(fast_backoff()),
        );
        sup.start();
        sleep(ms(60)).await;
        // Initial run + 2 allowed restarts, then escalation.
        assert_eq!(runs.get(), 3);
        let st = sup.status();
        assert!(st.degraded);
        assert_eq!(st.shutdown_requested, None);
        assert_eq!(st.children[0].state, ChildRunState::GaveUp);
        assert_eq!(st.escalations.len(), 1);
        let e = &seen.borrow()[0];
        assert_eq!(e.task, "flaky");
        assert!(!e.critical);
        assert_eq!(e.last_error.as_deref(), Some("task panicked: flaky #3"));
        assert_eq!(tracker.counters().restarted, 2);
        // A child given up on is a failed task, not a completed one.
        let k = tracker.counters();
        assert_eq!((k.failed, k.completed, k.running), (1, 0, 0));
        // Per-name counters: three panics, two restarts, for the child's name.
        let names = tracker.by_name();
        let flaky = names.iter().find(|c| c.task == "flaky").unwrap();
        assert_eq!((flaky.panics, flaky.restarts), (3, 2));
    });
}

#[test]
fn a_child_that_fails_without_restart_is_recorded_failed() {
    run(async {
        let tracker = TaskTracker::default();
        let sup = Supervisor::new("s", roomy(), tracker.clone(), 1);
        let runs = Rc::new(Cell::new(0));
        sup.add_child(counting(
            "oneshot_err",
            RestartType::Temporary,
            runs.clone(),
            true,
        ));
        sup.add_child(counting(
            "oneshot_ok",
            RestartType::Temporary,
            runs.clone(),
            false,
        ));
        sup.start();
        sleep(ms(30)).await;
        assert_eq!(runs.get(), 2);
        let k = tracker.counters();
        assert_eq!((k.failed, k.completed), (1, 1), "{k:?}");
        let _ = sup.stop().await;
    });
}

#[test]
fn critical_escalation_requests_shutdown() {
    run(async {
        let sup = Supervisor::new(
            "core",
            RestartIntensity {
                max_restarts: 1,
                within: Duration::from_secs(10),
                stable_after: Duration::from_secs(10),
            },
            TaskTracker::default(),
            1,
        );
        let other_stopped = Rc::new(Cell::new(false));
        let os = other_stopped.clone();
        sup.add_child(
            ChildSpec::new("steady", RestartType::Permanent, move |stop: StopSignal| {
                let os = os.clone();
                async move {
                    stop.wait().await;
                    os.set(true);
                    Ok::<(), String>(())
                }
            })
            .shutdown_timeout(ms(200)),
        );
        sup.add_child(
            ChildSpec::new("listener", RestartType::Permanent, |_stop| async {
                Err::<(), _>("bind failed")
            })
            .critical(true)
            .backoff(fast_backoff()),
        );
        sup.start();
        let out = glommio::timer::timeout(Duration::from_secs(2), async { Ok(sup.wait().await) })
            .await
            .expect("supervisor should stop itself");
        match out {
            SupervisorOutcome::ShutdownRequested {
                exit_code,
                escalation,
            } => {
                assert_eq!(exit_code, CRITICAL_EXIT_CODE);
                assert_ne!(exit_code, 0);
                assert_eq!(escalation.task, "listener");
                assert!(escalation.critical);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(other_stopped.get(), "other children are stopped too");
        assert_eq!(sup.status().shutdown_requested, Some(CRITICAL_EXIT_CODE));
        // An explicit stop afterwards reports the same outcome.
        assert!(matches!(
            sup.stop().await,
            SupervisorOutcome::ShutdownRequested { .. }
        ));
    });
}

#[test]
fn children_start_in_order_and_stop_in_reverse() {
    run(async {
        let sup = Supervisor::new("s", roomy(), TaskTracker::default(), 1);
        let log = Rc::new(RefCell::new(Vec::<String>::new()));
        for name in ["a", "b", "c"] {
            let log = log.clone();
            sup.add_child(
                ChildSpec::new(name, RestartType::Permanent, move |stop: StopSignal| {
                    let log = log.clone();
                    async move {
                        log.borrow_mut().push(format!("start {name}"));
                        stop.wait().await;
                        sleep(ms(2)).await;
                        log.borrow_mut().push(format!("stop {name}"));
                        Ok::<(), String>(())
                    }
                })
                .shutdown_timeout(ms(500)),
            );
        }
        sup.start();
        sleep(ms(10)).await;
        assert_eq!(sup.stop().await, SupervisorOutcome::Stopped);
        assert_eq!(
            *log.borrow(),
            ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
        );
        let st = sup.status();
        assert_eq!(st.start_order, ["a", "b", "c"]);
        assert_eq!(st.stop_order, ["c", "b", "a"]);
        assert!(st
            .children
            .iter()
            .all(|c| c.stopped == Some(StopKind::Graceful) && c.restarts == 0));
    });
}

#[test]
fn child_ignoring_stop_is_cancelled_after_timeout() {
    struct DropFlag(Rc<Cell<bool>>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    run(async {
        let sup = Supervisor::new("s", roomy(), TaskTracker::default(), 1);
        let dropped = Rc::new(Cell::new(false));
        let d2 = dropped.clone();
        sup.add_child(
            ChildSpec::new("stubborn", RestartType::Permanent, move |_stop| {
                let flag = DropFlag(d2.clone());
                async move {
                    let _flag = flag;
                    sleep(Duration::from_secs(10)).await;
                    Ok::<(), String>(())
                }
            })
            .shutdown_timeout(ms(20)),
        );
        sup.start();
        sleep(ms(5)).await;
        let t0 = std::time::Instant::now();
        sup.stop().await;
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert!(dropped.get(), "child future dropped on cancel");
        let st = sup.status();
        assert_eq!(st.children[0].stopped, Some(StopKind::Cancelled));
        assert_eq!(st.children[0].state, ChildRunState::Stopped);
    });
}
