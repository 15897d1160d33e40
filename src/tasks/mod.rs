//! Executor-local task management: panic-safe tracked spawning, OTP-style supervision
//! with backoff and restart intensity, periodic loops, timeouts and shutdown stats.
//!
//! Everything here is per core (glommio thread-per-core): state is `Rc`/`RefCell`, there
//! are no locks or atomics. Pure rules (backoff, intensity window, retention, status math)
//! are synchronous and take `now` so they are testable without an executor.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backoff;
pub mod error;
pub mod looping;
pub mod shutdown;
pub mod signal;
pub mod spawn;
pub mod supervisor;
pub mod timeout;
pub mod tracker;

pub use backoff::{Backoff, BackoffConfig};
pub use error::TaskError;
pub use looping::{
    Loop, LoopConfig, LoopError, LoopHandle, LoopManager, LoopManagerStatus, LoopStatus,
};
pub use shutdown::{ShutdownStats, ShutdownStatus};
pub use signal::{Notify, StopSignal};
pub use spawn::{catch_panic, spawn_detached, spawn_named, TaskHandle, TaskSpec};
pub use supervisor::{
    ChildSpec, Escalation, RestartIntensity, RestartType, Supervisor, SupervisorOutcome,
    SupervisorStatus,
};
pub use timeout::{with_timeout, SlowGuard};
pub use tracker::{
    local_tracker, TaskCounters, TaskId, TaskKind, TaskNameCounters, TaskRecord, TaskState,
    TaskTracker, TrackerConfig, MAX_TASK_NAMES, OTHER_TASKS,
};
