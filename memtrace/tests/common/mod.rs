//! Shared helpers for memtrace's integration tests: build the C test programs, run the real
//! `memtrace` binary against them, read its JSON, and check that no probe stays behind.
#![allow(dead_code)] // each test binary uses its own subset

pub mod chains;

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Mutex, MutexGuard},
};

use serde_json::Value;

/// Tests run one memtrace at a time, so that "no memtrace program is loaded afterwards" is a
/// meaningful check: the mutex orders the tests of one binary, the file lock every test process
/// on the machine (two checkouts testing at once).
static SERIAL: Mutex<()> = Mutex::new(());
const MACHINE_LOCK: &str = "/tmp/memtrace-tests.lock";

pub struct Serial {
    _in_process: MutexGuard<'static, ()>,
    _machine: File,
}

pub fn serial() -> Serial {
    let in_process = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let machine =
        File::options().create(true).truncate(false).write(true).open(MACHINE_LOCK).expect("the test lock file opens");
    machine.lock().expect("the test lock is taken");
    Serial { _in_process: in_process, _machine: machine }
}

pub fn memtrace_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_memtrace"))
}

pub fn memtrace() -> Command {
    Command::new(memtrace_bin())
}

fn programs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs")
}

/// The 1-based line of the first line of tests/programs/SOURCE containing `needle`; a bare
/// name means NAME.c.
pub fn line_of(source: &str, needle: &str) -> u64 {
    let file = if source.contains('.') { source.to_owned() } else { format!("{source}.c") };
    let text = std::fs::read_to_string(programs_dir().join(&file)).expect("test program source");
    let index = text.lines().position(|line| line.contains(needle));
    index.map(|index| index as u64 + 1).unwrap_or_else(|| panic!("{needle:?} not in {file}"))
}

/// Compiles tests/programs/NAME.c without optimization and with frame pointers (so that the
/// kernel's frame-pointer unwinder sees every frame), into the test's scratch directory.
pub fn build_c(name: &str) -> PathBuf {
    build(&format!("{name}.c"), "cc", &["-O0", "-g", "-fno-omit-frame-pointer"])
}

/// Compiles tests/programs/SOURCE with `compiler` and `flags` into the scratch directory; the
/// binary is named after the source without its extension.
pub fn build(source: &str, compiler: &str, flags: &[&str]) -> PathBuf {
    let name = Path::new(source).file_stem().and_then(|name| name.to_str()).expect("a file name");
    build_variant(source, name, compiler, flags, &[])
}

/// Like [`build`], naming the binary `name` and linking `libs` after the source.
pub fn build_variant(source: &str, name: &str, compiler: &str, flags: &[&str], libs: &[&str]) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("programs");
    std::fs::create_dir_all(&out).expect("scratch directory");
    let binary = out.join(name);
    // Tests of one file run in parallel and may build the same program at once: each builds
    // its own file and renames it into place, so that no test runs a half-written binary.
    let unique = format!("{name}.{}.{:?}.partial", std::process::id(), std::thread::current().id());
    let partial = out.join(unique.replace(['(', ')'], ""));
    let status = Command::new(compiler)
        .args(flags)
        .arg("-o")
        .arg(&partial)
        .arg(programs_dir().join(source))
        .args(libs)
        .status()
        .unwrap_or_else(|error| panic!("{compiler} does not run: {error}"));
    assert!(status.success(), "compiling {source} as {name} failed");
    std::fs::rename(&partial, &binary).expect("moving the built program into place");
    binary
}

/// Source path of a test program, as DWARF records it.
pub fn source_path(source: &str) -> String {
    programs_dir().join(source).display().to_string()
}

/// Runs memtrace with `args`, asking for a JSON report in a file; returns its output and report.
pub fn memtrace_json(args: &[&str], target: &[&str]) -> (Output, Value) {
    memtrace_json_env(args, target, &[])
}

/// Like [`memtrace_json`], with `env` added to memtrace's environment (the target inherits it).
pub fn memtrace_json_env(args: &[&str], target: &[&str], env: &[(&str, &str)]) -> (Output, Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let report_path = dir.path().join("report.json");
    let output = memtrace()
        .args(args)
        .args(["--format", "json", "-o"])
        .arg(&report_path)
        .arg("--")
        .args(target)
        .envs(env.iter().copied())
        .output()
        .expect("memtrace runs");
    let text = std::fs::read_to_string(&report_path)
        .unwrap_or_else(|error| panic!("no report ({error}); stderr: {}", String::from_utf8_lossy(&output.stderr)));
    let report = serde_json::from_str(&text).expect("the report is JSON");
    assert_matches_schema(&report_path);
    (output, report)
}

/// Validates a JSON report against docs/report.schema.json with tests/tools/validate_report.py
/// (Python's jsonschema, installed by cargo xtask setup for the system /usr/bin/python3).
pub fn assert_matches_schema(report: &Path) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("/usr/bin/python3")
        .arg(manifest.join("tests/tools/validate_report.py"))
        .arg(manifest.join("../docs/report.schema.json"))
        .arg(report)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the report does not match docs/report.schema.json:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// [`memtrace_json`] for a run that must succeed: fails the test with memtrace's stderr when
