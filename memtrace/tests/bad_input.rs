//! Bad input: one clear line on stderr, a non-zero exit, and no probe left behind.
mod common;

use std::{os::unix::fs::PermissionsExt, process::Command};

use common::*;

fn assert_one_line_error(output: &std::process::Output, expected: &str) {
    let lines = stderr_lines(output);
    assert_eq!(lines.len(), 1, "expected one line on stderr, got {lines:?}");
    assert!(lines[0].starts_with("memtrace: error: "), "{lines:?}");
    assert!(lines[0].contains(expected), "{expected:?} not in {lines:?}");
}

/// A pid that no process has: one that just exited and was reaped.
fn vanished_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn a_pid_that_does_not_exist() {
    let _serial = serial();
    let pid = vanished_pid().to_string();
    let output = memtrace().args(["record", "-p", &pid]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_one_line_error(&output, &format!("process {pid} does not exist"));
    assert!(output.stdout.is_empty());
    // With -o, the file is not left behind half-made.
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let output = memtrace().args(["record", "-p", &pid, "-o"]).arg(&report).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(!report.exists());
    assert_no_probes_left();
}

#[test]
fn a_command_that_is_not_found() {
    let _serial = serial();
    let output = memtrace().args(["run", "--", "no-such-command-memtrace"]).output().unwrap();
    assert_eq!(output.status.code(), Some(127));
    assert_one_line_error(&output, "command not found: no-such-command-memtrace");
    assert_no_probes_left();
}

#[test]
fn a_file_that_is_not_executable() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.txt");
    std::fs::write(&data, "not a program").unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = memtrace().arg("run").arg("--").arg(&data).output().unwrap();
    assert_eq!(output.status.code(), Some(126));
    assert_one_line_error(&output, &format!("{}: permission denied", data.display()));
    assert_no_probes_left();
}

#[test]
fn an_unwritable_output_path_fails_before_the_target_starts() {
    let _serial = serial();
    let marker = tempfile::tempdir().unwrap().keep().join("target-ran");
    let output = memtrace()
        .args(["run", "-o", "/nonexistent-memtrace-dir/report.json", "--", "touch"])
        .arg(&marker)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_one_line_error(&output, "cannot write the report to /nonexistent-memtrace-dir/report.json");
    assert!(!marker.exists(), "the target must not run when the report cannot be written");
    assert_no_probes_left();
}

