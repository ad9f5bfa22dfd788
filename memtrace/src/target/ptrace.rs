//! ptrace and waitpid, in one place: seizing a process or thread, what `waitpid` reports about
//! a tracee, resuming it, and reading a stopped thread's registers.
//!
//! nix makes the requests whose arguments it can express. Resuming with a signal, detaching
//! with one, and decoding a wait status stay raw calls here: nix's `Signal` has no real-time
//! signals (glibc itself uses SIGRTMIN and SIGRTMIN+1 between threads), and a traced program
//! must receive every signal exactly as it was sent.
use std::io;

use nix::{
    errno::Errno,
    sys::ptrace::{self, Options},
    unistd::Pid,
};

/// A thread or process id, as the kernel's calls take it.
pub type Tid = libc::pid_t;

/// How a process (or thread) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    Killed(i32),
}

impl Ending {
    /// The exit code a shell would report for it.
    pub fn shell_code(self) -> i32 {
        match self {
            Ending::Exited(code) => code,
            Ending::Killed(signal) => signal.saturating_add(128),
        }
    }
}

/// What `waitpid` said about one tracee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// Nothing yet (a non-blocking wait).
    Nothing,
    /// No tracee is left to wait for.
    NoneLeft,
    /// `tid` ended.
    Ended { tid: Tid, ending: Ending },
    /// `tid` is stopped: at a ptrace event (`event`, one of `PTRACE_EVENT_*`) or, with `event`
    /// 0, because `signal` is on its way to it.
    Stopped { tid: Tid, signal: i32, event: i32 },
}

/// Waits for `tid` (or any tracee), without blocking when `nonblocking`; `EINTR` is retried.
pub fn wait(tid: Option<Tid>, nonblocking: bool) -> io::Result<Waited> {
    let flags = libc::__WALL | if nonblocking { libc::WNOHANG } else { 0 };
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a local.
        let waited = unsafe { libc::waitpid(tid.unwrap_or(-1), &mut status, flags) };
        if waited == 0 {
            return Ok(Waited::Nothing);
        }
        if waited > 0 {
            return Ok(decode(waited, status));
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ECHILD) => return Ok(Waited::NoneLeft),
            _ => return Err(error),
        }
    }
}

fn decode(tid: Tid, status: i32) -> Waited {
    if libc::WIFEXITED(status) {
        return Waited::Ended { tid, ending: Ending::Exited(libc::WEXITSTATUS(status)) };
    }
    if libc::WIFSIGNALED(status) {
        return Waited::Ended { tid, ending: Ending::Killed(libc::WTERMSIG(status)) };
    }
    // A stop: the signal, and in the high bits the ptrace event (0 for a signal-delivery stop).
    Waited::Stopped { tid, signal: libc::WSTOPSIG(status), event: status >> 16 }
}

/// Seizes `tid` (no signal is sent) with these ptrace options.
pub fn seize(tid: Tid, options: Options) -> io::Result<()> {
    ptrace::seize(Pid::from_raw(tid), options).map_err(io::Error::from)
}

/// Stops a seized thread (a `PTRACE_EVENT_STOP` follows).
pub fn interrupt(tid: Tid) -> io::Result<()> {
    ptrace::interrupt(Pid::from_raw(tid)).map_err(io::Error::from)
}

/// The message of the event `tid` is stopped at (a new child's or thread's id).
pub fn event_message(tid: Tid) -> Option<Tid> {
    ptrace::getevent(Pid::from_raw(tid)).ok().and_then(|message| Tid::try_from(message).ok())
}

/// Lets a stopped tracee run on, delivering `signal` (0: none).
pub fn resume(tid: Tid, signal: i32) {
    request(libc::PTRACE_CONT, tid, signal);
}

/// Leaves a tracee in its group stop (job control) until SIGCONT, as without a tracer, while
/// still reporting to memtrace.
pub fn listen(tid: Tid) {
    request(libc::PTRACE_LISTEN, tid, 0);
}

/// Stops tracing a stopped tracee, delivering `signal` (0: none).
pub fn detach(tid: Tid, signal: i32) -> io::Result<()> {
    match request(libc::PTRACE_DETACH, tid, signal) {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

fn request(request: libc::c_uint, tid: Tid, signal: i32) -> libc::c_long {
    // SAFETY: a request on our own tracee whose data is a signal number, not a pointer.
    unsafe { libc::ptrace(request, tid, 0, libc::c_long::from(signal)) }
}

/// Whether a ptrace failure means the thread is gone.
pub fn is_gone(error: &io::Error) -> bool {
    error.raw_os_error() == Some(Errno::ESRCH as i32)
}

/// One thread at the moment of the scan (stopped): its general-purpose registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadState {
    pub tid: u32,
    pub stack_pointer: u64,
    /// rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8-r15: the registers valgrind scans.
    pub registers: Vec<u64>,
}

impl ThreadState {
    /// The registers of `tid`, a thread stopped under ptrace by the calling thread.
    pub fn of_stopped(tid: u32) -> Option<Self> {
        let regs = ptrace::getregs(Pid::from_raw(Tid::try_from(tid).ok()?)).ok()?;
        Some(Self::from_regs(tid, &regs))
    }

    /// The state of `tid`, stopped at its exit (`PTRACE_EVENT_EXIT`) by the calling thread. A
    /// thread that ended by its own `exit` system call (returning from its start routine,
    /// `pthread_exit`) keeps its stack pointer but no registers: they are gone before the
    /// process's end, and valgrind does not count them as roots. A thread killed by the
    /// process's exit (`exit_group`, a fatal signal) keeps its last registers, as in valgrind.
    pub fn of_stopped_at_exit(tid: u32) -> Option<Self> {
        let regs = ptrace::getregs(Pid::from_raw(Tid::try_from(tid).ok()?)).ok()?;
        let mut state = Self::from_regs(tid, &regs);
        if regs.orig_rax == libc::SYS_exit as u64 {
            state.registers.clear();
        }
        Some(state)
    }

    /// From ptrace's register set.
    pub fn from_regs(tid: u32, regs: &libc::user_regs_struct) -> Self {
        Self {
            tid,
            stack_pointer: regs.rsp,
            registers: vec![
                regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rbp, regs.rsp, regs.r8, regs.r9,
                regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
            ],
        }
    }
}
