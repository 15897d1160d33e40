//! OTP-style supervision: restart types, capped jittered backoff, restart intensity,
//! ordered start, reverse-ordered stop with per-child shutdown timeouts, escalation.
//!
//! [`SupervisorCore`] holds the decision rules as synchronous code taking `now`;
//! [`Supervisor`] runs children on the current glommio executor and applies them.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use serde::Serialize;

use super::backoff::{seed_from_name, Backoff, BackoffConfig};
use super::error::TaskError;
use super::signal::StopSignal;
use super::spawn::{cancellable, catch_panic, TaskSpec};
use super::timeout::with_timeout;
use super::tracker::{TaskKind, TaskState, TaskTracker};

/// When a child is restarted (Erlang/OTP semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartType {
    /// Always restarted, even after a normal exit: long-lived services.
    Permanent,
    /// Restarted only after an abnormal exit (error, panic, timeout).
    Transient,
    /// Never restarted: one-shot jobs.
    Temporary,
}

impl RestartType {
    /// Whether a child of this type that ended with `result` should be restarted.
    pub fn should_restart(self, result: &Result<(), TaskError>) -> bool {
        match self {
            RestartType::Permanent => true,
            RestartType::Transient => matches!(result, Err(e) if e.is_abnormal()),
            RestartType::Temporary => false,
        }
    }
}

/// Restart intensity: at most `max_restarts` within `within`; exceeding it escalates.
///
/// A child that ran for `stable_after` before exiting is considered stable: its
/// backoff starts over and the restart history is cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RestartIntensity {
    /// Restarts allowed inside the window.
    pub max_restarts: u32,
    /// Sliding window length.
    pub within: Duration,
    /// Uptime after which a child counts as stable.
    pub stable_after: Duration,
}

impl Default for RestartIntensity {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            within: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
        }
    }
}

/// Sliding window of restart times (pure).
#[derive(Debug, Clone)]
pub struct IntensityWindow {
    cfg: RestartIntensity,
    restarts: VecDeque<Instant>,
}

impl IntensityWindow {
    /// An empty window.
    pub fn new(cfg: RestartIntensity) -> Self {
        Self {
            cfg,
            restarts: VecDeque::new(),
        }
    }

    /// Records a restart at `now`; false when this restart exceeds the intensity.
    pub fn record(&mut self, now: Instant) -> bool {
        while let Some(&t) = self.restarts.front() {
            if now.saturating_duration_since(t) >= self.cfg.within {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.push_back(now);
        self.restarts.len() as u32 <= self.cfg.max_restarts
    }

    /// Forgets history, after a stable period.
    pub fn reset(&mut self) {
        self.restarts.clear();
    }

    /// Restarts currently inside the window.
    pub fn len(&self) -> usize {
        self.restarts.len()
    }

    /// Whether no restart is inside the window.
    pub fn is_empty(&self) -> bool {
        self.restarts.is_empty()
    }
}

/// Raised when restart intensity is exceeded: the node is degraded, and for a
/// critical child it should shut down with a non-zero exit code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Escalation {
    /// Supervisor that gave up.
    pub supervisor: String,
    /// Child whose restart exceeded the intensity.
    pub task: String,
    /// Whether that child is critical (then shutdown is requested).
    pub critical: bool,
    /// Restarts inside the window when it tripped.
    pub restarts_in_window: usize,
    /// Last error of the child.
    pub last_error: Option<String>,
}

/// Exit code requested when a critical child escalates.
pub const CRITICAL_EXIT_CODE: i32 = 1;

/// Final outcome of a supervisor run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SupervisorOutcome {
    /// Stopped on request.
    Stopped,
    /// A critical child escalated: the node should exit with `exit_code`.
    ShutdownRequested {
        /// Non-zero process exit code.
        exit_code: i32,
        /// The escalation that caused it.
        escalation: Escalation,
    },
}

/// What the core decided after a child exited.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Restart after this delay.
    Restart(Duration),
    /// Do not restart (restart type says so).
    Exit,
    /// Intensity exceeded: give up on the child and escalate.
    Escalate(Escalation),
}

