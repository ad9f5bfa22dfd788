//! Starting a command for `memtrace run`: fork, attach, then exec, so that no allocation is
//! missed; following its children the same way; and holding each process at exit so that its
//! mappings can be read before they vanish.
//!
//! A dedicated thread forks the child, which waits on a pipe before calling `execve`. The
//! thread seizes it with ptrace and reports its pid; once the probes are attached the caller
//! releases it. From then on the thread reports, and holds until the caller resumes it, every
//! moment that needs probes or a snapshot: a new child (`PTRACE_O_TRACEFORK`/`VFORK`, held
//! before its first instruction), an exec (a new image may need other probes), an exit (held
//! before the address space is torn down). Signals pass through unchanged and job-control
//! stops are kept (`PTRACE_LISTEN`). Threads are traced only so that their registers can be
//! read when they end (roots of the reachability scan); probes cover a whole process.
//! When the first process exits the thread ends, which detaches any children still running;
//! if memtrace dies, the kernel detaches them all and they run on.
use std::{
    collections::{HashMap, HashSet},
    ffi::{CString, OsString},
    io,
    os::unix::ffi::{OsStrExt, OsStringExt},
    path::{Path, PathBuf},
    sync::mpsc as std_mpsc,
    thread,
};

use nix::sys::ptrace::Options;
use thiserror::Error;
use tokio::sync::mpsc;

pub use crate::target::ptrace::Ending;
use crate::target::ptrace::{self, ThreadState, Tid, Waited};

/// How long the exit of a process waits for its other threads' exit stops (they were killed
/// by the same exit_group and stop within microseconds; the bound only guards against a
/// thread that never does, such as one calling exec).
const THREADS_EXIT_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

#[derive(Debug, Error)]
pub enum LaunchError {
    #[error("command not found: {0}")]
    NotFound(String),
    #[error("{0}: permission denied (not an executable file)")]
    NotExecutable(String),
    // The causes are in the messages, not sources: printed as a chain they would show twice.
    #[error("cannot start {program}: {cause}")]
    Exec { program: String, cause: io::Error },
    #[error("cannot start {program}: {step} failed: {cause}")]
    System { program: String, step: &'static str, cause: io::Error },
}

/// What the traced processes did, in order. Every event whose doc says "held" keeps that
/// process stopped until [`Launched::resume`].
#[derive(Debug)]
pub enum TargetEvent {
    /// `execve` of the command succeeded.
    Started,
    /// `execve` of the command failed; the child exits.
    ExecFailed(io::Error),
    /// A traced process forked `pid`; held before its first instruction.
    Spawned { pid: u32, parent: Option<u32> },
    /// `pid` replaced its image with exec; held before the new image runs.
    Exec { pid: u32 },
    /// `pid` is on its way out, its memory still mapped; held. `threads` holds the registers
    /// of each of its threads at its end (the others have ended already; their stacks stay
    /// mapped while this one is held), for the reachability scan.
    Exiting { pid: u32, threads: Vec<ThreadState> },
    /// `pid` is gone. For the command itself, this is the last event.
    Ended { pid: u32, ending: Ending },
    /// Thread `tid` of process `pid` is about to take a SIGSTOP; held. [`Launched::resume`]
    /// delivers the signal, [`Launched::suppress`] discards it (memtrace sent it itself, see
    /// the kernel's `loader.rs`).
    Stopping { pid: u32, tid: u32 },
}

enum Control {
    Release,
    Resume,
    Suppress,
}

/// A command started and held before `execve`.
pub struct Launched {
    pub pid: u32,
    control: std_mpsc::Sender<Control>,
    events: mpsc::UnboundedReceiver<TargetEvent>,
}

impl Launched {
    /// Lets the child call `execve`.
    pub fn release(&self) {
        let _ = self.control.send(Control::Release);
    }

    /// Lets the process held by the last event go on.
    pub fn resume(&self) {
        let _ = self.control.send(Control::Resume);
    }

