//! Pinning the calling thread to one core.

use crate::error::CoreMapError;

/// Size of the kernel CPU set that `sched_setaffinity` takes through libc.
///
/// Cores at or above it cannot be expressed (and would make libc's
/// `CPU_SET` index out of bounds), so they are rejected up front.
const CPU_SETSIZE: usize = 1024;

/// Pins the calling thread to `core`, so it runs only there.
///
/// Why: thread-per-core relies on each executor owning its core: no
/// migrations, warm caches, and shard state that is never touched from
/// another core. Call it first thing on the thread that will run the
/// executor (glommio executors can instead be placed with
/// `Placement::Fixed(core)`; this is for the control thread and any
/// non-glommio thread). Fails with [`CoreMapError::Pin`] when the kernel
/// refuses, typically because the core is offline or outside this process's
/// CPU set; validate the core map first to get a clearer message.
pub fn pin_current_thread(core: usize) -> Result<(), CoreMapError> {
    if core >= CPU_SETSIZE {
        return Err(CoreMapError::Pin { core });
    }
    if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        Ok(())
    } else {
        Err(CoreMapError::Pin { core })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Topology;

    #[test]
    fn pins_to_an_allowed_core() {
        let topo = Topology::detect();
        let core = *topo.online().last().unwrap();
        // A fresh thread, so the test harness thread keeps its affinity.
        std::thread::spawn(move || {
            pin_current_thread(core).unwrap();
            let now = core_affinity::get_core_ids().unwrap();
            #[cfg(target_os = "linux")]
            assert_eq!(now.iter().map(|c| c.id).collect::<Vec<_>>(), vec![core]);
            let _ = now;
        })
        .join()
        .unwrap();
    }

    #[test]
    fn refuses_a_core_that_does_not_exist() {
        std::thread::spawn(|| {
            // 1023 fits in the CPU set but no test machine has it online.
            let topo = Topology::detect();
            if !topo.is_online(1023) {
                assert_eq!(
                    pin_current_thread(1023),
                    Err(CoreMapError::Pin { core: 1023 })
                );
            }
            assert_eq!(
                pin_current_thread(CPU_SETSIZE),
                Err(CoreMapError::Pin { core: CPU_SETSIZE })
            );
            assert_eq!(
                pin_current_thread(usize::MAX),
                Err(CoreMapError::Pin { core: usize::MAX })
            );
        })
        .join()
        .unwrap();
    }
}
