//! Panic-safe, tracked, cancellable spawning on the current glommio executor.
//!
//! glommio 0.9 aborts the process when a panic escapes a task in a custom task queue,
//! so every future is wrapped in `catch_unwind` *inside* the task and the panic message
//! is returned as [`TaskError::Panic`].

use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_lite::future::{self, FutureExt};

use super::error::{panic_message, TaskError};
use super::signal::StopSignal;
use super::tracker::{local_tracker, TaskId, TaskKind, TaskState, TaskTracker};

/// Runs `fut` and converts a panic into `Err(TaskError::Panic(msg))`.
///
/// The building block for every other helper: nothing that runs through this module
/// can unwind into the executor.
pub async fn catch_panic<F: Future>(fut: F) -> Result<F::Output, TaskError> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(v) => Ok(v),
        Err(payload) => Err(TaskError::Panic(panic_message(payload.as_ref()))),
    }
}

/// Runs `fut` until it finishes or `cancel` is set (then `Err(Cancelled)`, and `fut`
/// is dropped). Cancellation is checked before each poll of `fut`.
pub async fn cancellable<T>(
    cancel: &StopSignal,
    fut: impl Future<Output = Result<T, TaskError>>,
) -> Result<T, TaskError> {
    future::or(
        async {
            cancel.wait().await;
            Err(TaskError::Cancelled)
        },
        fut,
    )
    .await
}

/// Name, kind and context of a task to spawn.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    /// Human-readable name (appears in logs and status).
    pub name: String,
    /// Category.
    pub kind: TaskKind,
    /// Key/values kept in the tracker record.
    pub context: Vec<(String, String)>,
}

impl TaskSpec {
    /// A spec without context.
    pub fn new(name: impl Into<String>, kind: TaskKind) -> Self {
        Self {
            name: name.into(),
            kind,
            context: Vec::new(),
        }
    }

    /// Adds one context key/value.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.context.push((key.into(), value.into()));
        self
    }
}

/// Handle to a spawned task: await it for `Result<T, TaskError>`, or cancel it.
///
/// Dropping the handle does not cancel the task (it keeps running, tracked).
pub struct TaskHandle<T> {
    id: TaskId,
    name: Rc<str>,
    cancel: StopSignal,
    join: glommio::task::JoinHandle<Result<T, TaskError>>,
}

