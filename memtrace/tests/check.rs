//! CI mode: `--check`'s exit codes (pass, leak, suppressed leak, the target's own failure and
//! crash), its options, suppressions, JUnit XML, and `record --scan`.
mod common;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use common::*;
use quick_xml::{Reader, XmlVersion, events::Event};
use serde_json::Value;

fn crash_program() -> PathBuf {
    build_c("lk_crash")
}

/// `memtrace run ARGS -- BINARY MODE` with its report as text on stderr.
fn run_check(args: &[&str], binary: &Path, mode: &str) -> Output {
    let _serial = serial();
    let output = memtrace().arg("run").args(args).arg("--").arg(binary).arg(mode).output().expect("memtrace runs");
    assert_no_probes_left();
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_clean_program_passes_the_check() {
    let output = run_check(&["--check"], &crash_program(), "clean");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stderr(&output).contains("memtrace: check passed: 0 bytes definitely lost or indirectly lost"), "{}", stderr(&output));
}

#[test]
fn a_leak_fails_the_check_with_exit_code_23_or_the_one_asked_for() {
    let binary = crash_program();
    let output = run_check(&["--check"], &binary, "leak");
    assert_eq!(output.status.code(), Some(23), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "memtrace: check failed: 64 bytes in 1 blocks definitely lost or indirectly lost, from 1 stacks (threshold 0 bytes)"
        ),
        "{}",
        stderr(&output)
    );
    let output = run_check(&["--check", "--exit-code", "7"], &binary, "leak");
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
    // Without --check the exit code is the target's, leaks or not.
    let output = run_check(&[], &binary, "leak");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn the_threshold_tolerates_that_many_bytes() {
    let binary = crash_program();
    assert_eq!(run_check(&["--check", "--leak-threshold", "64"], &binary, "leak").status.code(), Some(0));
    assert_eq!(run_check(&["--check", "--leak-threshold", "63"], &binary, "leak").status.code(), Some(23));
}

