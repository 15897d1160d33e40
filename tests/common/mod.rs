//! Helpers shared by the integration tests; each test crate uses a subset.
#![allow(dead_code)]

pub mod cluster;
pub mod netns;

use std::future::Future;
use std::time::Duration;

/// Runs `f` to completion on a fresh, unpinned glommio executor.
pub fn run<T: Send + 'static>(f: impl Future<Output = T> + 'static) -> T {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .expect("executor")
        .run(f)
}

/// Milliseconds, shortly.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
