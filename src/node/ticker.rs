//! A guard against lost wake-ups in glommio 0.9's sleep. An executor with nothing to
//! do sleeps in `io_uring_enter` on its *main* ring, linked to its *latency* ring by a
//! poll on that ring's descriptor; timers and cross-thread wakes (the eventfd that
//! [`super::wake::Doorbell`] rings through) complete on the latency ring. When that
//! link does not fire (glommio issue 547, fixed upstream only by a sleep rewrite that
//! 0.9 lacks), the executor sleeps through its timers and doorbells until a socket
//! operation on the main ring completes. Seen here as nodes whose shard or control
//! executor sat in `io_uring_wait_cqes` for good (a debugger's interrupt freed them),
//! about once in 4 runs of the 8-host namespace test.
//!
//! The guard: every executor keeps a receive pending on a loopback UDP socket of its
//! own (main ring), and one thread per node sends each of them a 1-byte datagram every
//! [`TICK`]. A lost wake-up then costs at most a tick instead of the node. Cost: one
//! datagram per executor per tick, a few microseconds of CPU a second.

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Period of the guard datagrams: the longest a lost wake-up can stall an executor.
pub const TICK: Duration = Duration::from_millis(100);

/// Where the guard datagrams go, filled in by the executors as they start.
#[derive(Debug, Clone, Default)]
pub struct TickTargets {
    addrs: Arc<Mutex<Vec<SocketAddr>>>,
    /// Guard datagrams the executors received (for tests and debugging).
    received: Arc<AtomicU64>,
}

impl TickTargets {
    fn add(&self, a: SocketAddr) {
        self.addrs.lock().unwrap_or_else(|p| p.into_inner()).push(a);
    }

    fn snapshot(&self) -> Vec<SocketAddr> {
        self.addrs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Guard datagrams received so far, over every executor.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// The node's guard thread; stops on drop.
#[derive(Debug)]
pub struct WakeTicker {
    targets: TickTargets,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl WakeTicker {
    /// Starts the thread; executors register with [`serve`] on `ticker.targets()`.
    pub fn start() -> std::io::Result<WakeTicker> {
        let targets = TickTargets::default();
        let stop = Arc::new(AtomicBool::new(false));
        let sock = StdUdpSocket::bind("127.0.0.1:0")?;
        let handle = {
            let (targets, stop) = (targets.clone(), stop.clone());
            std::thread::Builder::new()
                .name("wake-ticker".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        for a in targets.snapshot() {
                            // A full socket buffer already holds a wake-up.
                            let _ = sock.send_to(&[0], a);
                        }
                    }
                })?
        };
        Ok(WakeTicker {
            targets,
            stop,
            handle: Some(handle),
        })
    }

    /// What executors register with.
    pub fn targets(&self) -> TickTargets {
        self.targets.clone()
    }
}

impl Drop for WakeTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Runs on an executor for its whole life: keeps a receive pending on a loopback
/// socket of its own, registered with `targets`. Nothing is done with what arrives;
/// its completion is what wakes the executor.
pub async fn serve(targets: TickTargets) {
    let sock = match glommio::net::UdpSocket::bind("127.0.0.1:0") {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "wake guard socket: bind failed; this executor runs without it");
            return;
        }
    };
    match sock.local_addr() {
        Ok(a) => targets.add(a),
        Err(e) => {
            tracing::warn!(error = %e, "wake guard socket has no address");
            return;
        }
    }
    let mut buf = [0u8; 8];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok(_) => {
                targets.received.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(error = %e, "wake guard socket: receive failed");
                glommio::timer::sleep(TICK).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn an_executor_serving_the_guard_receives_its_ticks() {
        let ticker = WakeTicker::start().unwrap();
        let targets = ticker.targets();
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap();
        let t = targets.clone();
        ex.run(async move {
            glommio::spawn_local(serve(t.clone())).detach();
            let start = Instant::now();
            while t.received() < 3 && start.elapsed() < Duration::from_secs(10) {
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
        });
        assert!(targets.received() >= 3, "got {}", targets.received());
    }
}