/// Run state of a supervised child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildRunState {
    /// Not yet started.
    NotStarted,
    /// Its future is running.
    Running,
    /// Waiting for its backoff delay before a restart.
    BackingOff,
    /// Ended and not restarted (restart type).
    Exited,
    /// Given up on after an escalation.
    GaveUp,
    /// Stopped by the supervisor.
    Stopped,
}

/// How a child was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopKind {
    /// Finished within its shutdown timeout after the stop signal.
    Graceful,
    /// Ignored the stop signal past its shutdown timeout and was cancelled.
    Cancelled,
}

/// Per-child status.
#[derive(Debug, Clone, Serialize)]
pub struct ChildStatus {
    /// Child name.
    pub name: String,
    /// Restart type.
    pub restart: RestartType,
    /// Whether escalation of this child requests node shutdown.
    pub critical: bool,
    /// Current run state.
    pub state: ChildRunState,
    /// Restarts so far.
    pub restarts: u32,
    /// Last error seen.
    pub last_error: Option<String>,
    /// How it was stopped, once stopped.
    pub stopped: Option<StopKind>,
}

/// Supervisor status for the node's status endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct SupervisorStatus {
    /// Supervisor name.
    pub name: String,
    /// True once any child escalated.
    pub degraded: bool,
    /// Exit code requested by a critical escalation.
    pub shutdown_requested: Option<i32>,
    /// Escalations so far.
    pub escalations: Vec<Escalation>,
    /// Children in start order.
    pub children: Vec<ChildStatus>,
    /// Order children were started in (names).
    pub start_order: Vec<String>,
    /// Order children were stopped in (names).
    pub stop_order: Vec<String>,
}

struct CoreChild {
    status: ChildStatus,
    backoff: Backoff,
}

/// Synchronous supervision rules (see module docs).
pub struct SupervisorCore {
    name: String,
    intensity: RestartIntensity,
    window: IntensityWindow,
    children: Vec<CoreChild>,
    degraded: bool,
    escalations: Vec<Escalation>,
    shutdown_requested: Option<i32>,
    start_order: Vec<String>,
    stop_order: Vec<String>,
}

impl SupervisorCore {
    /// A core with no children.
    pub fn new(name: &str, intensity: RestartIntensity) -> Self {
        Self {
            name: name.to_string(),
            intensity,
            window: IntensityWindow::new(intensity),
            children: Vec::new(),
            degraded: false,
            escalations: Vec::new(),
            shutdown_requested: None,
            start_order: Vec::new(),
            stop_order: Vec::new(),
        }
    }

    /// Adds a child; returns its index.
    pub fn add_child(
        &mut self,
        name: &str,
        restart: RestartType,
        critical: bool,
        backoff: BackoffConfig,
        seed: u64,
    ) -> usize {
        self.children.push(CoreChild {
            status: ChildStatus {
                name: name.to_string(),
                restart,
                critical,
                state: ChildRunState::NotStarted,
                restarts: 0,
                last_error: None,
                stopped: None,
            },
            backoff: Backoff::new(backoff, seed_from_name(seed, name)),
        });
        self.children.len() - 1
    }

    /// Sets a child's run state, recording starts for the start order.
    pub fn set_state(&mut self, idx: usize, state: ChildRunState) {
        let c = &mut self.children[idx];
        if c.status.state == ChildRunState::NotStarted && state == ChildRunState::Running {
            self.start_order.push(c.status.name.clone());
        }
        c.status.state = state;
    }

    /// Records that a child was stopped, for the stop order.
    pub fn mark_stopped(&mut self, idx: usize, how: StopKind) {
        let c = &mut self.children[idx];
        c.status.state = ChildRunState::Stopped;
        c.status.stopped = Some(how);
        self.stop_order.push(c.status.name.clone());
    }

