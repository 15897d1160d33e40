//! Task lifecycle registry: ids, states, counters and bounded retention of finished records.
//!
//! [`TaskRegistry`] is plain synchronous state taking `now: Instant`, so its rules are
//! unit-testable without an executor; [`TaskTracker`] is the executor-local shared handle.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::signal::StopSignal;

/// Unique (per tracker) task identifier, so logs and status lines can refer to one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task#{}", self.0)
    }
}

/// Coarse category of work, for grouping in status output and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Socket I/O and peer connections.
    Network,
    /// Plumtree protocol processing.
    Protocol,
    /// Control plane / admin requests.
    Control,
    /// Periodic housekeeping loops.
    Maintenance,
    /// Supervisor runners.
    Supervisor,
    /// Anything else.
    Other,
}

/// Lifecycle state of a tracked task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Registered, not yet polled.
    Pending,
    /// Being polled.
    Running,
    /// Failed and waiting for a restart (supervised tasks).
    Retrying,
    /// Finished successfully.
    Completed,
    /// Finished with an error or a panic.
    Failed,
    /// Cancelled by a handle, supervisor or shutdown.
    Cancelled,
    /// Ran past its deadline.
    Expired,
}

impl TaskState {
    /// Whether the state is final (the record moves to the finished list).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Cancelled | TaskState::Expired
        )
    }
}

/// Everything known about one task; kept while active and for a while after.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    /// Identifier.
    pub id: TaskId,
    /// Human-readable name given at spawn.
    pub name: String,
    /// Category.
    pub kind: TaskKind,
    /// When it was registered.
    #[serde(skip)]
    pub spawned_at: Instant,
    /// When it reached a terminal state.
    #[serde(skip)]
    pub finished_at: Option<Instant>,
    /// Free-form key/values (peer id, shard, ...) for diagnosis.
    pub context: Vec<(String, String)>,
    /// Current state.
    pub state: TaskState,
    /// Restarts recorded for this task.
    pub restarts: u32,
    /// Last error message, if any.
    pub error: Option<String>,
}

/// Cumulative counters (`running` is a gauge), cheap to export as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TaskCounters {
    /// Tasks registered.
    pub spawned: u64,
    /// Tasks currently active (not terminal).
    pub running: u64,
    /// Tasks that completed successfully.
    pub completed: u64,
    /// Tasks that failed, panicked or expired.
    pub failed: u64,
    /// Tasks that were cancelled.
    pub cancelled: u64,
    /// Restarts recorded.
    pub restarted: u64,
}

/// Panics and restarts of one named task (a loop or a supervised child), the series
/// behind `plumtree_task_panics_total{task}` and `plumtree_task_restarts_total{task}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TaskNameCounters {
    /// Task name (a loop name such as `seen_cleanup`, or a supervised child such as
    /// `control_receiver`); [`OTHER_TASKS`] collects names past [`MAX_TASK_NAMES`].
    pub task: String,
    /// Panics caught in it.
    pub panics: u64,
    /// Restarts a supervisor made of it.
    pub restarts: u64,
}

/// Most distinct task names a tracker keeps counters for; the node names a fixed,
/// small set of tasks, so this bound only matters for a caller that names tasks
/// dynamically. Further names are counted under [`OTHER_TASKS`].
pub const MAX_TASK_NAMES: usize = 64;

/// The label that collects task names past [`MAX_TASK_NAMES`].
pub const OTHER_TASKS: &str = "other";

/// Bounds on finished-record memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerConfig {
    /// Finished records older than this are dropped.
    pub retention: Duration,
    /// At most this many finished records are kept (oldest dropped first).
    pub max_records: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(300),
            max_records: 1024,
        }
    }
}

/// Synchronous task registry (see module docs).
#[derive(Debug)]
pub struct TaskRegistry {
    config: TrackerConfig,
    next_id: u64,
    active: BTreeMap<TaskId, TaskRecord>,
    finished: VecDeque<TaskRecord>,
    counters: TaskCounters,
    by_name: BTreeMap<String, TaskNameCounters>,
}

