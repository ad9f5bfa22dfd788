//! Least privilege: memtrace runs as an ordinary user holding exactly the capabilities
//! docs/security.md lists (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE,
//! CAP_DAC_READ_SEARCH, given with setpriv as ambient capabilities), and says which one is
//! missing, in one line, when it lacks one.
mod common;

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Child, Command, Output, Stdio},
};

use common::*;
use serde_json::Value;

/// The user memtrace runs as: `nobody`.
const USER: &str = "65534";
const CAPABILITIES: &str = "+bpf,+perfmon,+sys_admin,+sys_ptrace,+dac_read_search";

/// memtrace as `nobody` with these capabilities (and no others).
fn memtrace_as_nobody(capabilities: &str) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid", USER, "--regid", USER, "--clear-groups"])
        .arg(format!("--inh-caps={capabilities}"))
        .arg(format!("--ambient-caps={capabilities}"))
        .arg(memtrace_bin());
    command
}

/// A directory `nobody` may write its report into.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a scratch directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    dir
}

/// A copy of a test program that `nobody` may run (the build directory may not be reachable).
fn runnable_by_nobody(binary: &Path, dir: &Path) -> std::path::PathBuf {
    let copy = dir.join(binary.file_name().expect("a file name"));
    std::fs::copy(binary, &copy).expect("copied");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    copy
}

fn report(output: &Output, path: &Path) -> Value {
    assert_eq!(output.status.code(), Some(0), "{}", stderr(output));
    serde_json::from_str(&std::fs::read_to_string(path).expect("the report")).expect("JSON")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_works_with_exactly_the_documented_capabilities() {
    let dir = scratch();
    let program = runnable_by_nobody(&build_c("leaky"), dir.path());
    let report_path = dir.path().join("run.json");
    let _serial = serial();
    let output = memtrace_as_nobody(CAPABILITIES)
        .args(["run", "--format", "json", "-o"])
        .arg(&report_path)
        .arg("--")
        .arg(&program)
        .output()
        .expect("setpriv runs");
    let report = report(&output, &report_path);
    // leaky.c's own numbers: 9,300 bytes in 6 blocks leaked.
    assert_eq!(report["summary"]["outstanding_bytes"], 9300, "{:#}", report["summary"]);
    assert_eq!(report["summary"]["outstanding_allocations"], 6);
    assert_eq!(report["summary"]["definitely_lost_bytes"], 9300);
    assert_eq!(stack_from(&report, "leak_with_calloc")["bytes"], 300);
    assert_no_probes_left();
}

#[test]
fn record_scans_a_root_process_with_exactly_the_documented_capabilities() {
    // A process of another user (root): its /proc files and memory need CAP_SYS_PTRACE, its
    // binary CAP_DAC_READ_SEARCH.
    let binary = build_c("lk_serve");
    let mut child = Running(Command::new(&binary).stdout(Stdio::piped()).spawn().expect("lk_serve starts"));
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().expect("stdout")).read_line(&mut line).expect("its pid");
    let pid = line.trim().to_owned();
    let dir = scratch();
    let report_path = dir.path().join("record.json");
    let _serial = serial();
    let output = memtrace_as_nobody(CAPABILITIES)
        .args(["record", "-p", &pid, "--duration", "1s", "--scan", "--format", "json", "-o"])
        .arg(&report_path)
        .output()
        .expect("setpriv runs");
    let report = report(&output, &report_path);
    let lost = stack_from(&report, "lose_in_round");
    assert_eq!(lost["leak_kind"], "definitely_lost", "{:#}", report["stacks"]);
    let lost_blocks = lost["allocations"].as_u64().expect("a count");
    assert!(lost_blocks >= 20, "{lost_blocks} blocks lost in 1 s");
    assert_eq!(report["summary"]["definitely_lost_bytes"].as_u64(), Some(100 * lost_blocks));
    assert_no_probes_left();
}

#[test]
fn each_missing_capability_is_named_in_one_line() {
    let _serial = serial();
    for missing in ["bpf", "perfmon", "sys_admin", "sys_ptrace", "dac_read_search"] {
        let capabilities: Vec<String> = CAPABILITIES
            .split(',')
            .filter(|capability| capability.trim_start_matches('+') != missing)
            .map(str::to_owned)
            .collect();
        let output = memtrace_as_nobody(&capabilities.join(","))
            .args(["run", "--", "/bin/true"])
            .output()
            .expect("setpriv runs");
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        let lines = stderr_lines(&output);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let expected = format!("(missing: CAP_{})", missing.to_uppercase());
        assert!(lines[0].contains(&expected), "{lines:?}");
    }
}
