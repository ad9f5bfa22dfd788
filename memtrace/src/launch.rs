//! Starting a command for `memtrace run`: fork, attach, then exec, so that no allocation is
//! missed; and holding it at exit so that its mappings can be read before they vanish.
//!
//! A dedicated thread forks the child, which waits on a pipe before calling `execve`. The
//! thread seizes it with ptrace (`PTRACE_O_TRACEEXIT` only: no stop at exec, signals passed
//! through unchanged, job-control stops kept with `PTRACE_LISTEN`) and reports its pid. Once
//! the probes are attached the caller releases it. At exit the kernel stops it before its
//! address space is torn down; the caller snapshots it and lets it go. If memtrace dies, the
//! kernel detaches ptrace and the child runs on.
use std::{
    ffi::{CString, OsString},
    io,
    os::unix::ffi::{OsStrExt, OsStringExt},
    path::{Path, PathBuf},
    sync::mpsc as std_mpsc,
    thread,
};

use thiserror::Error;
use tokio::sync::mpsc;

#[derive(Debug, Error)]
pub enum LaunchError {
    #[error("command not found: {0}")]
    NotFound(String),
    #[error("{0}: permission denied (not an executable file)")]
    NotExecutable(String),
    #[error("cannot start {program}: {source}")]
    Exec { program: String, source: io::Error },
    #[error("cannot start {program}: {step} failed: {source}")]
    System { program: String, step: &'static str, source: io::Error },
}

/// How the target ended.
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
            Ending::Killed(signal) => 128 + signal,
        }
    }
}

/// What the target did, in order.
#[derive(Debug)]
pub enum TargetEvent {
    /// `execve` succeeded.
    Started,
    /// `execve` failed; the child exits.
    ExecFailed(io::Error),
    /// The target is stopped on its way out, its memory still mapped. Call
    /// [`Launched::resume`] to let it finish.
    Exiting,
    /// The target is gone.
    Ended(Ending),
}

enum Control {
    Release,
    Resume,
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

    /// Lets a target stopped at exit finish exiting.
    pub fn resume(&self) {
        let _ = self.control.send(Control::Resume);
    }

    /// The next thing the target did; `None` once it is gone.
    pub async fn next_event(&mut self) -> Option<TargetEvent> {
        self.events.recv().await
    }
}

/// Finds `program` as a shell would: a path as is, else the first match in `PATH`.
pub fn resolve_program(program: &Path) -> Result<PathBuf, LaunchError> {
    let name = program.display().to_string();
    let candidates: Vec<PathBuf> = if program.as_os_str().as_bytes().contains(&b'/') {
        vec![program.to_path_buf()]
    } else {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        std::env::split_paths(&path).map(|dir| dir.join(program)).collect()
    };
    let mut found_unexecutable = false;
    for candidate in candidates {
        let Ok(metadata) = candidate.metadata() else { continue };
        if metadata.is_file() && is_executable(&candidate) {
            return Ok(candidate);
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

/// Forks `program` held before `execve`, traced for its exit. `argv[0]` is `args[0]`.
pub fn launch(program: &Path, args: &[OsString]) -> Result<Launched, LaunchError> {
    let name = program.display().to_string();
    let system = |step: &'static str| {
        let program = name.clone();
        move |source: io::Error| LaunchError::System { program, step, source }
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
    let child = Child { path, argv, envp, name: name.clone() };
    thread::Builder::new()
        .name("memtrace-tracer".into())
        .spawn(move || child.supervise(pid_tx, control_rx, event_tx))
        .map_err(system("starting the tracer thread"))?;
    let pid = pid_rx
        .recv()
        .map_err(|_| io::Error::other("the tracer thread ended early"))
        .map_err(system("fork"))??;
    Ok(Launched { pid, control: control_tx, events: event_rx })
}

struct Child {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    name: String,
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
        let ending = wait_for_end(pid, &control, &events);
        if let Some(ending) = ending {
            let _ = events.send(TargetEvent::Ended(ending));
        }
    }

    /// Forks; the child blocks on the gate pipe, then execs. Returns (pid, gate write end,
    /// exec-error read end).
    fn fork_held(&self) -> Result<(libc::pid_t, i32, i32), LaunchError> {
        let system = |step: &'static str| {
            let program = self.name.clone();
            move |source: io::Error| LaunchError::System { program, step, source }
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
        // SAFETY: seizing our own child; options as documented in ptrace(2).
        let seized = unsafe {
            libc::ptrace(libc::PTRACE_SEIZE, pid, 0, libc::PTRACE_O_TRACEEXIT as libc::c_long)
        };
        if seized != 0 {
            let error = io::Error::last_os_error();
            close(gate_write);
            // SAFETY: reaping our own child, which exits as its gate closed.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            return Err(system("ptrace(PTRACE_SEIZE)")(error));
        }
        Ok((pid, gate_write, error_read))
    }
}

/// Follows the traced child until it is gone, passing signals through untouched.
fn wait_for_end(
    pid: libc::pid_t,
    control: &std_mpsc::Receiver<Control>,
    events: &mpsc::UnboundedSender<TargetEvent>,
) -> Option<Ending> {
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own traced child.
        if unsafe { libc::waitpid(pid, &mut status, libc::__WALL) } < 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            log::warn!("lost track of process {pid}: {error}");
            return None;
        }
        if libc::WIFEXITED(status) {
            return Some(Ending::Exited(libc::WEXITSTATUS(status)));
        }
        if libc::WIFSIGNALED(status) {
            return Some(Ending::Killed(libc::WTERMSIG(status)));
        }
        if !libc::WIFSTOPPED(status) {
            continue;
        }
        let signal = libc::WSTOPSIG(status);
        let (request, data) = match status >> 16 {
            libc::PTRACE_EVENT_EXIT => {
                let _ = events.send(TargetEvent::Exiting);
                // Wait for the snapshot; a closed channel means memtrace is done with it.
                let _ = control.recv();
                (libc::PTRACE_CONT, 0)
            }
            // A job-control stop: stay stopped until SIGCONT, as without a tracer.
            libc::PTRACE_EVENT_STOP if signal != libc::SIGTRAP => (libc::PTRACE_LISTEN, 0),
            libc::PTRACE_EVENT_STOP => (libc::PTRACE_CONT, 0),
            // A signal on its way to the target: deliver it unchanged.
            _ => (libc::PTRACE_CONT, signal),
        };
        // SAFETY: resuming our own stopped tracee.
        unsafe { libc::ptrace(request, pid, 0, data as libc::c_long) };
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_resolve_like_a_shell() {
        assert!(resolve_program(Path::new("sh")).is_ok());
        assert!(matches!(resolve_program(Path::new("no-such-command-xyz")), Err(LaunchError::NotFound(_))));
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data.txt");
        std::fs::write(&data, "text").unwrap();
        assert!(matches!(resolve_program(&data), Err(LaunchError::NotExecutable(_))));
    }
}