#[test]
fn missing_privileges() {
    let _serial = serial();
    // A copy anyone may execute, wherever the checkout lives.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.path().join("memtrace");
    std::fs::copy(memtrace_bin(), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    for args in [vec!["run", "--", "true"], vec!["record", "-p", "1"]] {
        let output = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
            .arg(&binary)
            .args(&args)
            .output()
            .expect("setpriv runs");
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert_one_line_error(&output, "memtrace needs root");
    }
    assert_no_probes_left();
}

#[test]
fn an_exec_failure_is_reported_with_the_reason() {
    let _serial = serial();
    // A file with the execute bit that the kernel cannot run.
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus");
    std::fs::write(&bogus, b"\x7fELF not really").unwrap();
    std::fs::set_permissions(&bogus, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = memtrace().arg("run").arg("--").arg(&bogus).output().unwrap();
    assert_ne!(output.status.code(), Some(0));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("memtrace: error: "), "{lines:?}");
    assert!(lines[0].contains("bogus"), "{lines:?}");
    assert_no_probes_left();
}

#[test]
fn a_report_with_the_largest_numbers_renders_in_every_format() {
    // Every count u64::MAX, times of 1e308: arithmetic on them once panicked (text, folded, pprof).
    let crafted = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/crafted_report.json");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for format in ["text", "json", "junit", "folded", "svg", "pprof"] {
        for weight in ["bytes", "allocations", "faults"] {
            let output = memtrace()
                .arg("report")
                .arg(&crafted)
                .args(["--format", format, "--weight", weight, "-o"])
                .arg(&out)
                .output()
                .unwrap();
            assert_eq!(output.status.code(), Some(0), "{format} {weight}: {}", String::from_utf8_lossy(&output.stderr));
            assert_eq!(stderr_lines(&output), Vec::<String>::new(), "{format} {weight}");
        }
    }
    let render = |args: &[&str]| {
        let output = memtrace().arg("report").arg(&crafted).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let text = render(&[]);
    let max = "18,446,744,073,709,551,615";
    assert!(text.contains(&format!("\nOutside malloc: {max} bytes mapped, {max} bytes of shared memory, {max} bytes of break growth still held\n")), "{text}");
    assert!(text.contains("\n... 18,446,744,073,709,551,610 more stacks (use --top N to see more)\n"), "{text}");
    assert_eq!(render(&["--format", "folded", "--weight", "faults"]), "pid 7;touch 18446744073709551615\n");
    let folded = render(&["--format", "folded"]);
    assert!(folded.contains("pid 4294967295;[definitely lost];main;grab 18446744073709551615\n"), "{folded}");
}

/// Runs `memtrace report` on `file`, failing the test if it takes more than 20 s.
fn report_within_20_seconds(file: &std::path::Path) -> std::process::Output {
    let mut child = memtrace()
        .arg("report")
        .arg(file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("memtrace report {} did not finish within 20 s", file.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_saved_report_that_is_no_regular_file_or_too_large_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("report.json");
    let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0);
    // A file of 1 GiB and a byte (sparse: it costs nothing to make).
    let large = dir.path().join("large.json");
    std::fs::File::create(&large).unwrap().set_len((1 << 30) + 1).unwrap();
    let zero = std::path::Path::new("/dev/zero");
    for (file, reason) in [
        (fifo.as_path(), "it is a FIFO, not a regular file"),
        (zero, "it is a character device, not a regular file"),
        (large.as_path(), "it is larger than 1,073,741,824 bytes, the most memtrace reads from it"),
    ] {
        let output = report_within_20_seconds(file);
        assert_eq!(output.status.code(), Some(1), "{}", file.display());
        assert_eq!(stderr_lines(&output), [format!("memtrace: error: cannot read {}: {reason}", file.display())]);
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn control_characters_in_a_report_never_reach_the_terminal() {
    // Symbol names, paths and commands are the traced program's (or a JSON file's) to choose.
    let crafted = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/crafted_report.json");
    let mut report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(crafted).unwrap()).unwrap();
    let evil = "evil\u{1b}[31m\u{7}\nname\u{9b}2J\u{202e}";
    report["target"]["command"] = serde_json::json!([evil]);
    report["processes"][1]["command"] = serde_json::json!([evil]);
    report["allocator"] = serde_json::json!(evil);
    for field in ["address", "function", "file", "module", "module_offset"] {
        report["stacks"][0]["frames"][0][field] = serde_json::json!(evil);
        report["faults"]["stacks"][0]["frames"][0][field] = serde_json::json!(evil);
    }
    report["stacks"][1]["suppressed_by"] = serde_json::json!(evil);
    report["stacks"][2]["unavailable"] = serde_json::json!(evil);
    report["memory"][0]["largest"][0]["path"] = serde_json::json!(evil);
    report["memory"][0]["cgroup"]["path"] = serde_json::json!(evil);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("evil.json");
    std::fs::write(&file, report.to_string()).unwrap();
    let output = memtrace().arg("report").arg(&file).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let unsafe_char = text.chars().find(|&c| (c.is_control() && c != '\n') || c == '\u{202e}');
    assert_eq!(unsafe_char, None, "{text}");
    let shown = "evil\\x1b[31m\\x07\\x0aname\\u{9b}2J\\u{202e}";
    assert!(text.contains(&format!("memtrace: recorded pid 7 ({shown}) for ")), "{text}");
    assert!(text.contains(&format!("    #0  {shown} in {shown} at {shown}:4294967295 ({shown})\n")), "{text}");
    assert!(text.contains(&format!("    (suppressed by {shown})\n")), "{text}");
    assert!(text.contains(&format!("    (stack unavailable: {shown})\n")), "{text}");
    // Every field the text shows: each occurrence is the escaped one.
    assert_eq!(text.matches("evil").count(), text.matches(shown).count(), "{text}");
}

#[test]
fn the_cause_of_an_error_is_said_once() {
    let _serial = serial();
    // A script whose interpreter is an ELF file without the execute bit: execve fails with
    // EACCES, which once printed "Permission denied (os error 13): Permission denied (os error 13)".
    let dir = tempfile::tempdir().unwrap();
    let interpreter = dir.path().join("interpreter");
    std::fs::copy("/bin/true", &interpreter).unwrap();
    std::fs::set_permissions(&interpreter, std::fs::Permissions::from_mode(0o644)).unwrap();
    let script = dir.path().join("script");
    std::fs::write(&script, format!("#!{}\n", interpreter.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = memtrace().arg("run").arg("--").arg(&script).output().unwrap();
    assert_eq!(output.status.code(), Some(126));
    assert_eq!(
        stderr_lines(&output),
        [format!("memtrace: error: cannot start {}: Permission denied (os error 13)", script.display())]
    );
    assert_no_probes_left();
}

/// Runs `memtrace run -- true` with at most `limit` open files; its exit code and stderr. Fails
/// the test when stderr stays open 10 s after memtrace exited (a process it started outlived
/// it, holding its stderr, as a shell's pipeline would see).
fn run_with_file_limit(limit: u64) -> (Option<i32>, String) {
    use std::{io::Read, os::unix::process::CommandExt, process::Stdio, sync::mpsc, time::Duration};
    let mut command = memtrace();
    command.args(["run", "--", "true"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let rlimit = libc::rlimit { rlim_cur: limit, rlim_max: limit };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = sender.send(text);
    });
    let status = child.wait().unwrap();
    let text = receiver
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("with {limit} files, a process memtrace started outlived it holding its stderr"));
    (status.code(), text)
}

#[test]
fn running_out_of_file_descriptors_keeps_the_os_error() {
    let _serial = serial();
    let mut attach_failed = false;
    for limit in (32..=256).step_by(8) {
        let (code, stderr) = run_with_file_limit(limit);
        if code == Some(0) {
            break;
        }
        assert_eq!(code, Some(1), "{limit}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{limit}: {lines:?}");
        assert!(lines[0].starts_with("memtrace: error: "), "{limit}: {lines:?}");
        // Wherever memtrace ran out (loading, attaching, starting the command), the OS says why.
        assert!(lines[0].ends_with(": Too many open files (os error 24)"), "{limit}: {lines:?}");
        attach_failed |= lines[0].contains("failed: creating its uprobe_multi link: Too many open files (os error 24)");
    }
    assert!(attach_failed, "no limit made a uprobe_multi link fail");
    assert_no_probes_left();
}

#[test]
fn an_empty_or_directory_command_is_not_found_as_in_a_shell() {
    let _serial = serial();
    // bash: `'': command not found`, 127.
    let output = memtrace().args(["run", "--", ""]).output().unwrap();
    assert_eq!(output.status.code(), Some(127));
    assert_eq!(stderr_lines(&output), ["memtrace: error: command not found: ''"]);
    // A directory in PATH with the command's name is passed over: not found either.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("memtrace-test-cmd")).unwrap();
    let output = memtrace().args(["run", "--", "memtrace-test-cmd"]).env("PATH", dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(127));
    assert_eq!(stderr_lines(&output), ["memtrace: error: command not found: memtrace-test-cmd"]);
    let status = Command::new("/bin/bash")
        .args(["-c", "memtrace-test-cmd 2>/dev/null"])
        .env("PATH", dir.path())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(127), "bash says so too");
    assert_no_probes_left();
}