impl<T> TaskHandle<T> {
    /// The tracker id of this task.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Requests cancellation; the task resolves to `Err(TaskError::Cancelled)` at its
    /// next poll unless it already finished.
    pub fn cancel(&self) {
        self.cancel.set();
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, TaskError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.join).poll(cx) {
            Poll::Ready(Some(r)) => Poll::Ready(r),
            // The executor dropped the task without running it to the end.
            Poll::Ready(None) => Poll::Ready(Err(TaskError::Cancelled)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Marks the record `Cancelled` if the task is dropped before it finishes
/// (executor teardown, hard cancel).
struct FinishGuard {
    tracker: TaskTracker,
    id: TaskId,
    armed: bool,
}

impl FinishGuard {
    fn finish(&mut self, state: TaskState, error: Option<String>) {
        self.armed = false;
        let mut inner = self.tracker.inner.borrow_mut();
        inner.cancels.remove(&self.id);
        inner.registry.finish(self.id, state, error, Instant::now());
    }
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        if self.armed {
            if let Ok(mut inner) = self.tracker.inner.try_borrow_mut() {
                inner.cancels.remove(&self.id);
                inner
                    .registry
                    .finish(self.id, TaskState::Cancelled, None, Instant::now());
            }
        }
    }
}

fn state_for<T>(r: &Result<T, TaskError>) -> (TaskState, Option<String>) {
    match r {
        Ok(_) => (TaskState::Completed, None),
        Err(TaskError::Cancelled) => (TaskState::Cancelled, None),
        Err(e @ TaskError::Timeout(_)) => (TaskState::Expired, Some(e.to_string())),
        Err(e) => (TaskState::Failed, Some(e.to_string())),
    }
}

impl TaskTracker {
    /// Spawns a tracked, panic-safe, cancellable task whose future yields
    /// `Result<T, TaskError>` directly (the general form the other spawns use).
    pub fn spawn_result<T, F>(&self, spec: TaskSpec, fut: F) -> TaskHandle<T>
    where
        T: 'static,
        F: Future<Output = Result<T, TaskError>> + 'static,
    {
        self.spawn_result_with_id(spec, move |_| fut)
    }

    /// Like [`TaskTracker::spawn_result`], but builds the future from the task's own id
    /// (for tasks that update their tracker record, e.g. supervisor runners marking
    /// `Retrying`).
    pub fn spawn_result_with_id<T, F>(
        &self,
        spec: TaskSpec,
        make: impl FnOnce(TaskId) -> F,
    ) -> TaskHandle<T>
    where
        T: 'static,
        F: Future<Output = Result<T, TaskError>> + 'static,
    {
        let cancel = StopSignal::new();
        let (id, refused) = {
            let mut inner = self.inner.borrow_mut();
            let id = inner
                .registry
                .register(&spec.name, spec.kind, spec.context, Instant::now());
            inner.cancels.insert(id, cancel.clone());
            (id, inner.shut_down)
        };
        if refused {
            tracing::warn!(task = %spec.name, "spawn after shutdown: cancelled");
            cancel.set();
        }
        let name: Rc<str> = Rc::from(spec.name.as_str());
        let mut guard = FinishGuard {
            tracker: self.clone(),
            id,
            armed: true,
        };
        let task_name = name.clone();
        let task_cancel = cancel.clone();
        let fut = make(id);
        let join = glommio::spawn_local(async move {
            guard
                .tracker
                .inner
                .borrow_mut()
                .registry
                .set_state(id, TaskState::Running);
            let result = cancellable(&task_cancel, async {
                match catch_panic(fut).await {
                    Ok(r) => r,
                    Err(e) => Err(e),
                }
            })
            .await;
            if let Err(e @ TaskError::Panic(_)) = &result {
                tracing::error!(task = %task_name, %id, error = %e, "task panicked");
                guard.tracker.note_panic(&task_name);
            }
            let (state, err) = state_for(&result);
            guard.finish(state, err);
            result
        })
        .detach();
        TaskHandle {
            id,
            name,
            cancel,
            join,
        }
    }

    /// Spawns a tracked task whose output is returned as `Ok(T)` (panics → `Panic`).
    pub fn spawn_named<T, F>(&self, name: &str, kind: TaskKind, fut: F) -> TaskHandle<T>
    where
        T: 'static,
        F: Future<Output = T> + 'static,
    {
        self.spawn_result(TaskSpec::new(name, kind), async move { Ok(fut.await) })
    }

    /// Spawns a tracked task returning `Result<T, E>`; `Err(e)` becomes
    /// `TaskError::Failed(e.to_string())` so it is counted as a failure.
    pub fn spawn_fallible<T, E, F>(&self, spec: TaskSpec, fut: F) -> TaskHandle<T>
    where
        T: 'static,
        E: Display,
        F: Future<Output = Result<T, E>> + 'static,
    {
        self.spawn_result(spec, async move {
            fut.await.map_err(|e| TaskError::Failed(e.to_string()))
        })
    }

    /// Fire-and-forget: tracked, and its failure is logged via `tracing` since nobody
    /// awaits it. Returns the id for cancellation through the tracker.
    pub fn spawn_detached<F>(&self, name: &str, kind: TaskKind, fut: F) -> TaskId
    where
        F: Future<Output = ()> + 'static,
    {
        let handle = self.spawn_named(name, kind, fut);
        let id = handle.id();
        let name = name.to_string();
        glommio::spawn_local(async move {
            match handle.await {
                Ok(()) => tracing::debug!(task = %name, %id, "detached task completed"),
                Err(TaskError::Cancelled) => {
                    tracing::debug!(task = %name, %id, "detached task cancelled")
                }
                Err(e) => tracing::error!(task = %name, %id, error = %e, "detached task failed"),
            }
        })
        .detach();
        id
    }
}

/// [`TaskTracker::spawn_named`] on this executor's [`local_tracker`].
pub fn spawn_named<T, F>(name: &str, kind: TaskKind, fut: F) -> TaskHandle<T>
where
    T: 'static,
    F: Future<Output = T> + 'static,
{
    local_tracker().spawn_named(name, kind, fut)
}

/// [`TaskTracker::spawn_detached`] on this executor's [`local_tracker`].
pub fn spawn_detached<F>(name: &str, kind: TaskKind, fut: F) -> TaskId
where
    F: Future<Output = ()> + 'static,
{
    local_tracker().spawn_detached(name, kind, fut)
}
