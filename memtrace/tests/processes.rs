//! Processes: children followed through fork and exec in run mode, each reported on its own;
//! several pids in record mode; a process that lives one millisecond.
mod common;

use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use common::*;
use serde_json::Value;

fn process(report: &Value, pid: u64) -> &Value {
    report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|process| process["pid"] == pid)
        .unwrap_or_else(|| panic!("no process {pid} in {report:#}"))
}

#[test]
fn run_follows_fork_and_exec_and_reports_each_process() {
    let _serial = serial();
    let family = build_c("family");
    let leaky = build_c("leaky");
    let (output, report) = memtrace_json_ok(&["run"], &[family.to_str().unwrap(), leaky.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "leaky: done\n");

    let processes = report["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 3, "{report:#}");
    let parent = report["target"]["pid"].as_u64().unwrap();
    let parent_summary = &process(&report, parent)["summary"];
    assert_eq!(parent_summary["outstanding_bytes"], 100);
    assert_eq!(process(&report, parent)["exit_code"], 0);

    let children: Vec<&Value> = processes.iter().filter(|process| process["parent_pid"] == parent).collect();
    assert_eq!(children.len(), 2);
    let leaker = children.iter().find(|child| child["exit_code"] == 4).expect("the child that exits 4");
    assert_eq!(leaker["summary"]["outstanding_bytes"], 200);
    assert_eq!(leaker["summary"]["total_allocations"], 1);
    assert_eq!(stack_from(&report, "child_leak")["pid"], leaker["pid"]);

    let execer = children.iter().find(|child| child["exit_code"] == 0).expect("the child that execs");
    assert_eq!(execer["command"][0], leaky.to_str().unwrap());
    let summary = &execer["summary"];
    // leaky's own numbers; the 50 bytes allocated before exec died with the old image.
    assert_eq!(summary["outstanding_bytes"], 9300);
    assert_eq!(summary["outstanding_allocations"], 6);
    assert_eq!(summary["dropped_by_exec"], 1);
    assert_eq!(summary["total_allocations"], 107 + 1);
    assert_eq!(stack_from(&report, "leak_with_malloc")["pid"], execer["pid"]);

    // The top-level summary is the sum.
    assert_eq!(report["summary"]["outstanding_bytes"], 100 + 200 + 9300);
    assert_eq!(report["summary"]["lost_events"], 0);
    assert_no_probes_left();
}

#[test]
fn run_without_following_forks_traces_the_command_alone() {
    let _serial = serial();
    let family = build_c("family");
    let leaky = build_c("leaky");
    let (output, report) =
        memtrace_json(&["run", "--follow-forks=false"], &[family.to_str().unwrap(), leaky.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(report["processes"].as_array().unwrap().len(), 1);
    assert_eq!(report["summary"]["outstanding_bytes"], 100);
    assert_eq!(stack_from(&report, "parent_leak")["bytes"], 100);
    assert_no_probes_left();
}

#[test]
fn a_process_that_lives_one_millisecond_is_fully_reported_and_symbolized() {
    let _serial = serial();
    let ending = build_c("ending");
    // It allocates once and returns at once: about a millisecond from exec to exit.
    let started = std::time::Instant::now();
    let status = Command::new(&ending).status().unwrap();
    assert!(status.success() && started.elapsed() < Duration::from_millis(200));
    let (output, report) = memtrace_json(&["run"], &[ending.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    let stack = stack_from(&report, "main");
    assert_eq!(stack["bytes"], 64);
    assert_eq!(stack["frames"][0]["line"], line_of("ending", "malloc(64)"));
    assert_eq!(stack["frames"][0]["file"], source_path("ending.c"));
    assert_no_probes_left();
}

#[test]
fn record_traces_several_processes_at_once() {
    let _serial = serial();
    let steady = build_c("steady");
    let mut first = Command::new(&steady).stdout(Stdio::null()).spawn().unwrap();
    let mut second = Command::new(&steady).stdout(Stdio::null()).spawn().unwrap();
    thread::sleep(Duration::from_millis(100));
    let pids = format!("{},{}", first.id(), second.id());
    let (output, report) = memtrace_json(&["record", "-p", &pids, "--duration", "500ms"], &[]);
    let _ = (first.kill(), second.kill(), first.wait(), second.wait());
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let processes = report["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 2);
    let mut total = 0;
    for process in processes {
        // One 128-byte leak per 20 ms for 0.5 s each.
        let blocks = process["summary"]["outstanding_allocations"].as_u64().unwrap();
        assert!((20..=27).contains(&blocks), "{process:#}");
        assert_eq!(process["summary"]["outstanding_bytes"].as_u64().unwrap(), 128 * blocks);
        total += blocks;
    }
    assert_eq!(report["summary"]["outstanding_allocations"].as_u64().unwrap(), total);
    let stacks = report["stacks"].as_array().unwrap();
    assert_eq!(stacks.len(), 2, "one leak_one stack per process");
    assert!(stacks.iter().all(|stack| stack["frames"][0]["function"] == "leak_one"));
    // Repeated -p works the same.
    let mut third = Command::new(&steady).stdout(Stdio::null()).spawn().unwrap();
    let mut fourth = Command::new(&steady).stdout(Stdio::null()).spawn().unwrap();
    let (output, report) = memtrace_json(
        &["record", "-p", &third.id().to_string(), "-p", &fourth.id().to_string(), "--duration", "200ms"],
        &[],
    );
    let _ = (third.kill(), fourth.kill(), third.wait(), fourth.wait());
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(report["processes"].as_array().unwrap().len(), 2);
    assert_no_probes_left();
}