impl TaskRegistry {
    /// An empty registry with the given bounds.
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            next_id: 1,
            active: BTreeMap::new(),
            finished: VecDeque::new(),
            counters: TaskCounters::default(),
            by_name: BTreeMap::new(),
        }
    }

    /// Registers a task in `Pending` state and returns its id.
    pub fn register(
        &mut self,
        name: &str,
        kind: TaskKind,
        context: Vec<(String, String)>,
        now: Instant,
    ) -> TaskId {
        let id = TaskId(self.next_id);
        self.next_id += 1;
        self.active.insert(
            id,
            TaskRecord {
                id,
                name: name.to_string(),
                kind,
                spawned_at: now,
                finished_at: None,
                context,
                state: TaskState::Pending,
                restarts: 0,
                error: None,
            },
        );
        self.counters.spawned += 1;
        self.counters.running += 1;
        id
    }

    /// Sets a non-terminal state (`Running`, `Retrying`, `Pending`); `Retrying` counts a restart.
    pub fn set_state(&mut self, id: TaskId, state: TaskState) {
        debug_assert!(!state.is_terminal(), "use finish() for terminal states");
        if let Some(rec) = self.active.get_mut(&id) {
            if state == TaskState::Retrying {
                rec.restarts += 1;
                self.counters.restarted += 1;
            }
            rec.state = state;
        }
    }

    /// Records an error message on an active task without finishing it.
    pub fn note_error(&mut self, id: TaskId, error: &str) {
        if let Some(rec) = self.active.get_mut(&id) {
            rec.error = Some(error.to_string());
        }
    }

    /// Moves a task to a terminal state and into the finished list; prunes by `now`.
    pub fn finish(&mut self, id: TaskId, state: TaskState, error: Option<String>, now: Instant) {
        debug_assert!(state.is_terminal());
        let Some(mut rec) = self.active.remove(&id) else {
            return;
        };
        rec.state = state;
        rec.finished_at = Some(now);
        if error.is_some() {
            rec.error = error;
        }
        self.counters.running = self.counters.running.saturating_sub(1);
        match state {
            TaskState::Completed => self.counters.completed += 1,
            TaskState::Cancelled => self.counters.cancelled += 1,
            _ => self.counters.failed += 1,
        }
        self.finished.push_back(rec);
        self.prune(now);
    }

    /// Drops finished records past the retention window or over `max_records`;
    /// returns how many were dropped.
    pub fn prune(&mut self, now: Instant) -> usize {
        let before = self.finished.len();
        while let Some(front) = self.finished.front() {
            let done = front.finished_at.unwrap_or(front.spawned_at);
            let expired = now.saturating_duration_since(done) >= self.config.retention;
            if expired || self.finished.len() > self.config.max_records {
                self.finished.pop_front();
            } else {
                break;
            }
        }
        before - self.finished.len()
    }

    /// A task's record, active or retained.
    pub fn get(&self, id: TaskId) -> Option<&TaskRecord> {
        self.active
            .get(&id)
            .or_else(|| self.finished.iter().find(|r| r.id == id))
    }

    /// Active (non-terminal) records in id order.
    pub fn active(&self) -> impl Iterator<Item = &TaskRecord> {
        self.active.values()
    }

    /// Retained finished records, oldest first.
    pub fn finished(&self) -> impl Iterator<Item = &TaskRecord> {
        self.finished.iter()
    }

    /// Number of active tasks.
    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    /// Number of retained finished records.
    pub fn finished_count(&self) -> usize {
        self.finished.len()
    }

    /// Current counters.
    pub fn counters(&self) -> TaskCounters {
        self.counters
    }

    fn name_entry(&mut self, task: &str) -> &mut TaskNameCounters {
        let key = if self.by_name.contains_key(task) || self.by_name.len() < MAX_TASK_NAMES {
            task
        } else {
            OTHER_TASKS
        };
        self.by_name
            .entry(key.to_string())
            .or_insert_with(|| TaskNameCounters {
                task: key.to_string(),
                ..TaskNameCounters::default()
            })
    }

    /// Counts one panic caught in the task named `task`.
    pub fn note_panic(&mut self, task: &str) {
        self.name_entry(task).panics += 1;
    }

    /// Counts one supervisor restart of the task named `task`.
    pub fn note_restart(&mut self, task: &str) {
        self.name_entry(task).restarts += 1;
    }

    /// Per-name panic and restart counters, by name (at most [`MAX_TASK_NAMES`] + 1).
    pub fn by_name(&self) -> Vec<TaskNameCounters> {
        self.by_name.values().cloned().collect()
    }
}