    /// Applies the restart rules to a child that ended with `result` after running
    /// for `ran_for`, at `now`.
    pub fn on_exit(
        &mut self,
        idx: usize,
        result: &Result<(), TaskError>,
        ran_for: Duration,
        now: Instant,
    ) -> Decision {
        let name = self.name.clone();
        let stable = ran_for >= self.intensity.stable_after;
        let c = &mut self.children[idx];
        if let Err(e) = result {
            c.status.last_error = Some(e.to_string());
        }
        if !c.status.restart.should_restart(result) {
            c.status.state = ChildRunState::Exited;
            return Decision::Exit;
        }
        if stable {
            c.backoff.reset();
            self.window.reset();
        }
        if !self.window.record(now) {
            let esc = Escalation {
                supervisor: name,
                task: c.status.name.clone(),
                critical: c.status.critical,
                restarts_in_window: self.window.len(),
                last_error: c.status.last_error.clone(),
            };
            c.status.state = ChildRunState::GaveUp;
            self.degraded = true;
            if esc.critical && self.shutdown_requested.is_none() {
                self.shutdown_requested = Some(CRITICAL_EXIT_CODE);
            }
            self.escalations.push(esc.clone());
            return Decision::Escalate(esc);
        }
        c.status.restarts += 1;
        c.status.state = ChildRunState::BackingOff;
        Decision::Restart(c.backoff.next_delay())
    }

    /// Snapshot for status output.
    pub fn status(&self) -> SupervisorStatus {
        SupervisorStatus {
            name: self.name.clone(),
            degraded: self.degraded,
            shutdown_requested: self.shutdown_requested,
            escalations: self.escalations.clone(),
            children: self.children.iter().map(|c| c.status.clone()).collect(),
            start_order: self.start_order.clone(),
            stop_order: self.stop_order.clone(),
        }
    }
}

type ChildFuture = Pin<Box<dyn Future<Output = Result<(), TaskError>>>>;
type ChildFactory = Rc<dyn Fn(StopSignal) -> ChildFuture>;
type EscalationHook = Rc<dyn Fn(&Escalation)>;

/// A child to supervise: a factory called for every (re)start with a stop signal the
/// child should watch to exit gracefully.
#[derive(Clone)]
pub struct ChildSpec {
    /// Child name.
    pub name: String,
    /// Tracker category.
    pub kind: TaskKind,
    /// Restart type.
    pub restart: RestartType,
    /// Escalation of a critical child requests node shutdown.
    pub critical: bool,
    /// Grace period after the stop signal before the child is cancelled.
    pub shutdown_timeout: Duration,
    /// Delay between restarts.
    pub backoff: BackoffConfig,
    factory: ChildFactory,
}

impl ChildSpec {
    /// A non-critical child with default backoff and a 1 s shutdown timeout.
    pub fn new<F, Fut, E>(name: impl Into<String>, restart: RestartType, factory: F) -> Self
    where
        F: Fn(StopSignal) -> Fut + 'static,
        Fut: Future<Output = Result<(), E>> + 'static,
        E: Display,
    {
        Self {
            name: name.into(),
            kind: TaskKind::Other,
            restart,
            critical: false,
            shutdown_timeout: Duration::from_secs(1),
            backoff: BackoffConfig::default(),
            factory: Rc::new(move |stop| {
                let fut = factory(stop);
                Box::pin(async move { fut.await.map_err(|e| TaskError::Failed(e.to_string())) })
            }),
        }
    }

    /// Marks the child critical.
    pub fn critical(mut self, critical: bool) -> Self {
        self.critical = critical;
        self
    }

    /// Sets the shutdown timeout.
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = d;
        self
    }

    /// Sets the backoff.
    pub fn backoff(mut self, b: BackoffConfig) -> Self {
        self.backoff = b;
        self
    }

    /// Sets the tracker category.
    pub fn kind(mut self, kind: TaskKind) -> Self {
        self.kind = kind;
        self
    }
}

struct ChildRt {
    spec: ChildSpec,
    stop: StopSignal,
    kill: StopSignal,
    done: StopSignal,
    started: bool,
}

struct SupShared {
    core: SupervisorCore,
    children: Vec<ChildRt>,
    started: bool,
    stopping: bool,
    outcome: Option<SupervisorOutcome>,
    on_escalation: Option<EscalationHook>,
}

/// Executor-local supervisor handle (cheap `Rc` clone).
#[derive(Clone)]
pub struct Supervisor {
    shared: Rc<RefCell<SupShared>>,
    tracker: TaskTracker,
    finished: StopSignal,
    seed: u64,
}

