//! The handle of a node process a test or benchmark started: it is killed (SIGKILL)
//! and reaped when the handle is dropped, so a failing test or an aborted run leaves
//! no node behind; [`NodeProcess::terminate`] is the orderly stop (SIGTERM, then
//! SIGKILL once a bound has passed) and says whether the node shut down cleanly.

use std::io;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use super::error::HarnessError;

/// A started node process; SIGKILLed and reaped on drop.
pub struct NodeProcess {
    child: Child,
}

/// How a process ended after [`NodeProcess::terminate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// It exited by itself within the bound.
    Exited(ExitStatus),
    /// It was still running when the bound passed, and was SIGKILLed.
    Killed,
}

impl Stopped {
    /// True for an exit with status 0 within the bound.
    pub fn exited_zero(&self) -> bool {
        matches!(self, Stopped::Exited(s) if s.success())
    }
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stopped::Exited(s) => write!(f, "exited ({s})"),
            Stopped::Killed => f.write_str("did not exit after SIGTERM and was killed"),
        }
    }
}

impl NodeProcess {
    /// Takes ownership of a started child.
    pub fn new(child: Child) -> Self {
        Self { child }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child itself, e.g. to take a piped stderr.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Its exit status if it has exited (reaping it), `None` while it runs.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Waits for it to exit.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait()
    }

    /// SIGKILL: no Leave, no flush (a crash). Does nothing to a reaped process.
    pub fn kill(&mut self) -> io::Result<()> {
        self.child.kill()
    }

    /// Sends SIGTERM, the signal a node answers with an orderly shutdown. Does nothing
    /// once the process has been reaped (its pid may belong to another process then).
    pub fn signal_term(&mut self) -> Result<(), HarnessError> {
        if self
            .try_wait()
            .map_err(|e| process_error(self.id(), e))?
            .is_some()
        {
            return Ok(());
        }
        // SAFETY: kill(2) takes plain integers; the pid is our own child, which
        // try_wait just saw unreaped, so the pid cannot have been reused.
        let r = unsafe { libc::kill(self.id() as libc::pid_t, libc::SIGTERM) };
        if r != 0 {
            return Err(process_error(self.id(), io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Waits until the process exits or `deadline` passes; SIGKILLs it then.
    pub fn wait_until(&mut self, deadline: Instant) -> Result<Stopped, HarnessError> {
        loop {
            if let Some(s) = self.try_wait().map_err(|e| process_error(self.id(), e))? {
                return Ok(Stopped::Exited(s));
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Ok(Stopped::Killed);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then at most `bound` for the process to exit, then SIGKILL.
    pub fn terminate(&mut self, bound: Duration) -> Result<Stopped, HarnessError> {
        self.signal_term()?;
        self.wait_until(Instant::now() + bound)
    }
}

/// Stops every process in `nodes` together: SIGTERM to all, then one shared `bound`
/// for all of them to exit (SIGKILL for the rest). Results are in `nodes` order.
pub fn terminate_all(
    nodes: &mut [&mut NodeProcess],
    bound: Duration,
) -> Vec<Result<Stopped, HarnessError>> {
    let sent: Vec<Result<(), HarnessError>> = nodes.iter_mut().map(|n| n.signal_term()).collect();
    let deadline = Instant::now() + bound;
    nodes
        .iter_mut()
        .zip(sent)
        .map(|(n, s)| s.and_then(|()| n.wait_until(deadline)))
        .collect()
}

/// The `status` of the `plumcore: shutdown {...}` line a node prints on stderr once
/// an orderly stop is over (`completed`, or `timeout` when a task or thread did not
/// stop in time); `None` when `stderr` holds no such line (the node was killed, or
/// failed before it ran).
pub fn shutdown_status(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("plumcore: shutdown "))
        .filter_map(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .find_map(|v| v["status"].as_str().map(str::to_string))
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn process_error(pid: u32, source: io::Error) -> HarnessError {
    HarnessError::Process {
        what: format!("node process {pid}"),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn terminate_reports_the_exit_of_a_process_that_stops_on_sigterm() {
        let mut p = NodeProcess::new(Command::new("sleep").arg("30").spawn().unwrap());
        let t = Instant::now();
        let s = p.terminate(Duration::from_secs(5)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        // sleep dies of the signal: not an exit with status 0.
        assert!(matches!(s, Stopped::Exited(st) if !st.success()), "{s}");
        assert!(!s.exited_zero());
        // A second terminate of a reaped process is a no-op, not a stray signal.
        assert!(p.signal_term().is_ok());
    }

    #[test]
    fn terminate_kills_a_process_that_ignores_sigterm_after_the_bound() {
        let child = Command::new("sh")
            .args(["-c", "trap '' TERM; exec sleep 30"])
            .spawn()
            .unwrap();
        let mut p = NodeProcess::new(child);
        // Let the shell install its trap before the signal.
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        assert_eq!(
            p.terminate(Duration::from_millis(300)).unwrap(),
            Stopped::Killed
        );
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn drop_kills_the_process() {
        let p = NodeProcess::new(Command::new("sleep").arg("30").spawn().unwrap());
        let pid = p.id();
        drop(p);
        // Reaped: the pid is gone (or, rarely, reused by a process that is not sleep).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!stat.starts_with("sleep"), "still running: {stat}");
    }

    #[test]
    fn shutdown_status_reads_the_last_shutdown_line() {
        let log = "WARN something\n\
                   plumcore: shutdown {\"status\":\"timeout\",\"remaining_tasks\":2}\n";
        assert_eq!(shutdown_status(log).as_deref(), Some("timeout"));
        assert_eq!(shutdown_status("WARN only\n"), None);
        assert_eq!(shutdown_status("plumcore: shutdown {not json\n"), None);
    }

    #[test]
    fn exit_zero_is_told_apart() {
        let mut p = NodeProcess::new(Command::new("true").spawn().unwrap());
        std::thread::sleep(Duration::from_millis(100));
        assert!(p.terminate(Duration::from_secs(2)).unwrap().exited_zero());
    }
}