    /// Lets the thread held by the last `Stopping` event go on without its signal.
    pub fn suppress(&self) {
        let _ = self.control.send(Control::Suppress);
    }

    /// The next thing the target did; `None` once it is gone.
    pub async fn next_event(&mut self) -> Option<TargetEvent> {
        self.events.recv().await
    }
}

/// Finds `program` as a shell would: a path as is, else the first match in `PATH`. As in
/// bash, an empty name is not found, and a directory in `PATH` with the name is passed over
/// (127), while a file there that cannot be executed is a permission error (126).
pub fn resolve_program(program: &Path) -> Result<PathBuf, LaunchError> {
    if program.as_os_str().is_empty() {
        return Err(LaunchError::NotFound("''".to_owned()));
    }
    let name = program.display().to_string();
    let searched = !program.as_os_str().as_bytes().contains(&b'/');
    let candidates: Vec<PathBuf> = if searched {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        std::env::split_paths(&path).map(|dir| dir.join(program)).collect()
    } else {
        vec![program.to_path_buf()]
    };
    let mut found_unexecutable = false;
    for candidate in candidates {
        let Ok(metadata) = candidate.metadata() else { continue };
        if metadata.is_file() && is_executable(&candidate) {
            return Ok(candidate);
        }
        if searched && metadata.is_dir() {
            continue;
        }
        found_unexecutable = true;
    }
    Err(if found_unexecutable { LaunchError::NotExecutable(name) } else { LaunchError::NotFound(name) })
}

fn is_executable(path: &Path) -> bool {
    let Ok(path) = CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::access(path.as_ptr(), libc::X_OK) == 0 }
}