impl Supervisor {
    /// A supervisor registering its children's runs in `tracker`; `seed` fixes jitter.
    pub fn new(name: &str, intensity: RestartIntensity, tracker: TaskTracker, seed: u64) -> Self {
        Self {
            shared: Rc::new(RefCell::new(SupShared {
                core: SupervisorCore::new(name, intensity),
                children: Vec::new(),
                started: false,
                stopping: false,
                outcome: None,
                on_escalation: None,
            })),
            tracker,
            finished: StopSignal::new(),
            seed,
        }
    }

    /// Adds a child (started by [`Supervisor::start`], in insertion order).
    pub fn add_child(&self, spec: ChildSpec) {
        let mut s = self.shared.borrow_mut();
        s.core.add_child(
            &spec.name,
            spec.restart,
            spec.critical,
            spec.backoff,
            self.seed,
        );
        s.children.push(ChildRt {
            spec,
            stop: StopSignal::new(),
            kill: StopSignal::new(),
            done: StopSignal::new(),
            started: false,
        });
    }

    /// Called on every escalation (e.g. to flip a node-wide degraded flag).
    pub fn on_escalation(&self, f: impl Fn(&Escalation) + 'static) {
        self.shared.borrow_mut().on_escalation = Some(Rc::new(f));
    }

    /// Starts all children in order; a no-op if already started or stopped.
    pub fn start(&self) {
        let n = {
            let mut s = self.shared.borrow_mut();
            if s.started || s.stopping {
                return;
            }
            s.started = true;
            s.children.len()
        };
        for idx in 0..n {
            self.start_child(idx);
        }
    }

    fn start_child(&self, idx: usize) {
        let (spec, stop, kill, done, name) = {
            let mut s = self.shared.borrow_mut();
            let sup_name = s.core.name.clone();
            let c = &mut s.children[idx];
            c.started = true;
            let name = format!("{}/{}", sup_name, c.spec.name);
            (
                c.spec.clone(),
                c.stop.clone(),
                c.kill.clone(),
                c.done.clone(),
                name,
            )
        };
        // Mark running synchronously so start order is the insertion order.
        self.shared
            .borrow_mut()
            .core
            .set_state(idx, ChildRunState::Running);
        let this = self.clone();
        let tracker = self.tracker.clone();
        let _handle = self.tracker.spawn_result_with_id(
            TaskSpec::new(name.clone(), spec.kind).with("supervisor", self.name()),
            move |task_id| async move {
                let id_hint = name;
                let mut first = true;
                // How the runner ends: a child that exited abnormally without a
                // restart, or that was given up on, is a failed task, not a completed
                // one (so `plumtree_tasks_total{state="failed"}` counts it).
                let mut outcome: Result<(), TaskError> = Ok(());
                loop {
                    if stop.is_set() || kill.is_set() {
                        break;
                    }
                    if !first {
                        tracker.set_state(task_id, TaskState::Running);
                        this.shared
                            .borrow_mut()
                            .core
                            .set_state(idx, ChildRunState::Running);
                    }
                    first = false;
                    let began = Instant::now();
                    let fut = (spec.factory)(stop.clone());
                    let result = cancellable(&kill, async {
                        match catch_panic(fut).await {
                            Ok(r) => r,
                            Err(e) => Err(e),
                        }
                    })
                    .await;
                    if stop.is_set() || kill.is_set() {
                        break;
                    }
                    if let Err(e) = &result {
                        tracing::warn!(child = %id_hint, error = %e, "supervised child exited");
                        if matches!(e, TaskError::Panic(_)) {
                            tracker.note_panic(&spec.name);
                        }
                    }
                    let decision = this.shared.borrow_mut().core.on_exit(
                        idx,
                        &result,
                        began.elapsed(),
                        Instant::now(),
                    );
                    match decision {
                        Decision::Exit => {
                            if let Err(e) = result {
                                if e.is_abnormal() {
                                    // Already counted as this child's panic above.
                                    outcome = Err(match e {
                                        TaskError::Panic(m) => {
                                            TaskError::Failed(format!("panicked: {m}"))
                                        }
                                        other => other,
                                    });
                                }
                            }
                            break;
                        }
                        Decision::Restart(delay) => {
                            tracing::info!(child = %id_hint, ?delay, "restarting child");
                            tracker.set_state(task_id, TaskState::Retrying);
                            tracker.note_restart(&spec.name);
                            let stopped = future::or(
                                async {
                                    glommio::timer::sleep(delay).await;
                                    false
                                },
                                async {
                                    stop.wait().await;
                                    true
                                },
                            )
                            .await;
                            if stopped {
                                break;
                            }
                        }
                        Decision::Escalate(esc) => {
                            tracing::error!(?esc, "restart intensity exceeded");
                            outcome = Err(TaskError::Failed(format!(
                                "gave up after {} restarts in the window: {}",
                                esc.restarts_in_window,
                                esc.last_error.as_deref().unwrap_or("normal exit")
                            )));
                            this.escalate(esc);
                            break;
                        }
                    }
                }
                done.set();
                outcome
            },
        );
    }