#[test]
fn a_suppressed_leak_passes_and_stays_in_the_report_marked() {
    let binary = crash_program();
    let dir = tempfile::tempdir().unwrap();
    let suppressions = dir.path().join("memtrace.supp");
    std::fs::write(&suppressions, "# our known leak\n\nleak:leak_for_check\n").unwrap();
    let supp = suppressions.to_str().unwrap();
    let _serial = serial();
    let (output, report) = memtrace_json(&["run", "--check", "--suppressions", supp], &[binary.to_str().unwrap(), "leak"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let stack = stack_from(&report, "leak_for_check");
    assert_eq!(stack["suppressed_by"], format!("leak:leak_for_check ({supp}:3)"));
    assert_eq!(stack["leak_kind"], "definitely_lost");
    let check = &report["check"];
    assert_eq!((check["passed"].as_bool(), check["failing_bytes"].as_u64()), (Some(true), Some(0)));
    assert_eq!((check["suppressed_bytes"].as_u64(), check["suppressed_blocks"].as_u64()), (Some(64), Some(1)));
    // A wildcard on the source file of any frame works too; another name does not.
    std::fs::write(&suppressions, "leak:*/lk_crash.c\n").unwrap();
    let (output, _) = memtrace_json(&["run", "--check", "--suppressions", supp], &[binary.to_str().unwrap(), "leak"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    std::fs::write(&suppressions, "leak:some_other_function\n").unwrap();
    let (output, _) = memtrace_json(&["run", "--check", "--suppressions", supp], &[binary.to_str().unwrap(), "leak"]);
    assert_eq!(output.status.code(), Some(23), "{}", stderr(&output));
    assert_no_probes_left();
}

#[test]
fn the_targets_own_failure_wins_over_the_check() {
    let binary = crash_program();
    let output = run_check(&["--check"], &binary, "fail");
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("the target itself failed (exit status 3)"), "{}", stderr(&output));
    // Killed by SIGABRT: 128 + 6, as a shell reports it.
    let output = run_check(&["--check"], &binary, "abort");
    assert_eq!(output.status.code(), Some(134), "{}", stderr(&output));
    assert!(stderr(&output).contains("the target itself failed (exit status 134)"), "{}", stderr(&output));
}

#[test]
fn fail_on_chooses_the_kinds_that_fail() {
    let binary = build_c("lk_reachable_global");
    let target = binary.to_str().unwrap();
    let _serial = serial();
    let default = memtrace().args(["run", "--check", "--", target]).output().unwrap();
    assert_eq!(default.status.code(), Some(0), "{}", stderr(&default));
    let reachable = memtrace().args(["run", "--check", "--fail-on", "reachable", "--", target]).output().unwrap();
    assert_eq!(reachable.status.code(), Some(23), "{}", stderr(&reachable));
    assert!(stderr(&reachable).contains("280 bytes in 3 blocks still reachable, from 3 stacks"), "{}", stderr(&reachable));
    let bad = memtrace().args(["run", "--check", "--fail-on", "lost", "--", target]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("`lost` is not a leak kind"), "{}", stderr(&bad));
}

#[test]
fn printed_suppressions_silence_the_report_they_came_from() {
    let binary = build_c("lk_definite");
    let dir = tempfile::tempdir().unwrap();
    let printed = dir.path().join("printed.supp");
    let _serial = serial();
    let first = memtrace()
        .args(["run", "--check", "--print-suppressions"])
        .arg(&printed)
        .arg("--")
        .arg(&binary)
        .output()
        .unwrap();
    assert_eq!(first.status.code(), Some(23), "{}", stderr(&first));
    let text = std::fs::read_to_string(&printed).unwrap();
    let lines: Vec<&str> = text.lines().filter(|line| !line.starts_with('#')).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines.contains(&"leak:lose_blocks") && lines.contains(&"leak:lose_empty_block"), "{text}");
    let second = memtrace().args(["run", "--check", "--suppressions"]).arg(&printed).arg("--").arg(&binary).output().unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_no_probes_left();
}

#[test]
fn bad_suppressions_files_are_one_clear_line_and_exit_1_before_the_target_runs() {
    let binary = crash_program();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.supp");
    let output = memtrace().args(["run", "--check", "--suppressions"]).arg(&missing).arg("--").arg(&binary).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with(&format!("memtrace: error: cannot read the suppressions file {}", missing.display())), "{lines:?}");

    let malformed = dir.path().join("bad.supp");
    std::fs::write(&malformed, "leak:fine\ninterceptor_via_fun:foo\n").unwrap();
    let output = memtrace().args(["run", "--suppressions"]).arg(&malformed).arg("--").arg(&binary).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(&format!("{}:2: `interceptor_via_fun:foo` is not a suppression", malformed.display())), "{lines:?}");

    let unwritable = memtrace().args(["run", "--print-suppressions", "/nonexistent-dir/x.supp", "--"]).arg(&binary).output().unwrap();
    assert_eq!(unwritable.status.code(), Some(1));
    assert!(stderr(&unwritable).contains("cannot write the suppressions file /nonexistent-dir/x.supp"), "{}", stderr(&unwritable));
}

