//! Cross-thread wake-ups for the executors: a [`Doorbell`] that a producer thread (the
//! control core, the admin plane, `RunningNode::shutdown`) rings after it pushed work
//! onto a lock-free queue, and that wakes the consuming executor only when that
//! executor is asleep waiting for it (Seastar's rule: batch, wake only a sleeper).
//!
//! The consumer parks a glommio task on [`Doorbell::wait`]; glommio wakes a task from
//! a foreign thread by queueing its waker and writing the executor's eventfd when the
//! executor sleeps in `io_uring_enter`, so a ring costs the producer one atomic swap
//! while the consumer is awake and one waker hand-over (plus glommio's eventfd write)
//! when it sleeps.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// A wake-up for one executor task, rung from any thread.
#[derive(Debug, Default)]
pub struct Doorbell {
    /// Set by the waiting task just before it sleeps; taken by the first ring.
    armed: AtomicBool,
    waker: Mutex<Option<Waker>>,
    /// Rings that found the consumer asleep and woke it.
    woken: AtomicU64,
}

impl Doorbell {
    /// An unarmed doorbell, shared between the consumer and its producers.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Call after publishing work: wakes the consumer if (and only if) it sleeps.
    pub fn ring(&self) {
        // Pairs with the fence in `Wait::poll`: either the consumer sees the work we
        // published before sleeping, or we see its `armed` flag.
        fence(Ordering::SeqCst);
        if self.armed.swap(false, Ordering::SeqCst) {
            let w = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(w) = w {
                self.woken.fetch_add(1, Ordering::Relaxed);
                w.wake();
            }
        }
    }

    /// Rings that woke a sleeping consumer.
    pub fn wakes(&self) -> u64 {
        self.woken.load(Ordering::Relaxed)
    }

    /// Resolves once `ready()` holds; sleeps (armed) in between. `ready` must read
    /// the state the producers publish before they ring.
    pub fn wait<F: Fn() -> bool>(&self, ready: F) -> Wait<'_, F> {
        Wait { bell: self, ready }
    }
}

/// Future of [`Doorbell::wait`].
pub struct Wait<'a, F> {
    bell: &'a Doorbell,
    ready: F,
}

impl<F: Fn() -> bool> Future for Wait<'_, F> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if (self.ready)() {
            self.bell.armed.store(false, Ordering::SeqCst);
            return Poll::Ready(());
        }
        *self.bell.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        self.bell.armed.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if (self.ready)() {
            self.bell.armed.store(false, Ordering::SeqCst);
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl<F> Drop for Wait<'_, F> {
    fn drop(&mut self) {
        // Nobody waits any more: producers need not hand a waker over.
        self.bell.armed.store(false, Ordering::SeqCst);
    }
}

/// A bounded multi-producer command queue into one executor, with its doorbell.
#[derive(Debug)]
pub struct Queue<T> {
    tx: Sender<T>,
    bell: Arc<Doorbell>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            tx: self.tx.clone(),
            bell: self.bell.clone(),
        }
    }
}

impl<T> Queue<T> {
    /// Pushes `v` without blocking and wakes the consumer if it sleeps.
    pub fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        self.tx.try_send(v)?;
        self.bell.ring();
        Ok(())
    }
}

/// The consuming end of a [`Queue`].
#[derive(Debug)]
pub struct QueueRx<T> {
    /// The receiving end; drain it without blocking after [`QueueRx::readable`].
    pub rx: Receiver<T>,
    /// The doorbell the queue's senders ring.
    pub bell: Arc<Doorbell>,
}

impl<T> QueueRx<T> {
    /// Resolves when the queue holds something.
    pub async fn readable(&self) {
        let rx = &self.rx;
        self.bell.wait(|| !rx.is_empty()).await
    }
}

/// A bounded queue of `cap` with a doorbell.
pub fn queue<T>(cap: usize) -> (Queue<T>, QueueRx<T>) {
    let (tx, rx) = crossbeam_channel::bounded(cap);
    let bell = Doorbell::new();
    (
        Queue {
            tx,
            bell: bell.clone(),
        },
        QueueRx { rx, bell },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_ring_from_another_thread_wakes_a_sleeping_executor() {
        let (tx, rx) = queue::<u32>(16);
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap();
        let producer = std::thread::spawn(move || {
            for i in 0..100 {
                std::thread::sleep(Duration::from_millis(1));
                tx.try_send(i).unwrap();
            }
        });
        let got = ex.run(async move {
            let mut got = Vec::new();
            let t = Instant::now();
            while got.len() < 100 && t.elapsed() < Duration::from_secs(20) {
                rx.readable().await;
                while let Ok(v) = rx.rx.try_recv() {
                    got.push(v);
                }
            }
            (got, rx.bell.wakes())
        });
        producer.join().unwrap();
        assert_eq!(got.0, (0..100).collect::<Vec<_>>());
        assert!(got.1 >= 1, "at least one ring found the executor asleep");
    }

    #[test]
    fn a_ring_while_awake_does_not_hand_a_waker_over() {
        let bell = Doorbell::new();
        bell.ring();
        bell.ring();
        assert_eq!(bell.wakes(), 0);
    }
}
