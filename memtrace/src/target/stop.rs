//! `record --scan`: stopping a running process that memtrace did not start, every thread of
//! it, only for the scan (PTRACE_SEIZE + PTRACE_INTERRUPT, which unlike PTRACE_ATTACH sends no
//! signal the process could see), and letting it go.
//!
//! The stopping is done by the stopper, a process memtrace forks before it loads anything into
//! the kernel, so that it holds no descriptor of the probes. Whatever happens to memtrace, the
//! target resumes at once: its requests pipe is memtrace's lowest descriptor but the standard
//! three, so when memtrace dies it closes before the probes' (whose tear-down takes seconds),
//! and the stopper, at end of file, lets every thread go and exits. Every stop is bounded: a
//! thread that does not stop in time (uninterruptible sleep) gives up the scan, and every
//! thread is let go. A signal that arrives while a thread is being stopped is delivered then,
//! never held back.
use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io::{self, Read, Write},
    os::fd::{FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use nix::sys::ptrace::Options;
use thiserror::Error;

use crate::target::ptrace::{self, ThreadState, Tid, Waited};

/// How long stopping every thread of a process may take before the scan is given up.
const STOP_DEADLINE: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum StopError {
    #[error("the stopper process is gone ({0})")]
    Stopper(io::Error),
    #[error("{0}")]
    Refused(String),
}

/// The helper process that stops and resumes traced processes. Dropping it lets every process
/// it holds go.
pub struct Stopper {
    requests: File,
    replies: File,
    /// The processes stopped now, since when.
    stopped: HashMap<u32, Instant>,
}

const STOP: u8 = 1;
const RESUME: u8 = 2;

impl Stopper {
    /// Forks the stopper. Call it while memtrace has a single thread (before the async runtime
    /// starts), so that the child may do anything, and before the probes are loaded.
    pub fn spawn() -> io::Result<Stopper> {
        let (request_read, request_write) = pipe()?;
        let (reply_read, reply_write) = pipe()?;
        // SAFETY: memtrace has one thread here (see above), so the child may run Rust code.
        let child = unsafe { libc::fork() };
        if child < 0 {
            return Err(io::Error::last_os_error());
        }
        if child == 0 {
            drop((request_write, reply_read));
            // Nothing to read or write on the console: a pipeline reading memtrace's output
            // must not wait for the stopper.
            if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
                use std::os::fd::AsRawFd;
                // SAFETY: duplicating a descriptor we own onto standard input and output.
                unsafe {
                    libc::dup2(null.as_raw_fd(), 0);
                    libc::dup2(null.as_raw_fd(), 1);
                }
            }
            serve(File::from(request_read), File::from(reply_write));
        }
        Ok(Stopper { requests: File::from(request_write), replies: File::from(reply_read), stopped: HashMap::new() })
    }

    /// Stops every thread of `pid`; their registers. It stays stopped until [`Stopper::resume`].
    pub fn stop(&mut self, pid: u32) -> Result<Vec<ThreadState>, StopError> {
        let since = Instant::now();
        self.send(STOP, pid)?;
        let threads = self.read_stop_reply()?;
        self.stopped.insert(pid, since);
        Ok(threads)
    }

    /// Lets every thread of `pid` go; how long it was stopped.
    pub fn resume(&mut self, pid: u32) -> Duration {
        let since = self.stopped.remove(&pid);
        // Waiting for the reply keeps the stop's duration honest; a stopper gone has let go.
        if self.send(RESUME, pid).is_ok() {
            let _ = read_u32(&mut self.replies);
        }
        since.map_or(Duration::ZERO, |since| since.elapsed())
    }

    fn send(&mut self, request: u8, pid: u32) -> Result<(), StopError> {
        let mut message = [0u8; 5];
        message[0] = request;
        message[1..].copy_from_slice(&pid.to_le_bytes());
        self.requests.write_all(&message).map_err(StopError::Stopper)
    }

    fn read_stop_reply(&mut self) -> Result<Vec<ThreadState>, StopError> {
        let status = read_u32(&mut self.replies).map_err(StopError::Stopper)?;
        let count = read_u32(&mut self.replies).map_err(StopError::Stopper)?;
        if status != 0 {
            // `count` bytes of message.
            let mut text = vec![0u8; count.min(4096) as usize];
            self.replies.read_exact(&mut text).map_err(StopError::Stopper)?;
            return Err(StopError::Refused(String::from_utf8_lossy(&text).into_owned()));
        }
        (0..count).map(|_| read_thread(&mut self.replies).map_err(StopError::Stopper)).collect()
    }
}