/// (name, failure message or None, skipped message or None) of each test case.
fn junit_cases(xml: &str) -> Vec<(String, Option<String>, Option<String>)> {
    let mut reader = Reader::from_str(xml);
    let mut cases = Vec::new();
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(element) | Event::Empty(element) => {
                let attribute = |name: &str| {
                    element
                        .try_get_attribute(name)
                        .ok()
                        .flatten()
                        .map(|value| value.normalized_value(XmlVersion::Implicit1_0).expect("an attribute").into_owned())
                };
                match element.name().as_ref() {
                    "testcase" => cases.push((attribute("name").unwrap_or_default(), None, None)),
                    "failure" => cases.last_mut().expect("a case").1 = attribute("message"),
                    "skipped" => cases.last_mut().expect("a case").2 = attribute("message"),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    cases
}

#[test]
fn junit_has_one_failing_case_per_leak_stack_and_skips_suppressed_ones() {
    let binary = build_c("lk_definite");
    let dir = tempfile::tempdir().unwrap();
    let xml_path = dir.path().join("leaks.xml");
    let suppressions = dir.path().join("s.supp");
    std::fs::write(&suppressions, "leak:lose_empty_block\n").unwrap();
    let _serial = serial();
    let output = memtrace()
        .args(["run", "--format", "junit", "--suppressions"])
        .arg(&suppressions)
        .arg("-o")
        .arg(&xml_path)
        .arg("--")
        .arg(&binary)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let xml = std::fs::read_to_string(&xml_path).unwrap();
    let cases = junit_cases(&xml);
    assert_eq!(cases.len(), 2, "{xml}");
    let failed = cases.iter().find(|case| case.1.is_some()).expect("a failing case");
    assert_eq!(failed.1.as_deref(), Some("144 bytes in 3 blocks definitely lost"), "{xml}");
    assert!(failed.0.contains("from lose_blocks at ") && failed.0.contains("lk_definite.c:"), "{xml}");
    let skipped = cases.iter().find(|case| case.2.is_some()).expect("a skipped case");
    assert!(skipped.2.as_deref().unwrap().starts_with("suppressed by leak:lose_empty_block"), "{xml}");
    // The failure's text is the stack.
    assert!(xml.contains("in lose_blocks at ") && xml.contains("in main at "), "{xml}");

    // A clean program: one passing case.
    let clean = build_c("lk_none");
    memtrace().args(["run", "--format", "junit", "-o"]).arg(&xml_path).arg("--").arg(&clean).output().unwrap();
    let cases = junit_cases(&std::fs::read_to_string(&xml_path).unwrap());
    assert_eq!(cases, vec![("no leaks".to_owned(), None, None)]);
    assert_no_probes_left();
}

#[test]
fn record_check_needs_scan() {
    let output = memtrace().args(["record", "-p", "1", "--check"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("--check needs leak kinds, which record finds only with --scan"), "{}", stderr(&output));
}

/// Kills the child on drop.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn record_scan_stops_a_running_process_only_for_the_scan() {
    let binary = build_c("lk_serve");
    let mut child = Running(Command::new(&binary).stdout(Stdio::piped()).spawn().expect("lk_serve starts"));
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let pid = line.trim().to_owned();
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("r.json");
    let output = memtrace()
        .args(["record", "-p", &pid, "--duration", "1s", "--scan", "--format", "json", "-o"])
        .arg(&report_path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let summary = &report["summary"];
    let lost = stack_from(&report, "lose_in_round");
    let kept = stack_from(&report, "keep_in_round");
    assert_eq!(lost["leak_kind"], "definitely_lost", "{:#}", report["stacks"]);
    assert_eq!(kept["leak_kind"], "still_reachable", "{:#}", report["stacks"]);
    let (lost_blocks, kept_blocks) = (lost["allocations"].as_u64().unwrap(), kept["allocations"].as_u64().unwrap());
    assert!(lost_blocks >= 20 && lost_blocks.abs_diff(kept_blocks) <= 1, "{lost_blocks} lost, {kept_blocks} kept");
    assert_eq!(summary["definitely_lost_bytes"].as_u64(), Some(100 * lost_blocks));
    assert_eq!(summary["still_reachable_bytes"].as_u64(), Some(200 * kept_blocks));
    let stopped = report["scan"]["stopped_seconds"].as_f64().expect("scan.stopped_seconds");
    assert!(stopped > 0.0 && stopped < 1.0, "stopped {stopped} s");
    assert!(stderr(&output).contains(&format!("memtrace: process {pid} was stopped for ")), "{}", stderr(&output));
    // It runs on: still there, not stopped, not traced.
    std::thread::sleep(Duration::from_millis(100));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("TracerPid:\t0"), "{status}");
    assert!(!status.contains("State:\tt") && !status.contains("State:\tT"), "{status}");
    assert!(child.0.try_wait().unwrap().is_none(), "lk_serve ended");
    assert_no_probes_left();
}

#[test]
fn built_in_suppressions_cover_stdio_buffers_and_can_be_switched_off() {
    // lk_stdio's only still reachable block is stdout's buffer, from _IO_file_doallocate.
    let binary = build_c("lk_stdio");
    let _serial = serial();
    let with = memtrace().args(["run", "--check", "--fail-on", "reachable", "--"]).arg(&binary).output().unwrap();
    assert_eq!(with.status.code(), Some(0), "{}", stderr(&with));
    assert!(stderr(&with).contains("suppressed by leak:_IO_file_doallocate (built-in)"), "{}", stderr(&with));
    let without = memtrace()
        .args(["run", "--check", "--fail-on", "reachable", "--no-builtin-suppressions", "--"])
        .arg(&binary)
        .output()
        .unwrap();
    assert_eq!(without.status.code(), Some(23), "{}", stderr(&without));
    assert!(stderr(&without).contains("4096 bytes in 1 blocks still reachable, from 1 stacks"), "{}", stderr(&without));
    assert_no_probes_left();
}
