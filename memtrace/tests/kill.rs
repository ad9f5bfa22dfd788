//! SIGKILL at any moment (issue 16): memtrace killed during attach, the window, the scan or the
//! report leaves no memtrace process, no BPF program, no descriptor of its caller, and a target
//! that runs on. The moments are spread over a run's whole life by a fixed sequence, so that a
//! failure can be replayed.
mod common;

use std::{
    io::Read,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use common::*;

/// Moments to kill at, in milliseconds after memtrace starts: a fixed pseudo-random sequence
/// over 0..`span` (the same on every run).
fn moments(count: usize, span: u64) -> Vec<u64> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..count)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % span
        })
        .collect()
}

/// Kills `memtrace` with SIGKILL after `delay_ms`, then checks what it leaves: its caller's
/// pipes reach end of file (no process of memtrace's holds them) once `after_death` has run
/// (ending what may hold them legitimately: `run`'s command), and no memtrace program or
/// process stays.
fn kill_and_check(mut memtrace: Child, delay_ms: u64, what: &str, after_death: impl FnOnce()) {
    let (mut stdout, mut stderr) = (memtrace.stdout.take().unwrap(), memtrace.stderr.take().unwrap());
    let (done, eof) = mpsc::channel();
    thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = stdout.read_to_end(&mut sink);
        let _ = stderr.read_to_end(&mut sink);
        let _ = done.send(String::from_utf8_lossy(&sink).into_owned());
    });
    thread::sleep(Duration::from_millis(delay_ms));
    let _ = memtrace.kill();
    memtrace.wait().expect("memtrace is reaped");
    after_death();
    let output = eof.recv_timeout(Duration::from_secs(2)).unwrap_or_else(|_| {
        panic!("{what}, killed after {delay_ms} ms: memtrace's stdout or stderr is still held open after it died")
    });
    let left = abandoned_memtrace_programs();
    if !left.is_empty() {
        assert_no_probes_left();
    }
    // A helper may take a moment to see its parent gone (end of file on its pipe).
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut helpers = leftover_memtrace_processes();
    while !helpers.is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        reap_children();
        helpers = leftover_memtrace_processes();
    }
    assert!(
        helpers.is_empty(),
        "{what}, killed after {delay_ms} ms: memtrace processes remain: {helpers:?}; output: {output}"
    );
}

/// memtrace's own processes left behind (the launcher's pre-exec child, `record --scan`'s
/// stopper): children of this test once memtrace is gone, since the test is their subreaper
/// (see `become_subreaper`). Other memtraces on the machine are not its children.
fn leftover_memtrace_processes() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let me = std::process::id();
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, tail) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1;
            let parent: u32 = tail.split_whitespace().nth(1)?.parse().ok()?;
            (parent == me && name.starts_with("memtrace")).then(|| format!("{pid} {name}"))
        })
        .collect()
}

/// Orphans of memtrace's become this process's children instead of init's, where the test
/// can see (and reap) them.
fn become_subreaper() {
    // SAFETY: prctl with integer arguments only.
    let result = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(result, 0, "PR_SET_CHILD_SUBREAPER: {}", std::io::Error::last_os_error());
}

/// Reaps any child that has exited (orphans handed to this subreaper), without waiting.
fn reap_children() {
    // SAFETY: waitpid with a null status pointer, non-blocking.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

/// The state letter of `/proc/PID/stat` (R, S, D, T, t, Z...).
fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The target keeps running: never left stopped (by the scan's ptrace stop) and still making
/// progress.
fn assert_running(target: &mut Child, what: &str, delay_ms: u64) {
    let pid = target.id();
    assert!(target.try_wait().expect("try_wait").is_none(), "{what}, killed after {delay_ms} ms: the target died");
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        let state = state_of(pid);
        if !matches!(state, Some('T' | 't')) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}, killed after {delay_ms} ms: the target is left stopped ({state:?})"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn record_with_scan_killed_at_any_moment_leaves_nothing_and_the_target_running() {
    let _serial = serial();
    become_subreaper();
    let steady = build_c("steady");
    let mut target = Command::new(&steady).stdout(Stdio::null()).spawn().expect("steady starts");
    let pid = target.id().to_string();
    let dir = tempfile::tempdir().unwrap();
    // A window of 1 s, then the scan and the report: the moments cover attach, window, scan and
    // report (memtrace takes about 2 s in all here).
    for delay_ms in moments(10, 2_500) {
        let memtrace = memtrace()
            .args(["record", "--scan", "--duration", "1s", "-p", &pid, "-f", "json", "-o"])
            .arg(dir.path().join("report.json"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("memtrace starts");
        kill_and_check(memtrace, delay_ms, "record --scan", || {});
        assert_running(&mut target, "record --scan", delay_ms);
    }
    let _ = target.kill();
    let _ = target.wait();
}

#[test]
fn run_killed_at_any_moment_leaves_nothing_behind() {
    let _serial = serial();
    become_subreaper();
    let steady = build_c("steady");
    // `run`'s target is memtrace's child: killed with memtrace before its exec (it is held
    // there), orphaned after it, running on untraced. The test finds it by this argument,
    // which steady ignores.
    let marker = format!("kill-test-{}", std::process::id());
    for delay_ms in moments(10, 1_500) {
        let memtrace = memtrace()
            .args(["run", "--"])
            .arg(&steady)
            .arg(&marker)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("memtrace starts");
        // The command writes to memtrace's stdout, its own: it is ended before the pipes are
        // checked.
        kill_and_check(memtrace, delay_ms, "run", || {
            for orphan in processes_with_argument(&marker) {
                let state = state_of(orphan);
                assert!(
                    !matches!(state, Some('T' | 't')),
                    "run, killed after {delay_ms} ms: the command is left stopped"
                );
                // SAFETY: kill has no memory preconditions.
                unsafe { libc::kill(orphan as i32, libc::SIGKILL) };
            }
            thread::sleep(Duration::from_millis(50));
            reap_children();
        });
    }
}

/// Processes with `argument` in their command line.
fn processes_with_argument(argument: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            cmdline.split(|&byte| byte == 0).any(|arg| arg == argument.as_bytes()).then_some(pid)
        })
        .collect()
}