/// Forks `program` held before `execve`, traced for exec and exit, and with `follow_forks` its
/// children too. `argv[0]` is `args[0]`.
pub fn launch(program: &Path, args: &[OsString], follow_forks: bool) -> Result<Launched, LaunchError> {
    let name = program.display().to_string();
    let system = |step: &'static str| {
        let program = name.clone();
        move |cause: io::Error| LaunchError::System { program, step, cause }
    };
    let invalid = || io::Error::new(io::ErrorKind::InvalidInput, "an argument contains a NUL byte");
    let path = CString::new(program.as_os_str().as_bytes()).map_err(|_| invalid()).map_err(system("argv"))?;
    let argv = args
        .iter()
        .map(|arg| CString::new(arg.clone().into_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| invalid())
        .map_err(system("argv"))?;
    let envp = std::env::vars_os()
        .map(|(key, value)| {
            let mut entry = key.into_vec();
            entry.push(b'=');
            entry.extend(value.into_vec());
            CString::new(entry)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| invalid())
        .map_err(system("environment"))?;

    let (pid_tx, pid_rx) = std_mpsc::channel::<Result<u32, LaunchError>>();
    let (control_tx, control_rx) = std_mpsc::channel();
    let (event_tx, event_rx) = mpsc::unbounded_channel();
    let child = Child { path, argv, envp, name: name.clone(), follow_forks };
    thread::Builder::new()
        .name("memtrace-tracer".into())
        .spawn(move || child.supervise(pid_tx, control_rx, event_tx))
        .map_err(system("starting the tracer thread"))?;
    let pid =
        pid_rx.recv().map_err(|_| io::Error::other("the tracer thread ended early")).map_err(system("fork"))??;
    Ok(Launched { pid, control: control_tx, events: event_rx })
}

struct Child {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    name: String,
    follow_forks: bool,
}

impl Child {
    /// The tracer thread: ptrace requests must all come from the thread that seized the child.
    fn supervise(
        self,
        pid_tx: std_mpsc::Sender<Result<u32, LaunchError>>,
        control: std_mpsc::Receiver<Control>,
        events: mpsc::UnboundedSender<TargetEvent>,
    ) {
        let (pid, gate, exec_errors) = match self.fork_held() {
            Ok(started) => started,
            Err(error) => {
                let _ = pid_tx.send(Err(error));
                return;
            }
        };
        let _ = pid_tx.send(Ok(pid as u32));
        // Anything but Release (memtrace gave up) closes the gate unopened: the child exits.
        let released = matches!(control.recv(), Ok(Control::Release));
        if released {
            // SAFETY: writing one byte from a valid buffer to our pipe end.
            unsafe { libc::write(gate, [1u8].as_ptr().cast(), 1) };
        }
        close(gate);
        if released {
            let _ = events.send(match read_exec_error(exec_errors) {
                None => TargetEvent::Started,
                Some(error) => TargetEvent::ExecFailed(error),
            });
        }
        close(exec_errors);
        follow(pid, &control, &events);
    }

    /// Forks; the child blocks on the gate pipe, then execs. Returns (pid, gate write end,
    /// exec-error read end).
    fn fork_held(&self) -> Result<(Tid, i32, i32), LaunchError> {
        let system = |step: &'static str| {
            let program = self.name.clone();
            move |cause: io::Error| LaunchError::System { program, step, cause }
        };
        let (gate_read, gate_write) = pipe().map_err(system("pipe"))?;
        let (error_read, error_write) = pipe().map_err(system("pipe"))?;
        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|arg| arg.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = self.envp.iter().map(|var| var.as_ptr()).collect();
        envp.push(std::ptr::null());

        // SAFETY: after fork the child only makes async-signal-safe calls (read, signal,
        // sigprocmask, execve, write, _exit) on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(system("fork")(io::Error::last_os_error()));
        }
        if pid == 0 {
            unsafe {
                // The child holds copies of every descriptor memtrace has (the probes' too) until
                // it execs: without the gate's write end, a memtrace that dies before releasing
                // it leaves the read below at end of file, and the child exits at once. The
                // tracer thread's death kills it outright while it waits.
                libc::close(gate_write);
                libc::close(error_read);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() == 1 {
                    libc::_exit(127);
                }
                let mut byte = 0u8;
                let opened = loop {
                    let read = libc::read(gate_read, (&raw mut byte).cast(), 1);
                    if read >= 0 || *libc::__errno_location() != libc::EINTR {
                        break read == 1;
                    }
                };
                if !opened {
                    libc::_exit(127);
                }
                // The command itself must outlive memtrace.
                libc::prctl(libc::PR_SET_PDEATHSIG, 0);
                // Undo what memtrace's runtime changed: Rust ignores SIGPIPE.
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                libc::execve(self.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                let errno = *libc::__errno_location();
                libc::write(error_write, (&raw const errno).cast(), size_of::<i32>());
                libc::_exit(127);
            }
        }
        close(gate_read);
        close(error_write);
        // Threads are traced (TRACECLONE) only to read their registers at their exit stop.
        let mut options = Options::PTRACE_O_TRACEEXIT | Options::PTRACE_O_TRACEEXEC | Options::PTRACE_O_TRACECLONE;
        if self.follow_forks {
            options |= Options::PTRACE_O_TRACEFORK | Options::PTRACE_O_TRACEVFORK;
        }
        if let Err(error) = ptrace::seize(pid, options) {
            close(gate_write);
            // The child exits as its gate closed: reap it.
            let _ = ptrace::wait(Some(pid), false);
            return Err(system("ptrace(PTRACE_SEIZE)")(error));
        }
        Ok((pid, gate_write, error_read))
    }
}