    fn escalate(&self, esc: Escalation) {
        let cb = self.shared.borrow().on_escalation.clone();
        if let Some(cb) = cb {
            cb(&esc);
        }
        if esc.critical {
            let this = self.clone();
            glommio::spawn_local(async move {
                this.stop_with(SupervisorOutcome::ShutdownRequested {
                    exit_code: CRITICAL_EXIT_CODE,
                    escalation: esc,
                })
                .await;
            })
            .detach();
        }
    }

    /// Stops children in reverse start order: each gets its stop signal and its
    /// shutdown timeout, after which it is cancelled. Returns the outcome (an earlier
    /// outcome, such as a critical escalation, wins).
    pub async fn stop(&self) -> SupervisorOutcome {
        self.stop_with(SupervisorOutcome::Stopped).await
    }

    async fn stop_with(&self, outcome: SupervisorOutcome) -> SupervisorOutcome {
        let already = std::mem::replace(&mut self.shared.borrow_mut().stopping, true);
        if already {
            return self.wait().await;
        }
        let n = self.shared.borrow().children.len();
        for idx in (0..n).rev() {
            let (started, stop, kill, done, timeout, name) = {
                let s = self.shared.borrow();
                let c = &s.children[idx];
                (
                    c.started,
                    c.stop.clone(),
                    c.kill.clone(),
                    c.done.clone(),
                    c.spec.shutdown_timeout,
                    c.spec.name.clone(),
                )
            };
            if !started {
                continue;
            }
            stop.set();
            let how = if with_timeout(timeout, done.wait()).await.is_ok() {
                StopKind::Graceful
            } else {
                tracing::warn!(child = %name, ?timeout, "child ignored stop; cancelling");
                kill.set();
                let _ = with_timeout(timeout.max(Duration::from_millis(10)), done.wait()).await;
                StopKind::Cancelled
            };
            self.shared.borrow_mut().core.mark_stopped(idx, how);
        }
        let out = {
            let mut s = self.shared.borrow_mut();
            s.outcome.get_or_insert(outcome).clone()
        };
        self.finished.set();
        out
    }

    /// Resolves with the outcome once the supervisor has stopped (on request or
    /// because a critical child escalated).
    pub async fn wait(&self) -> SupervisorOutcome {
        self.finished.wait().await;
        self.shared
            .borrow()
            .outcome
            .clone()
            .unwrap_or(SupervisorOutcome::Stopped)
    }

    /// Supervisor name.
    pub fn name(&self) -> String {
        self.shared.borrow().core.name.clone()
    }