pub(crate) struct TrackerInner {
    pub(crate) registry: TaskRegistry,
    pub(crate) cancels: BTreeMap<TaskId, StopSignal>,
    pub(crate) shut_down: bool,
}

/// Executor-local shared tracker handle (cheap `Rc` clone).
///
/// One per executor/core: no locks, no atomics. Spawn helpers in `spawn.rs` register
/// here; [`TaskTracker::shutdown`](super::shutdown) drains it.
#[derive(Clone)]
pub struct TaskTracker {
    pub(crate) inner: Rc<RefCell<TrackerInner>>,
}

impl Default for TaskTracker {
    fn default() -> Self {
        Self::new(TrackerConfig::default())
    }
}

impl TaskTracker {
    /// A tracker with the given retention bounds.
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            inner: Rc::new(RefCell::new(TrackerInner {
                registry: TaskRegistry::new(config),
                cancels: BTreeMap::new(),
                shut_down: false,
            })),
        }
    }

    /// Runs `f` with read access to the registry (records, counters).
    pub fn with_registry<R>(&self, f: impl FnOnce(&TaskRegistry) -> R) -> R {
        f(&self.inner.borrow().registry)
    }

    /// Current counters.
    pub fn counters(&self) -> TaskCounters {
        self.inner.borrow().registry.counters()
    }

    /// Counts one panic caught in the task named `task` (a loop or a child name).
    pub fn note_panic(&self, task: &str) {
        self.inner.borrow_mut().registry.note_panic(task);
    }

    /// Counts one supervisor restart of the task named `task`.
    pub fn note_restart(&self, task: &str) {
        self.inner.borrow_mut().registry.note_restart(task);
    }

    /// Per-name panic and restart counters.
    pub fn by_name(&self) -> Vec<TaskNameCounters> {
        self.inner.borrow().registry.by_name()
    }

    /// Number of tasks still active.
    pub fn active_count(&self) -> usize {
        self.inner.borrow().registry.active_count()
    }

    /// A task's state, if its record is still known.
    pub fn state(&self, id: TaskId) -> Option<TaskState> {
        self.inner.borrow().registry.get(id).map(|r| r.state)
    }

    /// Sets a non-terminal state on an active task (`Retrying` counts a restart).
    pub fn set_state(&self, id: TaskId, state: TaskState) {
        self.inner.borrow_mut().registry.set_state(id, state);
    }

    /// Requests cancellation of one task; false if it is not active.
    pub fn cancel(&self, id: TaskId) -> bool {
        let ev = self.inner.borrow().cancels.get(&id).cloned();
        match ev {
            Some(ev) => {
                ev.set();
                true
            }
            None => false,
        }
    }

    /// Requests cancellation of every active task; returns how many were signalled.
    pub fn cancel_all(&self) -> usize {
        let evs: Vec<StopSignal> = self.inner.borrow().cancels.values().cloned().collect();
        for ev in &evs {
            ev.set();
        }
        evs.len()
    }

    /// Whether `shutdown` has been called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.borrow().shut_down
    }

    /// Drops expired finished records now (also done on every finish).
    pub fn prune(&self, now: Instant) -> usize {
        self.inner.borrow_mut().registry.prune(now)
    }
}

thread_local! {
    static LOCAL: TaskTracker = TaskTracker::default();
}