/// Follows the traced processes until the command itself is gone, passing signals through
/// untouched and holding each process at the moments the caller must act on.
fn follow(command: Tid, control: &std_mpsc::Receiver<Control>, events: &mpsc::UnboundedSender<TargetEvent>) {
    let mut known: HashSet<Tid> = HashSet::from([command]);
    let mut parents: HashMap<Tid, Tid> = HashMap::new();
    let mut threads = Threads::default();
    // Reports an event and waits until the caller has acted on it (or is gone).
    let hold = |event: TargetEvent| {
        let _ = events.send(event);
        control.recv().ok()
    };
    loop {
        // A process whose exit waits for its threads' exit stops: poll, so that it is let go
        // when they are all gone or the wait has lasted too long.
        if let Some(leader) = threads.exiting_ready() {
            hold(TargetEvent::Exiting { pid: leader as u32, threads: threads.take_states(leader) });
            ptrace::resume(leader, 0);
            continue;
        }
        let (pid, signal, event) = match ptrace::wait(None, threads.any_exiting()) {
            Ok(Waited::Nothing) => {
                std::thread::sleep(std::time::Duration::from_micros(200));
                continue;
            }
            Ok(Waited::NoneLeft) => return,
            Err(error) => {
                log::warn!("lost track of the traced processes: {error}");
                return;
            }
            Ok(Waited::Ended { tid, ending }) => {
                known.remove(&tid);
                if threads.ended(tid) {
                    continue; // a thread, not a process
                }
                let _ = events.send(TargetEvent::Ended { pid: tid as u32, ending });
                if tid == command {
                    return; // ending this thread detaches any children still running
                }
                continue;
            }
            Ok(Waited::Stopped { tid, signal, event }) => (tid, signal, event),
        };
        if known.insert(pid) {
            if threads.is_new_thread(pid) {
                // A thread attached at its creation: it runs on untouched.
                ptrace::resume(pid, if event == 0 { signal } else { 0 });
                continue;
            }
            // A child attached at its fork, stopped before its first instruction.
            let parent = parents.remove(&pid).or_else(|| parent_of(pid));
            hold(TargetEvent::Spawned { pid: pid as u32, parent: parent.map(|parent| parent as u32) });
            ptrace::resume(pid, if event == 0 { signal } else { 0 });
            continue;
        }
        match event {
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK => {
                if let Some(child) = ptrace::event_message(pid) {
                    parents.insert(child, pid);
                }
                ptrace::resume(pid, 0);
            }
            libc::PTRACE_EVENT_CLONE => {
                if let Some(child) = ptrace::event_message(pid) {
                    threads.cloned(pid, child);
                }
                ptrace::resume(pid, 0);
            }
            libc::PTRACE_EVENT_EXIT if threads.is_thread(pid) => {
                threads.exit_stop(pid);
                ptrace::resume(pid, 0);
            }
            // Held until its threads have stopped at their exit too (their registers are
            // roots of the scan); the loop above reports it then.
            libc::PTRACE_EVENT_EXIT => threads.leader_exiting(pid),
            libc::PTRACE_EVENT_EXEC => {
                hold(TargetEvent::Exec { pid: pid as u32 });
                ptrace::resume(pid, 0);
            }
            // A SIGSTOP on its way: memtrace's own (the loader program's) is not delivered.
            0 if signal == libc::SIGSTOP => {
                let process = threads.group.get(&pid).copied().unwrap_or(pid);
                let held = hold(TargetEvent::Stopping { pid: process as u32, tid: pid as u32 });
                ptrace::resume(pid, if matches!(held, Some(Control::Suppress)) { 0 } else { signal });
            }
            // A job-control stop: stay stopped until SIGCONT, as without a tracer.
            libc::PTRACE_EVENT_STOP if signal != libc::SIGTRAP => ptrace::listen(pid),
            libc::PTRACE_EVENT_STOP => ptrace::resume(pid, 0),
            // A signal on its way to the process: deliver it unchanged.
            _ => ptrace::resume(pid, signal),
        }
    }
}

/// The threads of the traced processes (other than each process's main thread), and the
/// registers of each thread at its end.
#[derive(Default)]
struct Threads {
    /// Live thread id -> its process.
    group: HashMap<Tid, Tid>,
    /// Process -> each thread's registers at its exit stop.
    states: HashMap<Tid, Vec<ThreadState>>,
    /// Processes whose main thread is at its exit stop, since when.
    exiting: HashMap<Tid, std::time::Instant>,
}

impl Threads {
    /// `parent` (a thread of some process) created thread `child`.
    fn cloned(&mut self, parent: Tid, child: Tid) {
        let process = self.group.get(&parent).copied().unwrap_or(parent);
        if thread_group_of(child).is_none_or(|group| group == process) {
            self.group.insert(child, process);
        }
    }