    /// Status snapshot.
    pub fn status(&self) -> SupervisorStatus {
        self.shared.borrow().core.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn core(max: u32) -> SupervisorCore {
        SupervisorCore::new(
            "sup",
            RestartIntensity {
                max_restarts: max,
                within: ms(1000),
                stable_after: ms(500),
            },
        )
    }

    fn nojitter() -> BackoffConfig {
        BackoffConfig {
            initial: ms(10),
            max: ms(40),
            multiplier: 2.0,
            jitter: 0.0,
        }
    }

    #[test]
    fn restart_types() {
        let ok: Result<(), TaskError> = Ok(());
        let err = Err(TaskError::Failed("x".into()));
        let panic = Err(TaskError::Panic("p".into()));
        assert!(RestartType::Permanent.should_restart(&ok));
        assert!(RestartType::Permanent.should_restart(&err));
        assert!(!RestartType::Transient.should_restart(&ok));
        assert!(RestartType::Transient.should_restart(&err));
        assert!(RestartType::Transient.should_restart(&panic));
        assert!(!RestartType::Transient.should_restart(&Err(TaskError::Cancelled)));
        assert!(!RestartType::Temporary.should_restart(&err));
        assert!(!RestartType::Temporary.should_restart(&panic));
    }

    #[test]
    fn intensity_window_slides() {
        let mut w = IntensityWindow::new(RestartIntensity {
            max_restarts: 2,
            within: ms(100),
            stable_after: ms(1000),
        });
        let t = Instant::now();
        assert!(w.record(t));
        assert!(w.record(t + ms(10)));
        assert!(!w.record(t + ms(20)));
        // Far enough later the old entries fall out of the window.
        assert!(w.record(t + ms(200)));
    }

    #[test]
    fn backoff_grows_then_caps_and_intensity_escalates() {
        let mut c = core(4);
        let i = c.add_child("net", RestartType::Permanent, true, nojitter(), 1);
        let t = Instant::now();
        let err = Err(TaskError::Failed("boom".into()));
        let mut delays = vec![];
        for k in 0..4 {
            match c.on_exit(i, &err, ms(1), t + ms(k)) {
                Decision::Restart(d) => delays.push(d.as_millis()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(delays, vec![10, 20, 40, 40]);
        match c.on_exit(i, &err, ms(1), t + ms(5)) {
            Decision::Escalate(e) => {
                assert_eq!(e.task, "net");
                assert!(e.critical);
                assert_eq!(e.last_error.as_deref(), Some("task failed: boom"));
            }
            other => panic!("unexpected {other:?}"),
        }
        let st = c.status();
        assert!(st.degraded);
        assert_eq!(st.shutdown_requested, Some(CRITICAL_EXIT_CODE));
        assert_eq!(st.children[0].state, ChildRunState::GaveUp);
    }

    #[test]
    fn non_critical_escalation_only_degrades() {
        let mut c = core(0);
        let i = c.add_child("aux", RestartType::Transient, false, nojitter(), 1);
        let d = c.on_exit(i, &Err(TaskError::Panic("p".into())), ms(1), Instant::now());
        assert!(matches!(d, Decision::Escalate(ref e) if !e.critical));
        assert!(c.status().degraded);
        assert_eq!(c.status().shutdown_requested, None);
    }

    #[test]
    fn stable_run_resets_backoff_and_window() {
        let mut c = core(2);
        let i = c.add_child("a", RestartType::Permanent, false, nojitter(), 1);
        let t = Instant::now();
        let err = Err(TaskError::Failed("x".into()));
        assert_eq!(c.on_exit(i, &err, ms(1), t), Decision::Restart(ms(10)));
        assert_eq!(c.on_exit(i, &err, ms(1), t), Decision::Restart(ms(20)));
        // Ran long enough to be stable: backoff and window start over.
        assert_eq!(c.on_exit(i, &err, ms(600), t), Decision::Restart(ms(10)));
        assert_eq!(c.on_exit(i, &err, ms(1), t), Decision::Restart(ms(20)));
    }

    #[test]
    fn temporary_and_transient_normal_exit_do_not_restart() {
        let mut c = core(10);
        let a = c.add_child("tmp", RestartType::Temporary, false, nojitter(), 1);
        let b = c.add_child("tr", RestartType::Transient, false, nojitter(), 1);
        let t = Instant::now();
        assert_eq!(
            c.on_exit(a, &Err(TaskError::Failed("x".into())), ms(1), t),
            Decision::Exit
        );
        assert_eq!(c.on_exit(b, &Ok(()), ms(1), t), Decision::Exit);
        assert!(!c.status().degraded);
    }
}