/// This thread's (= this executor's) default tracker, used by the free spawn functions.
pub fn local_tracker() -> TaskTracker {
    LOCAL.with(|t| t.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn lifecycle_updates_counters() {
        let mut r = TaskRegistry::new(TrackerConfig::default());
        let t0 = Instant::now();
        let a = r.register(
            "a",
            TaskKind::Network,
            vec![("peer".into(), "7".into())],
            t0,
        );
        let b = r.register("b", TaskKind::Control, vec![], t0);
        let c = r.register("c", TaskKind::Other, vec![], t0);
        assert_eq!(r.get(a).unwrap().state, TaskState::Pending);
        r.set_state(a, TaskState::Running);
        r.set_state(a, TaskState::Retrying);
        r.set_state(a, TaskState::Running);
        r.finish(a, TaskState::Completed, None, t0);
        r.finish(b, TaskState::Failed, Some("bad".into()), t0);
        r.finish(c, TaskState::Cancelled, None, t0);
        let k = r.counters();
        assert_eq!(
            (
                k.spawned,
                k.running,
                k.completed,
                k.failed,
                k.cancelled,
                k.restarted
            ),
            (3, 0, 1, 1, 1, 1)
        );
        assert_eq!(r.get(a).unwrap().restarts, 1);
        assert_eq!(r.get(a).unwrap().context[0].1, "7");
        assert_eq!(r.get(b).unwrap().error.as_deref(), Some("bad"));
        assert_eq!(r.active_count(), 0);
    }

    #[test]
    fn retention_window_drops_old_records() {
        let mut r = TaskRegistry::new(TrackerConfig {
            retention: ms(100),
            max_records: 1000,
        });
        let t0 = Instant::now();
        for i in 0..10 {
            let id = r.register("t", TaskKind::Other, vec![], t0);
            r.finish(id, TaskState::Completed, None, t0 + ms(i * 10));
        }
        assert_eq!(r.finished_count(), 10);
        // At t0+150, records finished before t0+50 are past the 100 ms window.
        let dropped = r.prune(t0 + ms(150));
        assert_eq!(dropped, 6);
        assert_eq!(r.finished_count(), 4);
        r.prune(t0 + ms(1000));
        assert_eq!(r.finished_count(), 0);
        // Counters survive pruning.
        assert_eq!(r.counters().completed, 10);
    }

    #[test]
    fn max_records_bounds_memory() {
        let mut r = TaskRegistry::new(TrackerConfig {
            retention: Duration::from_secs(3600),
            max_records: 5,
        });
        let t0 = Instant::now();
        let mut ids = vec![];
        for _ in 0..1000 {
            let id = r.register("t", TaskKind::Other, vec![], t0);
            r.finish(id, TaskState::Failed, None, t0);
            ids.push(id);
            assert!(r.finished_count() <= 5);
        }
        assert!(r.get(ids[0]).is_none());
        assert!(r.get(ids[999]).is_some());
        assert_eq!(r.counters().failed, 1000);
    }

    #[test]
    fn per_name_counters_are_bounded() {
        let mut r = TaskRegistry::new(TrackerConfig::default());
        r.note_panic("seen_cleanup");
        r.note_panic("seen_cleanup");
        r.note_restart("control_receiver");
        for i in 0..200 {
            r.note_panic(&format!("dyn-{i}"));
        }
        let v = r.by_name();
        assert_eq!(v.len(), MAX_TASK_NAMES + 1);
        let get = |n: &str| v.iter().find(|c| c.task == n).cloned().unwrap();
        assert_eq!(get("seen_cleanup").panics, 2);
        assert_eq!(get("control_receiver").restarts, 1);
        // 62 dynamic names fit, the other 138 land in `other`.
        assert_eq!(get(OTHER_TASKS).panics, 200 - (MAX_TASK_NAMES as u64 - 2));
    }

    #[test]
    fn active_records_are_never_pruned() {
        let mut r = TaskRegistry::new(TrackerConfig {
            retention: ms(1),
            max_records: 1,
        });
        let t0 = Instant::now();
        let id = r.register("long", TaskKind::Other, vec![], t0);
        r.prune(t0 + Duration::from_secs(10));
        assert_eq!(r.get(id).unwrap().state, TaskState::Pending);
    }
}