/// it exits with anything but 0.
pub fn memtrace_json_ok(args: &[&str], target: &[&str]) -> (Output, Value) {
    memtrace_json_ok_env(args, target, &[])
}

/// [`memtrace_json_env`], requiring exit code 0.
pub fn memtrace_json_ok_env(args: &[&str], target: &[&str], env: &[(&str, &str)]) -> (Output, Value) {
    let (output, report) = memtrace_json_env(args, target, env);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    (output, report)
}

/// The stack whose innermost frame is `function`.
pub fn stack_from<'a>(report: &'a Value, function: &str) -> &'a Value {
    report["stacks"]
        .as_array()
        .expect("stacks is an array")
        .iter()
        .find(|stack| stack["frames"][0]["function"] == function)
        .unwrap_or_else(|| panic!("no stack from {function} in {report:#}"))
}

/// Names of memtrace's kernel programs (as the kernel keeps them: at most 15 characters).
pub const PROGRAM_NAMES: [&str; 27] = [
    "floor_enter",
    "floor_exit",
    "size_enter",
    "calloc_enter",
    "aligned_enter",
    "realloc_enter",
    "reallocarray_en",
    "posix_memalign_",
    "alloc_exit",
    "free_enter",
    "delete_enter",
    "wrapper_enter",
    "wrapper_exit",
    "mmap_enter",
    "mmap_exit",
    "munmap_enter",
    "munmap_exit",
    "mremap_enter",
    "mremap_exit",
    "brk_enter",
    "brk_exit",
    "shmat_enter",
    "shmat_exit",
    "shmdt_enter",
    "fault_minor",
    "fault_major",
    "loader_mapped",
];

/// memtrace programs loaded in the kernel right now, per `bpftool prog list`.
pub fn loaded_memtrace_programs() -> Vec<String> {
    memtrace_programs(false)
}

/// memtrace programs loaded that no running process holds (see `memtrace_programs`).
pub fn abandoned_memtrace_programs() -> Vec<String> {
    memtrace_programs(true)
}

/// memtrace programs loaded; with `abandoned`, only those no running process holds an fd to.
/// A program a live process holds belongs to a memtrace still running (another checkout's
/// tests, or one run by hand); one nobody holds was left behind.
fn memtrace_programs(abandoned: bool) -> Vec<String> {
    let output = Command::new("bpftool")
        .args(["--json", "prog", "list"])
        .output()
        .expect("bpftool runs (cargo xtask setup installs Debian's bpftool)");
    assert!(output.status.success(), "bpftool failed: {}", String::from_utf8_lossy(&output.stderr));
    let programs: Value = serde_json::from_slice(&output.stdout).expect("bpftool prints JSON");
    let held = if abandoned { programs_held_by_processes() } else { Default::default() };
    programs
        .as_array()
        .expect("a list of programs")
        .iter()
        .filter(|program| !program["id"].as_u64().is_some_and(|id| held.contains(&id)))
        .filter_map(|program| program["name"].as_str())
        .filter(|name| PROGRAM_NAMES.contains(name))
        .map(str::to_owned)
        .collect()
}

/// The ids of the BPF programs some live process holds an fd to (a program fd, or a link fd
/// naming its program), from /proc/*/fdinfo.
fn programs_held_by_processes() -> std::collections::HashSet<u64> {
    let mut held = std::collections::HashSet::new();
    let Ok(processes) = std::fs::read_dir("/proc") else { return held };
    for process in processes.flatten() {
        let Ok(fds) = std::fs::read_dir(process.path().join("fdinfo")) else { continue };
        for fd in fds.flatten() {
            let Ok(info) = std::fs::read_to_string(fd.path()) else { continue };
            for line in info.lines() {
                if let Some(id) = line.strip_prefix("prog_id:").and_then(|id| id.trim().parse().ok()) {
                    held.insert(id);
                }
            }
        }
    }
    held
}

/// No memtrace program is left behind. Checked a few times over two seconds: another
/// checkout's memtrace exiting between the program listing and the fd scan looks abandoned
/// for a moment (its programs are freed a little after its fds close); one really left behind
/// stays.
pub fn assert_no_probes_left() {
    let mut left = abandoned_memtrace_programs();
    for _ in 0..10 {
        if left.is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        left = abandoned_memtrace_programs();
    }
    assert!(left.is_empty(), "memtrace programs still loaded: {left:?}");
}

pub fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr).lines().map(str::to_owned).collect()
}

/// Compiles memtrace/proto/profile.proto for Python with protoc; returns the directory.
pub fn compile_profile_proto(dir: &Path) -> PathBuf {
    let proto_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let status = Command::new("protoc")
        .arg(format!("--proto_path={}", proto_dir.display()))
        .arg(format!("--python_out={}", dir.display()))
        .arg(proto_dir.join("profile.proto"))
        .status()
        .expect("protoc runs (cargo xtask setup installs protobuf-compiler)");
    assert!(status.success(), "protoc failed");
    dir.to_path_buf()
}