/// The stopper's life: one request at a time until memtrace closes the pipe (or dies).
fn serve(mut requests: File, mut replies: File) -> ! {
    // SAFETY: plain process attribute calls in the stopper itself.
    unsafe {
        // Memtrace's death kills the stopper too (after its descriptors close, see above).
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // Ctrl-C and SIGTERM are memtrace's to handle: the stopper lets go when it is told or
        // when memtrace is gone, not before.
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let mut held: HashMap<u32, Vec<Tid>> = HashMap::new();
    let mut message = [0u8; 5];
    while requests.read_exact(&mut message).is_ok() {
        let pid = u32::from_le_bytes([message[1], message[2], message[3], message[4]]);
        let written = match message[0] {
            STOP => {
                let reply = stop_all(pid, held.entry(pid).or_default());
                write_stop_reply(&mut replies, reply)
            }
            _ => {
                detach_all(held.entry(pid).or_default());
                replies.write_all(&0u32.to_le_bytes())
            }
        };
        if written.is_err() {
            break;
        }
    }
    for tids in held.values_mut() {
        detach_all(tids);
    }
    // SAFETY: leaving the forked child without running memtrace's exit handlers.
    unsafe { libc::_exit(0) }
}

fn write_stop_reply(replies: &mut File, reply: Result<Vec<ThreadState>, String>) -> io::Result<()> {
    let mut bytes = Vec::new();
    match reply {
        Ok(threads) => {
            bytes.extend(0u32.to_le_bytes());
            bytes.extend(u32::try_from(threads.len()).unwrap_or(u32::MAX).to_le_bytes());
            for thread in &threads {
                bytes.extend(thread.tid.to_le_bytes());
                bytes.extend(u32::try_from(thread.registers.len()).unwrap_or(0).to_le_bytes());
                for register in &thread.registers {
                    bytes.extend(register.to_le_bytes());
                }
                bytes.extend(thread.stack_pointer.to_le_bytes());
            }
        }
        Err(message) => {
            let text = message.as_bytes();
            let text = &text[..text.len().min(4096)];
            bytes.extend(1u32.to_le_bytes());
            bytes.extend(u32::try_from(text.len()).unwrap_or(0).to_le_bytes());
            bytes.extend(text);
        }
    }
    replies.write_all(&bytes)
}

fn read_thread(replies: &mut File) -> io::Result<ThreadState> {
    let tid = read_u32(replies)?;
    let count = read_u32(replies)?.min(64);
    let registers = (0..count).map(|_| read_u64(replies)).collect::<io::Result<Vec<u64>>>()?;
    let stack_pointer = read_u64(replies)?;
    Ok(ThreadState { tid, stack_pointer, registers })
}

fn read_u32(from: &mut File) -> io::Result<u32> {
    let mut bytes = [0u8; 4];
    from.read_exact(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

fn read_u64(from: &mut File) -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    from.read_exact(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

/// Seizes and interrupts every thread of `pid`, repeating until no new thread appears (a
/// thread may start one while the others are being stopped), and reads their registers. On
/// any failure every thread stopped so far is let go.
fn stop_all(pid: u32, held: &mut Vec<Tid>) -> Result<Vec<ThreadState>, String> {
    let deadline = Instant::now() + STOP_DEADLINE;
    let mut seen: HashSet<u32> = HashSet::new();
    let mut threads = Vec::new();
    let result = loop {
        let tids = match thread_ids(pid) {
            Ok(tids) => tids,
            Err(error) => break Err(format!("cannot list the threads of process {pid}: {error}")),
        };
        let new: Vec<u32> = tids.into_iter().filter(|tid| seen.insert(*tid)).collect();
        if new.is_empty() {
            break Ok(());
        }
        let mut failed = None;
        for tid in new {
            match seize_and_interrupt(tid as Tid, deadline) {
                Ok(()) => {
                    held.push(tid as Tid);
                    threads.extend(ThreadState::of_stopped(tid));
                }
                // The thread ended meanwhile: nothing of it to scan.
                Err(error) if ptrace::is_gone(&error) => {}
                Err(error) => {
                    failed = Some(format!("cannot stop thread {tid} of process {pid} for the scan: {error}"));
                    break;
                }
            }
        }
        if let Some(failed) = failed {
            break Err(failed);
        }
    };
    match result {
        Ok(()) => Ok(threads),
        Err(message) => {
            detach_all(held);
            Err(message)
        }
    }
}

fn detach_all(held: &mut Vec<Tid>) {
    for tid in held.drain(..) {
        // A thread that ended meanwhile has nothing to let go.
        let _ = ptrace::detach(tid, 0);
    }
}

/// The threads of `pid`, from `/proc/PID/task`.
fn thread_ids(pid: u32) -> io::Result<Vec<u32>> {
    let process = procfs::process::Process::new(pid as i32).map_err(io::Error::other)?;
    let tasks = process.tasks().map_err(io::Error::other)?;
    Ok(tasks.filter_map(|task| task.ok().and_then(|task| u32::try_from(task.tid).ok())).collect())
}

/// Seizes `tid` and waits, until `deadline`, for its interrupt stop. A signal on its way to
/// the thread meanwhile is delivered at once (the interrupt still stops it afterwards).
fn seize_and_interrupt(tid: Tid, deadline: Instant) -> io::Result<()> {
    ptrace::seize(tid, Options::empty())?;
    let stopped = ptrace::interrupt(tid).and_then(|()| wait_for_interrupt(tid, deadline));
    if stopped.is_err() {
        let _ = ptrace::detach(tid, 0);
    }
    stopped
}

fn wait_for_interrupt(tid: Tid, deadline: Instant) -> io::Result<()> {
    loop {
        match ptrace::wait(Some(tid), true)? {
            // The interrupt's stop, or a group stop (job control) the thread was sent into.
            Waited::Stopped { event: libc::PTRACE_EVENT_STOP, .. } => return Ok(()),
            Waited::Stopped { signal, .. } => ptrace::resume(tid, signal),
            Waited::Ended { .. } | Waited::NoneLeft => return Err(io::Error::from_raw_os_error(libc::ESRCH)),
            Waited::Nothing if Instant::now() >= deadline => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("it did not stop within {} s (uninterruptible sleep?)", STOP_DEADLINE.as_secs()),
                ));
            }
            Waited::Nothing => std::thread::sleep(Duration::from_micros(100)),
        }
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two new descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned these descriptors to us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
