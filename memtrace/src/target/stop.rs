//! `record --scan`: stopping a running process that memtrace did not start, every thread of
//! it, only for the scan (PTRACE_SEIZE + PTRACE_INTERRUPT, which unlike PTRACE_ATTACH sends no
//! signal the process could see), and letting it go.
use std::{
    collections::HashMap,
    io,
    time::{Duration, Instant},
};

use thiserror::Error;

use nix::sys::ptrace::Options;

use crate::target::ptrace::{self, ThreadState, Tid, Waited};

#[derive(Debug, Error)]
pub enum StopError {
    #[error("cannot list the threads of process {pid}: {source}")]
    Threads { pid: u32, source: io::Error },
    #[error("cannot stop thread {tid} of process {pid} for the scan: {source}")]
    Seize { pid: u32, tid: u32, source: io::Error },
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
            let tids = thread_ids(pid).map_err(|source| StopError::Threads { pid, source })?;
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
                    Err(error) if ptrace::is_gone(&error) => {}
                    Err(source) => return Err(StopError::Seize { pid, tid, source }),
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
            // A thread that ended meanwhile has nothing to let go.
            let _ = ptrace::detach(tid as Tid, signal);
        }
    }
}

impl Drop for StoppedProcess {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// The threads of `pid`, from `/proc/PID/task`.
fn thread_ids(pid: u32) -> io::Result<Vec<u32>> {
    let process = procfs::process::Process::new(pid as i32).map_err(io::Error::other)?;
    let tasks = process.tasks().map_err(io::Error::other)?;
    Ok(tasks.filter_map(|task| task.ok().and_then(|task| u32::try_from(task.tid).ok())).collect())
}

/// Seizes `tid` and waits for its interrupt stop; returns a signal that arrived meanwhile
/// (to be delivered at detach), or 0.
fn seize_and_interrupt(tid: u32) -> io::Result<i32> {
    let tid = tid as Tid;
    ptrace::seize(tid, Options::empty())?;
    if let Err(error) = ptrace::interrupt(tid) {
        let _ = ptrace::detach(tid, 0);
        return Err(error);
    }
    let mut pending = 0;
    loop {
        match ptrace::wait(Some(tid), false)? {
            Waited::Stopped { event: libc::PTRACE_EVENT_STOP, .. } => return Ok(pending),
            Waited::Stopped { signal, .. } => {
                // A signal on its way to the thread: keep it for the detach, wait for our stop
                // (PTRACE_INTERRUPT still stops it).
                pending = signal;
                ptrace::resume(tid, 0);
            }
            // It ended.
            Waited::Ended { .. } | Waited::NoneLeft | Waited::Nothing => {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
        }
    }
}
