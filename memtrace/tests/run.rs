//! `memtrace run` against real programs with known allocation behaviour, real eBPF.
mod common;

use std::{io::Write, process::Stdio};

use common::*;
use serde_json::json;

#[test]
fn leaky_program_reports_exact_bytes_counts_and_functions() {
    let _serial = serial();
    let leaky = build_c("leaky");
    let (output, report) = memtrace_json(&["run"], &[leaky.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "leaky: done\n");

    let summary = &report["summary"];
    assert_eq!(summary["outstanding_bytes"], 9300);
    assert_eq!(summary["outstanding_allocations"], 6);
    // 4 + 1 + (malloc 50, realloc) + 100 churned.
    assert_eq!(summary["total_allocations"], 107);
    assert_eq!(summary["total_allocated_bytes"], 4000 + 300 + 50 + 5000 + (64..164).sum::<u64>());
    // 100 churned + the block realloc moved away from.
    assert_eq!(summary["total_frees"], 101);
    // churn's free(NULL).
    assert_eq!(summary["null_frees"], 1);
    assert_eq!(summary["unknown_frees"], 0);
    assert_eq!(summary["lost_events"], 0);
    assert_eq!(summary["stacks_total"], 3);
    assert_eq!(report["target"]["exit_code"], 0);
    assert!(report["target"]["pid"].as_u64().unwrap() > 0);

    // Sorted by bytes, each from the function that allocated, with file:line and the caller.
    let expected = [
        ("leak_with_realloc", 5000, 1, "realloc(block, 5000)", "leak_with_realloc();"),
        ("leak_with_malloc", 4000, 4, "malloc(1000)", "leak_with_malloc();"),
        ("leak_with_calloc", 300, 1, "calloc(10, 30)", "leak_with_calloc();"),
    ];
    let stacks = report["stacks"].as_array().unwrap();
    assert_eq!(stacks.len(), expected.len());
    for (stack, (function, bytes, allocations, call, call_in_main)) in stacks.iter().zip(expected) {
        assert_eq!(stack["bytes"], bytes, "{stack:#}");
        assert_eq!(stack["allocations"], allocations, "{stack:#}");
        let top = &stack["frames"][0];
        assert_eq!(top["function"], function, "{stack:#}");
        assert_eq!(top["line"], line_of("leaky", call), "{stack:#}");
        assert!(top["file"].as_str().unwrap().ends_with("tests/programs/leaky.c"), "{stack:#}");
        assert_eq!(top["module"], leaky.to_str().unwrap(), "{stack:#}");
        assert_eq!(top["inlined"], false);
        let caller = &stack["frames"][1];
        assert_eq!(caller["function"], "main", "{stack:#}");
        assert_eq!(caller["line"], line_of("leaky", call_in_main), "{stack:#}");
    }
    assert_no_probes_left();
}

#[test]
fn program_that_frees_everything_reports_nothing_outstanding() {
    let _serial = serial();
    let clean = build_c("clean");
    let (output, report) = memtrace_json(&["run"], &[clean.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "clean: done\n");
    let summary = &report["summary"];
    assert_eq!(summary["outstanding_bytes"], 0);
    assert_eq!(summary["outstanding_allocations"], 0);
    // Per iteration: malloc, calloc, realloc(NULL) and the growing realloc (which also frees).
    assert_eq!(summary["total_allocations"], 50 * 4);
    assert_eq!(summary["total_frees"], 50 * 4);
    assert_eq!(summary["total_allocated_bytes"], (0..50).map(|i| 100 + i + 100 + 10 + 4000).sum::<u64>());
    assert_eq!(summary["lost_events"], 0);
    assert_eq!(report["stacks"], json!([]));
    assert_no_probes_left();
}

#[test]
fn memtrace_exits_with_the_targets_exit_code() {
    let _serial = serial();
    let ending = build_c("ending");
    let (output, report) = memtrace_json(&["run"], &[ending.to_str().unwrap(), "exit", "3"]);
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(report["target"]["exit_code"], 3);
    assert_eq!(report["summary"]["outstanding_bytes"], 64);
    assert_eq!(stack_from(&report, "main")["bytes"], 64);
    assert_no_probes_left();
}

#[test]
fn a_target_killed_by_a_signal_exits_like_a_shell_says() {
    let _serial = serial();
    let ending = build_c("ending");
    let (output, report) = memtrace_json(&["run"], &[ending.to_str().unwrap(), "signal", "15"]);
    assert_eq!(output.status.code(), Some(128 + 15));
    assert_eq!(report["target"]["signal"], 15);
    assert_eq!(report["target"]["exit_code"], serde_json::Value::Null);
    // The memory it held when it died is still reported, with its stack.
    assert_eq!(stack_from(&report, "main")["bytes"], 64);
    assert_no_probes_left();
}

#[test]
fn text_report_goes_to_stderr_and_stdin_stdout_pass_through() {
    let _serial = serial();
    let mut child = memtrace()
        .args(["run", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("memtrace starts");
    child.stdin.take().unwrap().write_all(b"hello through memtrace\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello through memtrace\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("memtrace: ran pid "), "{stderr}");
    assert!(stderr.contains("(cat) for "), "{stderr}");
    assert!(stderr.contains("\nLost: 0 events"), "{stderr}");
    assert_no_probes_left();
}

#[test]
fn text_report_names_functions_with_file_and_line() {
    let _serial = serial();
    let leaky = build_c("leaky");
    let output = memtrace().args(["run", "--top", "2", "--"]).arg(&leaky).output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("9,300 bytes in 6 allocations still outstanding, from 3 stacks"), "{text}");
    let realloc_line =
        format!("in leak_with_realloc at {}:{}", source_path("leaky.c"), line_of("leaky", "realloc(block, 5000)"));
    assert!(text.contains(&realloc_line), "{realloc_line} not in {text}");
    assert!(text.contains("#2: 4,000 bytes in 4 allocations"), "{text}");
    assert!(!text.contains("#3:"), "--top 2 shows two stacks: {text}");
    assert!(text.contains("... 1 more stack (use --top N to see more)"), "{text}");
}

#[test]
fn run_passes_arguments_and_environment_to_the_target() {
    let _serial = serial();
    let output = memtrace()
        .args(["run", "--", "sh", "-c", "echo \"$1 $MEMTRACE_TEST_VAR\"", "sh", "argument"])
        .env("MEMTRACE_TEST_VAR", "variable")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "argument variable\n");
}
