//! Whole test suites in one trace: `memtrace run --check -- make test` (here a shell script
//! running five test binaries, two of them leaking), each process decided and reported on its
//! own, `--trace-only` leaving out the shell that runs them.
mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// The suite's binaries: (name, blocks of 64 bytes it loses), in the order the script runs them.
const SUITE: [(&str, u32); 5] = [("t_parse", 0), ("t_cache", 1), ("t_format", 0), ("t_queue", 2), ("t_math", 0)];

/// Builds the five test binaries (one directory) and a script that runs them in order; returns
/// the script.
fn suite(dir: &Path) -> PathBuf {
    let mut binaries = Vec::new();
    for (name, leaked) in SUITE {
        let define = format!("-DLEAKED_BLOCKS={leaked}");
        binaries.push(build_variant(
            "suite_case.c",
            name,
            "cc",
            &["-O0", "-g", "-fno-omit-frame-pointer", &define],
            &[],
        ));
    }
    let script = dir.join("run_tests.sh");
    let lines: Vec<String> = binaries.iter().map(|binary| format!("{} || status=1", binary.display())).collect();
    std::fs::write(&script, format!("status=0\n{}\nexit $status\n", lines.join("\n"))).unwrap();
    script
}

/// A test case as junitparser reads it: (class name, name, its result's message or `passed`).
type Case = (String, String, String);

fn binary(name: &str) -> String {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("programs").join(name).display().to_string()
}

#[test]
fn a_suite_run_by_a_script_is_checked_per_process_and_the_script_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let script = suite(dir.path());
    let (xml, json) = (dir.path().join("suite.xml"), dir.path().join("suite.json"));
    let _serial = serial();
    let run = |format: &str, out: &Path| {
        memtrace()
            .args(["run", "--check", "--trace-only", "*/t_*", "--format", format, "-o"])
            .arg(out)
            .args(["--", "sh"])
            .arg(&script)
            .output()
            .unwrap()
    };
    let output = run("junit", &xml);
    // The script succeeded; two of its processes leaked: the check fails, and says which.
    assert_eq!(output.status.code(), Some(23), "{}", String::from_utf8_lossy(&output.stderr));
    let (cache, queue) = (binary("t_cache"), binary("t_queue"));
    let decision = stderr_lines(&output).into_iter().find(|line| line.starts_with("memtrace: check")).unwrap();
    let (head, tail) = decision.split_once(" in 2 processes: pid ").unwrap_or_else(|| panic!("{decision}"));
    assert_eq!(head, "memtrace: check failed: 192 bytes in 3 blocks definitely lost or indirectly lost, from 2 stacks");
    assert!(
        tail.contains(&format!(" ({cache}), pid ")) && tail.ends_with(&format!(" ({queue}) (threshold 0 bytes)")),
        "{decision}"
    );

    // JUnit: a suite per test binary, named by its command line, valid for Jenkins.
    assert_eq!(junit_schema_error(&xml), None, "{}", std::fs::read_to_string(&xml).unwrap());
    let read = junitparser_read(&xml);
    assert_eq!(
        (read["tests"].as_u64(), read["failures"].as_u64(), read["errors"].as_u64()),
        (Some(5), Some(2), Some(0)),
        "{read:#}"
    );
    let source = source_path("suite_case.c");
    let leak_line = line_of("suite_case", "malloc(64)");
    let mut suites: Vec<(String, Vec<Case>)> = read["suites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|suite| {
            let cases = suite["cases"].as_array().unwrap().iter().map(|case| {
                let message = case["results"][0]["message"].as_str().unwrap_or("passed").to_owned();
                (case["classname"].as_str().unwrap().to_owned(), case["name"].as_str().unwrap().to_owned(), message)
            });
            (suite["name"].as_str().unwrap().to_owned(), cases.collect())
        })
        .collect();
    suites.sort();
    let passing =
        |name: &str| (binary(name), vec![("memtrace".to_owned(), "no leaks".to_owned(), "passed".to_owned())]);
    let failing = |name: &str, message: &str| {
        let case = format!("definitely lost in leak_case ({source}:{leak_line})");
        (binary(name), vec![("memtrace.definitely_lost".to_owned(), case, message.to_owned())])
    };
    let mut expected = vec![
        passing("t_parse"),
        failing("t_cache", "64 bytes in 1 block definitely lost"),
        passing("t_format"),
        failing("t_queue", "128 bytes in 2 blocks definitely lost"),
        passing("t_math"),
    ];
    expected.sort();
    // The shell and the script are not there.
    assert_eq!(suites, expected);

    // JSON: the five processes with their own leak kinds; the shell is not one of them.
    let output = run("json", &json);
    assert_eq!(output.status.code(), Some(23), "{}", String::from_utf8_lossy(&output.stderr));
    assert_matches_schema(&json);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let mut processes: Vec<(String, u64, u64, u64)> = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|process| {
            let number = |field: &str| process[field].as_u64().unwrap_or_else(|| panic!("no {field} in {process:#}"));
            (
                process["command"][0].as_str().unwrap().to_owned(),
                number("definitely_lost_bytes"),
                number("definitely_lost_blocks"),
                number("scanned_processes"),
            )
        })
        .collect();
    processes.sort();
    let mut expected: Vec<(String, u64, u64, u64)> =
        SUITE.iter().map(|&(name, leaked)| (binary(name), 64 * u64::from(leaked), u64::from(leaked), 1)).collect();
    expected.sort();
    assert_eq!(processes, expected);
    assert_eq!(report["summary"]["definitely_lost_bytes"], 192);
    assert_eq!(report["target"]["command"][0], "sh");
    let failing_pids: Vec<&Value> = report["check"]["failing_processes"].as_array().unwrap().iter().collect();
    assert_eq!(failing_pids.len(), 2);

    // Text: the stacks grouped by process.
    let text = String::from_utf8(memtrace().arg("report").arg(&json).output().unwrap().stdout).unwrap();
    for (name, blocks) in [("t_cache", "1 block"), ("t_queue", "2 blocks")] {
        let heading = text.lines().find(|line| {
            line.starts_with("Process ") && line.contains(&format!("({}): exited with code 0", binary(name)))
        });
        let heading = heading.unwrap_or_else(|| panic!("no heading for {name} in {text}"));
        assert!(
            heading.ends_with(&format!(
                "; definitely lost {} in {blocks}",
                if blocks == "1 block" { "64 bytes" } else { "128 bytes" }
            )),
            "{heading}"
        );
    }
    assert_no_probes_left();
}