/// The profile decoded by tests/tools/decode_pprof.py (the Python protobuf package).
pub fn decode_pprof(profile: &Path, scratch: &Path) -> Value {
    let compiled = compile_profile_proto(scratch);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/decode_pprof.py");
    // Debian's python3-protobuf (installed by cargo xtask setup) is for the system Python, not
    // for another python3 that may come first on PATH (pyenv).
    let output =
        Command::new("/usr/bin/python3").arg(script).arg(&compiled).arg(profile).output().expect("python3 runs");
    assert!(output.status.success(), "decoding failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("the decoder prints JSON")
}

/// One sample of a profile as `go tool pprof -raw` prints it: its values in the order of the
/// sample types, and its labels (`kind`, `leak_kind`, `suppressed`, `pid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSample {
    pub values: Vec<u64>,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// What `go tool pprof -raw ARGS PROFILE` prints (a file or a URL).
pub fn go_pprof_raw(profile: &Path, args: &[&str]) -> String {
    let scratch = tempfile::tempdir().expect("temp dir");
    let output = Command::new("/usr/bin/go")
        .args(["tool", "pprof", "-raw"])
        .args(args)
        .arg(profile)
        // Go wants a home for its caches; the tests' environment may have none.
        .env("HOME", scratch.path())
        .env("GOCACHE", scratch.path().join("cache"))
        .env("PPROF_TMPDIR", scratch.path())
        .output()
        .expect("go tool pprof runs (cargo xtask setup installs golang-go)");
    assert!(output.status.success(), "go tool pprof failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("pprof prints text")
}

/// The samples of `profile` as the real pprof (Debian's golang-go, installed by cargo xtask
/// setup) reads them, with `args` before the file (`-tagfocus=...`).
pub fn go_pprof_samples(profile: &Path, args: &[&str]) -> Vec<RawSample> {
    let text = go_pprof_raw(profile, args);
    let mut lines = text.lines().skip_while(|line| *line != "Samples:").skip(2);
    let mut samples: Vec<RawSample> = Vec::new();
    for line in lines.by_ref() {
        if line == "Locations" {
            break;
        }
        let trimmed = line.trim();
        match trimmed.split_once(':') {
            // "  600  19200  300  9600: 5 6 7 8 9": values, then location ids.
            Some((values, _))
                if values.split_whitespace().all(|value| value.parse::<u64>().is_ok()) && !values.is_empty() =>
            {
                let values = values.split_whitespace().map(|value| value.parse().unwrap()).collect();
                samples.push(RawSample { values, labels: Default::default() });
            }
            // "kind:[heap] leak_kind:[definitely_lost] suppressed:[false]", "pid:[1234]".
            _ => {
                let sample = samples.last_mut().unwrap_or_else(|| panic!("a label before any sample: {text}"));
                for label in trimmed.split_whitespace() {
                    let (key, value) =
                        label.split_once(":[").unwrap_or_else(|| panic!("not a label: {label:?} in {text}"));
                    sample.labels.insert(key.to_owned(), value.trim_end_matches(']').to_owned());
                }
            }
        }
    }
    samples
}

/// Validates JUnit XML against the Jenkins xUnit plugin's junit-10.xsd (tests/data) with
/// Python's xmlschema (Debian's python3-xmlschema); returns its complaint when it is not valid.
pub fn junit_schema_error(xml: &Path) -> Option<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("/usr/bin/python3")
        .arg(manifest.join("tests/tools/validate_junit.py"))
        .arg(manifest.join("tests/data/junit-10.xsd"))
        .arg(xml)
        .output()
        .expect("python3 runs");
    (!output.status.success())
        .then(|| format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

/// The test cases xunit-viewer (npm, installed by `cargo xtask setup`) shows for a JUnit file
/// in its console view, each as its mark (`✗` failed, `✓` passed, `⊘` skipped) and name.
pub fn xunit_viewer_cases(xml: &Path) -> Vec<(String, String)> {
    let viewer =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/xunit-viewer/node_modules/.bin/xunit-viewer");
    let output = Command::new(&viewer)
        .arg("-r")
        .arg(xml)
        .args(["--console", "--no-color", "--clear", "false"])
        .output()
        .unwrap_or_else(|error| panic!("{} runs (cargo xtask setup installs it): {error}", viewer.display()));
    assert!(output.status.success(), "xunit-viewer failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let (mark, name) = line.split_once(' ')?;
            ["✗", "✓", "⊘"].contains(&mark).then(|| (mark.to_owned(), name.trim().to_owned()))
        })
        .collect()
}

/// The JUnit XML as junitparser (Debian's python3-junitparser) reads it: suites with their
/// counts, cases with their names and results (tests/tools/junit_cases.py).
pub fn junitparser_read(xml: &Path) -> Value {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("/usr/bin/python3")
        .arg(manifest.join("tests/tools/junit_cases.py"))
        .arg(xml)
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "junitparser failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("junit_cases.py prints JSON")
}
