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
    assert!(
        stderr(&output).contains("memtrace: check passed: 0 bytes definitely lost or indirectly lost"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_leak_fails_the_check_with_exit_code_23_or_the_one_asked_for() {
    let binary = crash_program();
    let output = run_check(&["--check"], &binary, "leak");
    assert_eq!(output.status.code(), Some(23), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "memtrace: check failed: 64 bytes in 1 block definitely lost or indirectly lost, from 1 stack (threshold 0 bytes)"
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
    let (output, report) =
        memtrace_json(&["run", "--check", "--suppressions", supp], &[binary.to_str().unwrap(), "leak"]);
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
    assert!(
        stderr(&reachable).contains("280 bytes in 3 blocks still reachable, from 3 stacks"),
        "{}",
        stderr(&reachable)
    );
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
    let second =
        memtrace().args(["run", "--check", "--suppressions"]).arg(&printed).arg("--").arg(&binary).output().unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_no_probes_left();
}

#[test]
fn bad_suppressions_files_are_one_clear_line_and_exit_1_before_the_target_runs() {
    let binary = crash_program();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.supp");
    let output =
        memtrace().args(["run", "--check", "--suppressions"]).arg(&missing).arg("--").arg(&binary).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("memtrace: error: cannot read the suppressions file {}", missing.display())),
        "{lines:?}"
    );

    let malformed = dir.path().join("bad.supp");
    std::fs::write(&malformed, "leak:fine\ninterceptor_via_fun:foo\n").unwrap();
    let output = memtrace().args(["run", "--suppressions"]).arg(&malformed).arg("--").arg(&binary).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(&format!("{}:2: `interceptor_via_fun:foo` is not a suppression", malformed.display())),
        "{lines:?}"
    );

    let unwritable = memtrace()
        .args(["run", "--print-suppressions", "/nonexistent-dir/x.supp", "--"])
        .arg(&binary)
        .output()
        .unwrap();
    assert_eq!(unwritable.status.code(), Some(1));
    assert!(
        stderr(&unwritable).contains("cannot write the suppressions file /nonexistent-dir/x.supp"),
        "{}",
        stderr(&unwritable)
    );
}

/// `memtrace run --format junit ARGS -o XML -- BINARY`; asserts it exited 0.
fn run_junit(args: &[&str], xml: &Path, binary: &Path) {
    let output = memtrace()
        .args(["run", "--format", "junit"])
        .args(args)
        .arg("-o")
        .arg(xml)
        .arg("--")
        .arg(binary)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

/// Each suite's name and its cases' (class name, name): what a CI system files a test's
/// history under.
fn test_names(read: &Value) -> Vec<(String, Vec<(String, String)>)> {
    read["suites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|suite| {
            let cases = suite["cases"].as_array().unwrap();
            let names = cases.iter().map(|case| {
                (case["classname"].as_str().unwrap().to_owned(), case["name"].as_str().unwrap().to_owned())
            });
            (suite["name"].as_str().unwrap().to_owned(), names.collect())
        })
        .collect()
}

