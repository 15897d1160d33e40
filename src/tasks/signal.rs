//! Executor-local wake-up primitives (no atomics: everything lives on one core).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct Inner {
    generation: Cell<u64>,
    set: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl Inner {
    fn wake_all(&self) {
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }

    fn register(&self, waker: &Waker) {
        let mut ws = self.wakers.borrow_mut();
        if !ws.iter().any(|w| w.will_wake(waker)) {
            ws.push(waker.clone());
        }
    }
}

/// A one-shot stop signal: once set it stays set and every waiter wakes.
///
/// Used as cancel tokens, graceful-stop requests and "task finished" signals, where a
/// late waiter must still see a signal that already fired. (Named for what it is, so
/// it is not confused with the `Event`s that `protocol` and `membership` emit.)
#[derive(Clone, Default)]
pub struct StopSignal {
    inner: Rc<Inner>,
}

impl StopSignal {
    /// A fresh, unset signal.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the latch and wakes all waiters; idempotent.
    pub fn set(&self) {
        if !self.inner.set.replace(true) {
            self.inner.wake_all();
        }
    }

    /// Whether the latch has been set.
    pub fn is_set(&self) -> bool {
        self.inner.set.get()
    }

    /// Resolves once the latch is set (immediately if it already is).
    pub fn wait(&self) -> StopSignalWait {
        StopSignalWait {
            inner: self.inner.clone(),
        }
    }
}

/// Future returned by [`StopSignal::wait`].
pub struct StopSignalWait {
    inner: Rc<Inner>,
}

impl Future for StopSignalWait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.set.get() {
            Poll::Ready(())
        } else {
            self.inner.register(cx.waker());
            Poll::Pending
        }
    }
}

/// A re-armable broadcast notification: waiters created before `notify_all` wake.
///
/// Used for control changes (pause/resume/stop) that can fire many times.
#[derive(Clone, Default)]
pub struct Notify {
    inner: Rc<Inner>,
}

impl Notify {
    /// A fresh notifier.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes every waiter created before this call.
    pub fn notify_all(&self) {
        self.inner.generation.set(self.inner.generation.get() + 1);
        self.inner.wake_all();
    }

    /// A future that resolves at the next `notify_all` after this call.
    pub fn notified(&self) -> Notified {
        Notified {
            inner: self.inner.clone(),
            generation: self.inner.generation.get(),
        }
    }
}

/// Future returned by [`Notify::notified`].
pub struct Notified {
    inner: Rc<Inner>,
    generation: u64,
}

impl Future for Notified {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.generation.get() != self.generation {
            Poll::Ready(())
        } else {
            self.inner.register(cx.waker());
            Poll::Pending
        }
    }
}
