//! `record --scan`: stopping a running process that memtrace did not start, every thread of
//! it, only for the scan (PTRACE_SEIZE + PTRACE_INTERRUPT, which unlike PTRACE_ATTACH sends no
//! signal the process could see), and letting it go.
use std::{
    collections::HashMap,
    io,
    time::{Duration, Instant},
};

use thiserror::Error;

use super::ThreadState;

#[derive(Debug, Error)]
pub enum StopError {
    #[error("cannot list the threads of process {pid}: {cause}")]
    Threads { pid: u32, cause: io::Error },
    #[error("cannot stop thread {tid} of process {pid} for the scan: {cause}")]
    Seize { pid: u32, tid: u32, cause: io::Error },
}

/// A process whose threads are all stopped; they run on when this is resumed or dropped.
pub struct StoppedProcess {
    pid: u32,
    /// Thread -> a signal that arrived during the stop, to deliver when it is let go.
    seized: HashMap<u32, i32>,
    threads: Vec<ThreadState>,
    since: Instant,
}

impl StoppedProcess {
    /// Seizes and interrupts every thread of `pid`, repeating until no new thread appears
    /// (a thread may start one while the others are being stopped), and reads their registers.
    pub fn stop(pid: u32) -> Result<Self, StopError> {
        let mut stopped = StoppedProcess { pid, seized: HashMap::new(), threads: Vec::new(), since: Instant::now() };
        loop {
            let tids = thread_ids(pid).map_err(|cause| StopError::Threads { pid, cause })?;
            let new: Vec<u32> = tids.into_iter().filter(|tid| !stopped.seized.contains_key(tid)).collect();
            if new.is_empty() {
                break;
            }
            for tid in new {
                match seize_and_interrupt(tid) {
                    Ok(signal) => {
                        stopped.seized.insert(tid, signal);
                        if let Some(state) = ThreadState::of_stopped(tid) {
                            stopped.threads.push(state);
                        }
                    }
                    // The thread ended meanwhile: nothing of it to scan.
                    Err(error) if error.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(cause) => return Err(StopError::Seize { pid, tid, cause }),
                }
            }
        }
        Ok(stopped)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn threads(&self) -> &[ThreadState] {
        &self.threads
    }

    /// Lets every thread go; returns how long the process was stopped.
    pub fn resume(mut self) -> Duration {
        self.detach_all();
        self.since.elapsed()
    }

    fn detach_all(&mut self) {
        for (tid, signal) in self.seized.drain() {
            // SAFETY: detaching a thread this process seized and stopped.
            unsafe { libc::ptrace(libc::PTRACE_DETACH, tid as libc::pid_t, 0, signal as libc::c_long) };
        }
    }
}

impl Drop for StoppedProcess {
    fn drop(&mut self) {
        self.detach_all();
    }
}

fn thread_ids(pid: u32) -> io::Result<Vec<u32>> {
    let mut tids = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Some(tid) = entry?.file_name().to_str().and_then(|name| name.parse().ok()) {
            tids.push(tid);
        }
    }
    Ok(tids)
}

/// Seizes `tid` and waits for its interrupt stop; returns a signal that arrived meanwhile
/// (to be delivered at detach), or 0.
fn seize_and_interrupt(tid: u32) -> io::Result<i32> {
    let tid = tid as libc::pid_t;
    // SAFETY: ptrace requests on a thread id; failures come back as -1 and errno.
    unsafe {
        if libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0) != 0 {
            let error = io::Error::last_os_error();
            libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0);
            return Err(error);
        }
    }
    let mut pending = 0;
    loop {
        let mut status = 0;
        // SAFETY: waiting for the thread we just seized.
        let waited = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
        if waited < 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(error);
        }
        if !libc::WIFSTOPPED(status) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH)); // it ended
        }
        if status >> 16 == libc::PTRACE_EVENT_STOP {
            return Ok(pending);
        }
        // A signal on its way to the thread: keep it for the detach, wait for our stop.
        pending = libc::WSTOPSIG(status);
        // SAFETY: resuming our tracee without the signal; PTRACE_INTERRUPT still stops it.
        unsafe { libc::ptrace(libc::PTRACE_CONT, tid, 0, 0) };
    }
}
