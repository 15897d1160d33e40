//! Executor tests for panic-safe spawning, cancellation, timeouts and shutdown stats.

mod common;
use common::{ms, run};

use std::time::{Duration, Instant};

use glommio::timer::sleep;
use plumcore::tasks::timeout::timed;
use plumcore::tasks::{
    spawn_detached, spawn_named, with_timeout, ShutdownStatus, TaskError, TaskKind, TaskSpec,
    TaskState, TaskTracker,
};

#[test]
fn panic_is_captured_with_message() {
    run(async {
        let t = TaskTracker::default();
        let h = t.spawn_named("bad", TaskKind::Other, async {
            sleep(ms(1)).await;
            if true {
                panic!("boom {}", 7);
            }
            5u32
        });
        let id = h.id();
        assert_eq!(h.await, Err(TaskError::Panic("boom 7".into())));
        assert_eq!(t.state(id), Some(TaskState::Failed));
        let c = t.counters();
        assert_eq!((c.spawned, c.failed, c.running), (1, 1, 0));
    });
}

#[test]
fn static_str_panic_and_ok_value() {
    run(async {
        let h = spawn_named("p", TaskKind::Network, async { panic!("static") });
        assert_eq!(h.await, Err::<(), _>(TaskError::Panic("static".into())));
        let ok = spawn_named("ok", TaskKind::Network, async { 41 + 1 });
        let id = ok.id();
        assert_eq!(ok.await, Ok(42));
        assert_eq!(
            plumcore::tasks::local_tracker().state(id),
            Some(TaskState::Completed)
        );
    });
}

#[test]
fn cancel_through_handle() {
    run(async {
        let t = TaskTracker::default();
        let h = t.spawn_named("sleepy", TaskKind::Other, async {
            sleep(Duration::from_secs(10)).await;
        });
        let id = h.id();
        sleep(ms(2)).await;
        assert_eq!(t.state(id), Some(TaskState::Running));
        let started = Instant::now();
        h.cancel();
        assert_eq!(h.await, Err(TaskError::Cancelled));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(t.state(id), Some(TaskState::Cancelled));
        assert_eq!(t.counters().cancelled, 1);
    });
}

#[test]
fn fallible_error_becomes_failed_and_context_is_kept() {
    run(async {
        let t = TaskTracker::default();
        let h = t.spawn_fallible(
            TaskSpec::new("dial", TaskKind::Network).with("peer", "9"),
            async { Err::<(), _>("refused") },
        );
        let id = h.id();
        assert_eq!(h.await, Err(TaskError::Failed("refused".into())));
        t.with_registry(|r| {
            let rec = r.get(id).unwrap();
            assert_eq!(rec.context, vec![("peer".to_string(), "9".to_string())]);
            assert_eq!(rec.state, TaskState::Failed);
        });
    });
}

#[test]
fn detached_panic_is_tracked() {
    run(async {
        let t = TaskTracker::default();
        let id = t.spawn_detached("bg", TaskKind::Maintenance, async { panic!("bg died") });
        for _ in 0..200 {
            if t.state(id) == Some(TaskState::Failed) {
                break;
            }
            sleep(ms(1)).await;
        }
        assert_eq!(t.state(id), Some(TaskState::Failed));
        // Free function flavour on the thread-local tracker.
        let id2 = spawn_detached("bg2", TaskKind::Other, async {});
        sleep(ms(5)).await;
        assert_eq!(
            plumcore::tasks::local_tracker().state(id2),
            Some(TaskState::Completed)
        );
    });
}

#[test]
fn timeout_expires_and_fast_future_passes() {
    run(async {
        let r = with_timeout(ms(10), sleep(Duration::from_secs(5))).await;
        assert_eq!(r, Err(TaskError::Timeout(ms(10))));
        assert_eq!(with_timeout(ms(500), async { 3 }).await, Ok(3));
        // A task that times out is recorded as Expired.
        let t = TaskTracker::default();
        let h = t.spawn_result(TaskSpec::new("slow", TaskKind::Network), async {
            with_timeout(ms(5), sleep(Duration::from_secs(5))).await
        });
        let id = h.id();
        assert!(matches!(h.await, Err(TaskError::Timeout(_))));
        assert_eq!(t.state(id), Some(TaskState::Expired));
        let ((), slow) = timed("op", ms(1), sleep(ms(5))).await;
        assert!(slow);
        let ((), slow) = timed("op", Duration::from_secs(5), async {}).await;
        assert!(!slow);
    });
}

#[test]
fn shutdown_completes_then_answers_already_shutdown() {
    run(async {
        let t = TaskTracker::default();
        for i in 0..3 {
            t.spawn_detached(&format!("w{i}"), TaskKind::Other, async move {
                sleep(ms(5 + i)).await;
            });
        }
        let s = t.shutdown(Duration::from_millis(800)).await;
        assert_eq!(s.status, ShutdownStatus::Completed);
        assert_eq!(
            (s.initial_tasks, s.completed_tasks, s.remaining_tasks),
            (3, 3, 0)
        );
        assert!(s.duration_seconds < 0.8);
        let again = t.shutdown(Duration::from_millis(800)).await;
        assert_eq!(again.status, ShutdownStatus::AlreadyShutdown);
        // New work is refused after shutdown.
        let h = t.spawn_named("late", TaskKind::Other, async { 1 });
        assert_eq!(h.await, Err(TaskError::Cancelled));
    });
}

#[test]
fn shutdown_times_out_and_cancels_stragglers() {
    run(async {
        let t = TaskTracker::default();
        let h = t.spawn_named("stuck", TaskKind::Other, async {
            sleep(Duration::from_secs(10)).await;
        });
        let quick = t.spawn_named("quick", TaskKind::Other, async { sleep(ms(2)).await });
        let id = h.id();
        let s = t.shutdown(ms(30)).await;
        assert_eq!(s.status, ShutdownStatus::Timeout);
        assert_eq!(
            (s.initial_tasks, s.completed_tasks, s.remaining_tasks),
            (2, 1, 1)
        );
        assert_eq!(h.await, Err(TaskError::Cancelled));
        assert_eq!(quick.await, Ok(()));
        assert_eq!(t.state(id), Some(TaskState::Cancelled));
        assert_eq!(t.active_count(), 0);
    });
}
