//! memtrace runs as root and never executes what a traced user controls: a program's
//! `PT_INTERP` names a binary or script of the user's choosing, which only the kernel may run,
//! as that program's own interpreter.
mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// A stand-in for a dynamic loader that appends the pid of whoever runs it to
/// $MEMTRACE_TEST_MARKER.
fn fake_interpreter() -> PathBuf {
    build_variant(
        "fake_interp.c",
        "fake_interp",
        "cc",
        &["-static", "-nostdlib", "-fno-pie", "-no-pie", "-O1", "-fno-stack-protector"],
        &[],
    )
}

/// `clean.c` linked to name `interpreter` as its dynamic loader.
fn program_with_interpreter(name: &str, interpreter: &Path) -> PathBuf {
    let flag = format!("-Wl,--dynamic-linker={}", interpreter.display());
    build_variant("clean.c", name, "cc", &["-O0", &flag], &[])
}

/// Runs memtrace with a JSON report in `dir` and $MEMTRACE_TEST_MARKER set to `marker`.
fn run_with_marker(dir: &Path, marker: &Path, target: &[&str]) -> (std::process::Output, Option<Value>) {
    let report = dir.join("report.json");
    let output = memtrace()
        .args(["run", "--format", "json", "-o"])
        .arg(&report)
        .arg("--")
        .args(target)
        .env("MEMTRACE_TEST_MARKER", marker)
        .output()
        .expect("memtrace runs");
    let report = std::fs::read_to_string(&report).ok().map(|text| serde_json::from_str(&text).expect("JSON"));
    (output, report)
}

#[test]
fn the_interpreter_of_the_command_runs_only_as_its_interpreter() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let program = program_with_interpreter("clean_fake_interp", &fake_interpreter());
    let (output, report) = run_with_marker(dir.path(), &marker, &[program.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report = report.expect("a report");
    // Run once, by the kernel, as the command's own process: never by memtrace.
    let pid = report["target"]["pid"].as_u64().unwrap();
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), format!("{pid}\n"));
    assert_no_probes_left();
}

#[test]
fn the_interpreter_of_a_followed_exec_runs_only_as_its_interpreter() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let program = program_with_interpreter("clean_fake_interp", &fake_interpreter());
    let script = format!("{}; exit 0", program.display());
    let (output, report) = run_with_marker(dir.path(), &marker, &["sh", "-c", &script]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report = report.expect("a report");
    // The shell's child exec'd the program: memtrace looked its libraries up for the new image
    // without running its interpreter, which ran once, as that child.
    let children: Vec<u64> = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|process| process["parent_pid"] == report["target"]["pid"])
        .map(|process| process["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(children.len(), 1, "{report:#}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), format!("{}\n", children[0]));
    assert_no_probes_left();
}

#[test]
fn a_script_named_as_interpreter_never_runs() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let interpreter = dir.path().join("interpreter.sh");
    std::fs::write(&interpreter, "#!/bin/sh\necho $$ >> \"$MEMTRACE_TEST_MARKER\"\n").unwrap();
    std::fs::set_permissions(&interpreter, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let program = program_with_interpreter("clean_script_interp", &interpreter);
    // The kernel refuses a script as an ELF interpreter: the command cannot start.
    let (output, report) = run_with_marker(dir.path(), &marker, &[program.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(126));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        lines[0],
        format!("memtrace: error: cannot start {}: Input/output error (os error 5)", program.display())
    );
    assert!(report.is_none());
    assert!(!marker.exists(), "the interpreter ran: {:?}", std::fs::read_to_string(&marker));
    // Nor when a followed process execs the program.
    let script = format!("{}; exit 0", program.display());
    let (output, _) = run_with_marker(dir.path(), &marker, &["sh", "-c", &script]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!marker.exists(), "the interpreter ran: {:?}", std::fs::read_to_string(&marker));
    assert_no_probes_left();
}

#[test]
fn an_exec_in_a_chroot_is_probed_in_the_libraries_of_its_root() {
    let _serial = serial();
    // A root of its own: the program, and copies of libc and the dynamic loader (other files
    // than the host's, so that probes on the host's libc would see nothing).
    let root = tempfile::tempdir().unwrap();
    let copy = |from: &str, to: &str| {
        let to = root.path().join(to.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(std::fs::canonicalize(from).unwrap(), &to).unwrap();
    };
    copy("/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6");
    copy("/lib64/ld-linux-x86-64.so.2", "/lib64/ld-linux-x86-64.so.2");
    copy(build_c("leaky").to_str().unwrap(), "/leaky");
    let (output, report) = memtrace_json(&["run"], &["chroot", root.path().to_str().unwrap(), "/leaky"]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "leaky: done\n");
    assert_eq!(report["summary"]["outstanding_bytes"], 9300, "{report:#}");
    assert_eq!(stack_from(&report, "leak_with_malloc")["bytes"], 4000);
    assert!(output.stderr.is_empty(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_no_probes_left();
}