#[test]
fn junit_is_valid_for_jenkins_and_names_each_leak_the_same_from_run_to_run() {
    let binary = build_c("lk_definite");
    let dir = tempfile::tempdir().unwrap();
    let suppressions = dir.path().join("s.supp");
    std::fs::write(&suppressions, "leak:lose_empty_block\n").unwrap();
    let supp = suppressions.to_str().unwrap();
    let (first, second, located) =
        (dir.path().join("first.xml"), dir.path().join("second.xml"), dir.path().join("located.xml"));
    let _serial = serial();
    run_junit(&["--suppressions", supp], &first, &binary);
    run_junit(&["--suppressions", supp], &second, &binary);
    run_junit(&["--suppressions", supp, "--junit-locations"], &located, &binary);
    // Valid against the Jenkins xUnit plugin's junit-10.xsd, by xmlschema.
    for xml in [&first, &second] {
        assert_eq!(junit_schema_error(xml), None, "{}", std::fs::read_to_string(xml).unwrap());
    }
    let read = junitparser_read(&first);
    // The same names in a second run: pids, addresses and counts are not in them.
    assert_eq!(test_names(&read), test_names(&junitparser_read(&second)));
    let source = source_path("lk_definite.c");
    let (blocks_line, empty_line) = (line_of("lk_definite", "malloc(48)"), line_of("lk_definite", "= malloc(0)"));
    assert_eq!(
        (read["tests"].as_u64(), read["failures"].as_u64(), read["errors"].as_u64()),
        (Some(2), Some(1), Some(0)),
        "{read:#}"
    );
    let suites = read["suites"].as_array().unwrap();
    assert_eq!(suites.len(), 1, "{read:#}");
    let suite = &suites[0];
    // The suite is the process, named by its command line.
    assert_eq!(suite["name"], binary.to_str().unwrap());
    assert_eq!(
        [&suite["tests"], &suite["failures"], &suite["errors"], &suite["skipped"]].map(|count| count.as_u64()),
        [Some(2), Some(1), Some(0), Some(1)]
    );
    let cases = suite["cases"].as_array().unwrap();
    let summary: Vec<(&str, &str, &str, &str)> = cases
        .iter()
        .map(|case| {
            let result = &case["results"][0];
            (
                case["name"].as_str().unwrap(),
                case["classname"].as_str().unwrap(),
                result["kind"].as_str().unwrap(),
                result["message"].as_str().unwrap(),
            )
        })
        .collect();
    let failing_name = format!("definitely lost in lose_blocks ({source}:{blocks_line})");
    let skipped_name = format!("definitely lost in lose_empty_block ({source}:{empty_line}) (suppressed)");
    let skipped_message = format!("0 bytes in 1 block definitely lost, suppressed by leak:lose_empty_block ({supp}:1)");
    assert_eq!(
        summary,
        [
            (failing_name.as_str(), "memtrace.definitely_lost", "failure", "144 bytes in 3 blocks definitely lost"),
            (skipped_name.as_str(), "memtrace.definitely_lost", "skipped", skipped_message.as_str()),
        ]
    );
    assert_eq!(cases[0]["results"][0]["type"], "definitely_lost");
    // xunit-viewer (npm) shows the same: the failure, and the suppressed case skipped.
    let shown = xunit_viewer_cases(&first);
    assert_eq!(shown, [("✗".to_owned(), failing_name.clone()), ("⊘".to_owned(), skipped_name.clone())]);
    // The failure's text is the stack, its process and numbers first.
    let text = cases[0]["results"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("pid ") && text.contains(": 144 bytes in 3 blocks\n#0 0x"), "{text}");
    assert!(
        text.contains(&format!(" in lose_blocks at {source}:{blocks_line}")) && text.contains(" in main at "),
        "{text}"
    );
    // No file or line attributes unless asked for.
    assert!(cases.iter().all(|case| case["file"].is_null() && case["line"].is_null()), "{read:#}");

    // --junit-locations: GitHub's annotations read `file` and `line`, which junit-10.xsd lacks.
    let located_read = junitparser_read(&located);
    let located_cases = located_read["suites"][0]["cases"].as_array().unwrap();
    let locations: Vec<(&str, &str)> =
        located_cases.iter().map(|case| (case["file"].as_str().unwrap(), case["line"].as_str().unwrap())).collect();
    let (blocks_line, empty_line) = (blocks_line.to_string(), empty_line.to_string());
    assert_eq!(locations, [(source.as_str(), blocks_line.as_str()), (source.as_str(), empty_line.as_str())]);
    assert_eq!(test_names(&located_read), test_names(&read));
    let complaint = junit_schema_error(&located).expect("junit-10.xsd has no file attribute on testcase");
    assert!(complaint.contains("file"), "{complaint}");

    // A clean program: one passing case in its process's suite.
    let clean = build_c("lk_none");
    run_junit(&[], &first, &clean);
    assert_eq!(junit_schema_error(&first), None);
    let read = junitparser_read(&first);
    assert_eq!(
        test_names(&read),
        [(clean.to_str().unwrap().to_owned(), vec![("memtrace".to_owned(), "no leaks".to_owned())])]
    );
    assert_eq!(read["suites"][0]["cases"][0]["results"], serde_json::json!([]));
    assert_no_probes_left();
}

