//! `-o FILE`: checked before tracing starts without touching what is there, replaced only by a
//! complete report, never written through a symbolic link.
mod common;

use std::{
    os::unix::fs::{MetadataExt, symlink},
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use common::*;

const PREVIOUS: &str = "the previous report\n";

/// Temporary files memtrace left in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".memtrace-tmp"))
        .collect()
}

fn assert_one_line_error(output: &std::process::Output, expected: &str) {
    let lines = stderr_lines(output);
    assert_eq!(lines, [format!("memtrace: error: {expected}")]);
}

/// Waits for `child` to exit, killing it after `limit`; whether it exited in time.
fn exited_within(child: &mut Child, limit: Duration) -> bool {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn a_failed_run_leaves_the_previous_report_as_it_was() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("prev.txt");
    std::fs::write(&report, PREVIOUS).unwrap();
    // The command is missing.
    let output =
        memtrace().arg("run").arg("-o").arg(&report).args(["--", "no-such-command-memtrace"]).output().unwrap();
    assert_eq!(output.status.code(), Some(127));
    assert_eq!(std::fs::read_to_string(&report).unwrap(), PREVIOUS);
    // A suppressions file that does not exist.
    let output = memtrace()
        .args(["run", "--check", "--suppressions", "/nonexistent/memtrace.supp", "-o"])
        .arg(&report)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&report).unwrap(), PREVIOUS);
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    assert_no_probes_left();
}

#[test]
fn a_killed_run_leaves_the_previous_report_as_it_was() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("prev.txt");
    std::fs::write(&report, PREVIOUS).unwrap();
    let mut memtrace =
        memtrace().arg("run").arg("-o").arg(&report).args(["--", "sleep", "30"]).stderr(Stdio::null()).spawn().unwrap();
    // Once the target runs (memtrace's tracer thread has a child), kill memtrace outright.
    let children = format!("/proc/{}/task", memtrace.id());
    let started = Instant::now();
    let target = loop {
        let found = std::fs::read_dir(&children).ok().and_then(|tasks| {
            tasks.flatten().find_map(|task| {
                let text = std::fs::read_to_string(task.path().join("children")).ok()?;
                text.split_whitespace().next()?.parse::<i32>().ok()
            })
        });
        if let Some(pid) = found {
            break pid;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the target never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    memtrace.kill().unwrap();
    memtrace.wait().unwrap();
    // SAFETY: ending the sleep the test started through memtrace.
    unsafe { libc::kill(target, libc::SIGKILL) };
    assert_eq!(std::fs::read_to_string(&report).unwrap(), PREVIOUS);
    // What SIGKILL leaves is the temporary file, beside the report.
    assert_eq!(leftovers(dir.path()).len(), 1);
    assert_no_probes_left();
}

#[test]
fn a_report_replaces_the_previous_one_whole() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("prev.txt");
    std::fs::write(&report, PREVIOUS).unwrap();
    let output = memtrace().arg("run").arg("-o").arg(&report).args(["--", "true"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(text.starts_with("memtrace: ran pid "), "{text}");
    assert!(text.contains("\nLost: 0 events"), "{text}");
    // Never world-writable, whatever the umask.
    assert_eq!(std::fs::metadata(&report).unwrap().mode() & 0o022, 0);
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    assert_no_probes_left();
}

#[test]
fn a_symbolic_link_planted_at_the_output_path_is_not_followed() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, PREVIOUS).unwrap();
    // Another user's link, as in a shared directory such as /tmp.
    let link = dir.path().join("report.txt");
    symlink(&victim, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    let marker = dir.path().join("target-ran");
    let output = memtrace().arg("run").arg("-o").arg(&link).arg("--").arg("touch").arg(&marker).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_one_line_error(
        &output,
        &format!(
            "cannot write the report to {}: it is a symbolic link, which memtrace does not write through: remove it or give the path it points to",
            link.display()
        ),
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), PREVIOUS);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(!marker.exists(), "the target must not run");
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    assert_no_probes_left();
}

#[test]
fn a_fifo_at_the_output_path_is_refused_without_blocking() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("report.txt");
    let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o666) }, 0);
    let mut child = memtrace()
        .arg("run")
        .arg("-o")
        .arg(&fifo)
        .args(["--", "true"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(exited_within(&mut child, Duration::from_secs(20)), "memtrace blocked on the FIFO");
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_one_line_error(
        &output,
        &format!("cannot write the report to {}: it is a FIFO, not a regular file", fifo.display()),
    );
    assert_no_probes_left();
}