    /// A tracee never seen before: a thread when its process is another (its first stop may
    /// come before its creator's clone event).
    fn is_new_thread(&mut self, tid: Tid) -> bool {
        if self.group.contains_key(&tid) {
            return true;
        }
        match thread_group_of(tid) {
            Some(process) if process != tid => {
                self.group.insert(tid, process);
                true
            }
            _ => false,
        }
    }

    fn is_thread(&self, tid: Tid) -> bool {
        self.group.contains_key(&tid)
    }

    fn exit_stop(&mut self, tid: Tid) {
        if let (Some(&process), Some(state)) = (self.group.get(&tid), ThreadState::of_stopped_at_exit(tid as u32)) {
            self.states.entry(process).or_default().push(state);
        }
    }

    /// A thread (not a process) ended; true when `tid` was one.
    fn ended(&mut self, tid: Tid) -> bool {
        self.group.remove(&tid).is_some()
    }

    fn leader_exiting(&mut self, leader: Tid) {
        if let Some(state) = ThreadState::of_stopped(leader as u32) {
            self.states.entry(leader).or_default().push(state);
        }
        self.exiting.insert(leader, std::time::Instant::now());
    }

    fn any_exiting(&self) -> bool {
        !self.exiting.is_empty()
    }

    /// A process at its exit whose threads are all gone (or that waited long enough).
    fn exiting_ready(&mut self) -> Option<Tid> {
        let ready = self.exiting.iter().find_map(|(&leader, since)| {
            let alone = !self.group.values().any(|&process| process == leader);
            (alone || since.elapsed() > THREADS_EXIT_WAIT).then_some(leader)
        })?;
        self.exiting.remove(&ready);
        Some(ready)
    }

    fn take_states(&mut self, leader: Tid) -> Vec<ThreadState> {
        self.states.remove(&leader).unwrap_or_default()
    }
}

/// The process a thread belongs to.
fn thread_group_of(tid: Tid) -> Option<Tid> {
    procfs::process::Process::new(tid).and_then(|thread| thread.status()).ok().map(|status| status.tgid)
}

/// The parent of a process.
fn parent_of(pid: Tid) -> Option<Tid> {
    procfs::process::Process::new(pid).and_then(|process| process.stat()).ok().map(|stat| stat.ppid)
}

fn read_exec_error(fd: i32) -> Option<io::Error> {
    let mut errno = 0i32;
    loop {
        // SAFETY: reading into a local i32 from our pipe end.
        let read = unsafe { libc::read(fd, (&raw mut errno).cast(), size_of::<i32>()) };
        if read < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return (read == size_of::<i32>() as isize).then(|| io::Error::from_raw_os_error(errno));
    }
}

fn pipe() -> io::Result<(i32, i32)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((fds[0], fds[1]))
}

fn close(fd: i32) {
    // SAFETY: closing an fd this module opened and owns.
    unsafe { libc::close(fd) };
}

/// Passes a signal memtrace received on to the command it started.
pub fn forward(pid: u32, signal: i32) {
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(pid as Tid, signal) };
}

/// Whether memtrace runs in the foreground process group of its terminal (then Ctrl-C reaches
/// the command directly).
pub fn foreground_of_terminal() -> bool {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return false;
    }
    // SAFETY: plain queries on fd 0 and this process.
    unsafe { libc::tcgetpgrp(0) == libc::getpgrp() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_resolve_like_a_shell() {
        assert!(resolve_program(Path::new("sh")).is_ok());
        assert!(matches!(resolve_program(Path::new("no-such-command-xyz")), Err(LaunchError::NotFound(_))));
        assert!(matches!(resolve_program(Path::new("")), Err(LaunchError::NotFound(name)) if name == "''"));
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data.txt");
        std::fs::write(&data, "text").unwrap();
        assert!(matches!(resolve_program(&data), Err(LaunchError::NotExecutable(_))));
    }
}