#[test]
fn a_saved_report_is_checked_again_without_its_target() {
    let binary = build_c("lk_definite");
    let dir = tempfile::tempdir().unwrap();
    let (saved, unscanned) = (dir.path().join("saved.json"), dir.path().join("unscanned.json"));
    {
        let _serial = serial();
        for (path, args) in [(&saved, &[][..]), (&unscanned, &["--no-leak-kinds"][..])] {
            let output = memtrace()
                .arg("run")
                .args(args)
                .args(["--format", "json", "-o"])
                .arg(path)
                .arg("--")
                .arg(&binary)
                .output()
                .unwrap();
            assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        }
        assert_no_probes_left();
    }
    let recheck = |args: &[&str]| memtrace().arg("report").arg(&saved).args(args).output().unwrap();
    // The exit code and line of `run --check` on the same program.
    let failed = recheck(&["--check", "--format", "json", "-o", "/dev/null"]);
    assert_eq!(failed.status.code(), Some(23), "{}", stderr(&failed));
    assert_eq!(
        stderr_lines(&failed),
        [
            "memtrace: check failed: 144 bytes in 4 blocks definitely lost or indirectly lost, from 2 stacks (threshold 0 bytes)"
        ]
    );
    assert_eq!(recheck(&["--check", "--exit-code", "5", "-o", "/dev/null"]).status.code(), Some(5));
    assert_eq!(
        recheck(&["--check", "--leak-check=full", "--error-exitcode=6", "-o", "/dev/null"]).status.code(),
        Some(6)
    );
    assert_eq!(recheck(&["--check", "--fail-on", "reachable", "-o", "/dev/null"]).status.code(), Some(0));
    // Other suppressions: the check passes, and the text shows them.
    let suppressions = dir.path().join("all.supp");
    std::fs::write(&suppressions, "leak:lose_blocks\nleak:lose_empty_block\n").unwrap();
    let passed = recheck(&["--check", "--suppressions", suppressions.to_str().unwrap()]);
    assert_eq!(passed.status.code(), Some(0), "{}", stderr(&passed));
    assert_eq!(
        stderr_lines(&passed),
        [
            "memtrace: check passed: 0 bytes definitely lost or indirectly lost (threshold 0 bytes); 144 bytes in 4 blocks suppressed"
        ]
    );
    let text = String::from_utf8(passed.stdout).unwrap();
    assert!(text.contains(&format!("(suppressed by leak:lose_blocks ({}:1))", suppressions.display())), "{text}");
    // Without --check the saved report renders as it is, exit code 0.
    assert_eq!(recheck(&["-o", "/dev/null"]).status.code(), Some(0));
    // A report with no leak kinds cannot be checked.
    let output = memtrace().arg("report").arg(&unscanned).arg("--check").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr_lines(&output),
        [format!(
            "memtrace: error: {} has no leak kinds (its processes were not scanned: record without --scan, or run --no-leak-kinds): --check cannot decide",
            unscanned.display()
        )]
    );
}

#[test]
fn valgrinds_spellings_work_as_memtraces_options() {
    let binary = build_c("lk_definite");
    let _serial = serial();
    let output = memtrace()
        .args([
            "run",
            "--leak-check=full",
            "--show-leak-kinds=definite",
            "--error-exitcode=3",
            "--check",
            "--gen-suppressions",
            "--",
        ])
        .arg(&binary)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    // --gen-suppressions: the suppressions on stdout (lk_definite prints nothing itself).
    let printed = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = printed.lines().filter(|line| !line.starts_with('#')).collect();
    assert_eq!(lines, ["leak:lose_blocks", "leak:lose_empty_block"], "{printed}");
    // --show-leak-kinds: the text report shows those kinds.
    assert!(
        stderr(&output).contains("\nShowing definitely lost (--kinds); 0 stacks of other kinds left out\n"),
        "{}",
        stderr(&output)
    );
    assert_no_probes_left();
}

#[test]
fn record_check_needs_scan() {
    let output = memtrace().args(["record", "-p", "1", "--check"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("--check needs leak kinds, which record finds only with --scan"),
        "{}",
        stderr(&output)
    );
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
    assert!(stderr(&without).contains("4,096 bytes in 1 block still reachable, from 1 stack"), "{}", stderr(&without));
    assert_no_probes_left();
}
