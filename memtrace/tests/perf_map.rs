//! `/tmp/perf-PID.map` is written by the traced process, whose user may be hostile: memtrace
//! (root) takes only a regular file of that user or root, of bounded size, opened without
//! following a link or blocking; anything else is skipped with a warning, and the run completes.
mod common;

use std::{
    os::unix::fs::PermissionsExt,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

/// Runs `command` to its end, or kills it after `limit` (memtrace blocked, or reading without
/// end); returns its output and whether it finished in time.
fn output_within(command: &mut Command, limit: Duration) -> (Output, bool) {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("memtrace starts");
    let started = Instant::now();
    let mut finished = true;
    while child.try_wait().expect("waiting for memtrace").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            finished = false;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child.wait_with_output().expect("memtrace's output"), finished)
}

/// Runs the trap program in `mode` under memtrace; returns memtrace's output, its report and
/// the perf map's path (removed, whatever happened).
fn run_trap(mode: &str) -> (Output, Value, String) {
    let program = build_c("perf_map_trap");
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report.json");
    let (output, finished) = output_within(
        memtrace().args(["run", "--format", "json", "-o"]).arg(&report_path).arg("--").arg(&program).arg(mode),
        Duration::from_secs(60),
    );
    // The program printed its pid first.
    let pid = String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or_default().to_owned();
    let perf_map = format!("/tmp/perf-{pid}.map");
    let _ = std::fs::remove_file(&perf_map);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(finished, "memtrace did not finish within a minute: {stderr}");
    let text = std::fs::read_to_string(&report_path).unwrap_or_else(|error| panic!("no report ({error}): {stderr}"));
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|error| panic!("not JSON ({error}): {stderr}"));
    assert_eq!(report["target"]["pid"].to_string(), pid);
    (output, report, perf_map)
}

/// The run completed, its report is whole, and stderr says, on one line, why the map was skipped.
fn assert_skipped(mode: &str, reason: &str) {
    let _serial = serial();
    let (output, report, perf_map) = run_trap(mode);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        stderr_lines(&output),
        [format!("memtrace: warning: skipping {perf_map}: {reason}; its JIT frames stay unnamed")]
    );
    assert_eq!(stack_from(&report, "main")["bytes"], 3333);
    assert_no_probes_left();
}

#[test]
fn a_fifo_is_skipped_without_blocking() {
    assert_skipped("fifo", "it is a FIFO, not a regular file");
}

#[test]
fn a_symbolic_link_to_dev_zero_is_not_followed() {
    assert_skipped("zero", "it is a symbolic link, which memtrace does not follow here");
}

#[test]
fn a_map_owned_by_another_user_is_skipped() {
    assert_skipped("foreign", "it is owned by uid 12345, neither the process's user (uid 0) nor root");
}

#[test]
fn an_oversized_map_is_skipped() {
    assert_skipped("large", "it is larger than 67,108,864 bytes, the most memtrace reads from it");
}

#[test]
fn a_map_of_the_process_user_is_read() {
    let _serial = serial();
    // The JIT test program, run as nobody: its map is nobody's, and memtrace takes it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.path().join("jit");
    std::fs::copy(build_c("jit"), &binary).unwrap();
    let report_path = dir.path().join("report.json");
    let (output, finished) = output_within(
        memtrace()
            .args(["run", "--format", "json", "-o"])
            .arg(&report_path)
            .args(["--", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&binary),
        Duration::from_secs(60),
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let perf_map = format!("/tmp/perf-{}.map", report["target"]["pid"]);
    let _ = std::fs::remove_file(&perf_map);
    assert!(finished);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stderr_lines(&output), Vec::<String>::new());
    let stack = stack_from(&report, "jit_leaker");
    assert_eq!(stack["bytes"], 4444);
    assert_eq!(stack["frames"][0]["module"], perf_map);
    assert_no_probes_left();
}
