//! `--faults`: minor and major page faults by user stack, from real programs whose faults are
//! known (they count their own with getrusage).
mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Command, Stdio},
};

use common::*;
use serde_json::Value;

/// The fault stack whose innermost frame is `function`.
fn fault_stack<'a>(report: &'a Value, function: &str) -> &'a Value {
    report["faults"]["stacks"]
        .as_array()
        .expect("faults.stacks is an array")
        .iter()
        .find(|stack| stack["frames"][0]["function"] == function)
        .unwrap_or_else(|| panic!("no fault stack from {function} in {:#}", report["faults"]))
}

/// The number after `key` in the program's one line of output.
fn printed(stdout: &[u8], key: &str) -> u64 {
    let text = String::from_utf8_lossy(stdout);
    let mut words = text.split_whitespace();
    words.by_ref().find(|word| *word == key).unwrap_or_else(|| panic!("no {key} in {text:?}"));
    words.next().and_then(|word| word.parse().ok()).unwrap_or_else(|| panic!("no number after {key} in {text:?}"))
}

#[test]
fn touching_fresh_pages_counts_one_minor_fault_each_in_the_touching_function() {
    let _serial = serial();
    let program = build_c("touch_pages");
    let (output, report) = memtrace_json(&["run", "--faults"], &[program.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let own_count = printed(&output.stdout, "minflt");
    const PAGES: u64 = 3000;
    assert!(own_count >= PAGES, "the program saw {own_count} minor faults");

    let stack = fault_stack(&report, "touch_pages");
    let minor = stack["minor"].as_u64().unwrap();
    assert!(minor >= PAGES, "{minor} minor faults in touch_pages: {stack:#}");
    // Within 3% of what the kernel told the program itself.
    let difference = minor.abs_diff(own_count);
    assert!(difference * 100 <= own_count * 3, "memtrace {minor}, getrusage {own_count}: {stack:#}");
    assert_eq!(stack["major"], 0, "{stack:#}");
    // Every one of them in the anonymous mapping.
    assert_eq!(stack["kinds"]["anonymous"], minor, "{stack:#}");
    assert_eq!(stack["frames"][0]["line"], line_of("touch_pages", "region[i * page] = 1;"), "{stack:#}");
    assert_eq!(stack["frames"][1]["function"], "main", "{stack:#}");

    let faults = &report["faults"];
    assert_eq!(faults["period"], 1);
    assert_eq!(faults["scaled"], false);
    // The whole process faulted more (loading, libc start-up), and the summary says so.
    let total = report["summary"]["minor_faults"].as_u64().unwrap();
    assert!(total > minor, "summary {total}, touch_pages {minor}");
    assert_eq!(faults["minor"], total);
    assert_eq!(report["summary"]["major_faults"], faults["major"]);
    assert_eq!(report["summary"]["lost_events"], 0);
    assert_no_probes_left();
}

#[test]
fn reading_an_evicted_file_through_mmap_takes_major_faults_in_the_reading_function() {
    let _serial = serial();
    let program = build_c("read_mapped");
    // On a real disk (the target directory), not tmpfs, whose pages cannot be evicted.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let file = dir.path().join("data.bin");
    let mut writer = std::fs::File::create(&file).expect("data file");
    let block: Vec<u8> = (0..1024 * 1024).map(|index| (index % 251) as u8).collect();
    for _ in 0..8 {
        writer.write_all(&block).expect("data written");
    }
    writer.sync_all().expect("data on disk");
    drop(writer);

    let (output, report) = memtrace_json(&["run", "--faults"], &[program.to_str().unwrap(), file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let own_count = printed(&output.stdout, "majflt");
    assert_eq!(printed(&output.stdout, "cached"), 0, "the file was not evicted");
    assert!(own_count > 0, "the program saw no major fault");

    let stack = fault_stack(&report, "read_mapped");
    let major = stack["major"].as_u64().unwrap();
    assert!(major > 0, "{stack:#}");
    // The kernel's own count for the process, to the fault.
    assert_eq!(major, own_count, "{stack:#}");
    assert_eq!(stack["frames"][0]["line"], line_of("read_mapped", "sum += data[offset];"), "{stack:#}");
    assert_eq!(stack["frames"][1]["function"], "main", "{stack:#}");
    // The faulting addresses are in the mapped file.
    assert_eq!(stack["kinds"]["file"], stack["minor"].as_u64().unwrap() + major, "{stack:#}");
    assert!(report["summary"]["major_faults"].as_u64().unwrap() >= major);
    assert_no_probes_left();
}

#[test]
fn a_fault_period_samples_and_scales_the_counts_and_says_so() {
    let _serial = serial();
    let program = build_c("touch_pages");
    let (output, report) = memtrace_json(&["run", "--fault-period", "10"], &[program.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let own_count = printed(&output.stdout, "minflt");
    let faults = &report["faults"];
    assert_eq!(faults["period"], 10);
    assert_eq!(faults["scaled"], true);
    let minor = fault_stack(&report, "touch_pages")["minor"].as_u64().unwrap();
    // Samples times ten: a multiple of ten, near the true count. The events are counted per
    // CPU over every process, so the first sample in touch_pages may come up to 10 faults
    // late and the last up to 10 early.
    assert_eq!(minor % 10, 0);
    assert!(minor.abs_diff(own_count) <= 20 + own_count / 20, "memtrace {minor}, getrusage {own_count}");
    assert_no_probes_left();
}

#[test]
fn the_faults_shorthand_runs_a_command_with_faults_on() {
    let _serial = serial();
    let program = build_c("touch_pages");
    let (output, report) = memtrace_json(&["faults"], &[program.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(report["mode"], "run");
    assert!(fault_stack(&report, "touch_pages")["minor"].as_u64().unwrap() >= 3000);
    assert_no_probes_left();
}

#[test]
fn text_report_shows_fault_totals_and_the_faulting_stack() {
    let _serial = serial();
    let program = build_c("touch_pages");
    let output = memtrace().args(["run", "--faults", "--"]).arg(&program).output().expect("memtrace runs");
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.lines().any(|line| line.starts_with("Page faults: ") && line.ends_with(" major")), "{text}");
    assert!(text.lines().any(|line| line.starts_with("    by memory: heap ")), "{text}");
    assert!(text.contains(" in touch_pages at "), "{text}");
    assert_no_probes_left();
}

#[test]
fn without_faults_the_report_has_no_fault_figures() {
    let _serial = serial();
    let program = build_c("touch_pages");
    let (output, report) = memtrace_json(&["run"], &[program.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(report.get("faults").is_none());
    assert!(report["summary"].get("minor_faults").is_none());
    assert_no_probes_left();
}

#[test]
fn the_faults_shorthand_refuses_both_a_pid_and_a_command() {
    let output = memtrace().args(["faults", "-p", "1", "--", "true"]).output().expect("memtrace runs");
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("cannot be used with"), "{text}");
}

#[test]
fn the_faults_shorthand_attaches_to_a_running_process() {
    let _serial = serial();
    let program = build_c("touch_pages");
    let mut target = Command::new(&program)
        .arg("wait")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the program starts");
    let mut target_out = BufReader::new(target.stdout.take().unwrap());
    let mut line = String::new();
    target_out.read_line(&mut line).expect("the program says it waits");
    assert_eq!(line, "waiting\n");

    let dir = tempfile::tempdir().expect("temp dir");
    let report_path = dir.path().join("report.json");
    let mut memtrace = memtrace()
        .args(["faults", "-p", &target.id().to_string(), "--duration", "20s", "--format", "json", "-o"])
        .arg(&report_path)
        .stderr(Stdio::piped())
        .spawn()
        .expect("memtrace starts");
    // memtrace says "tracing ..." once every probe is attached.
    let mut memtrace_err = BufReader::new(memtrace.stderr.take().unwrap());
    let mut said = String::new();
    memtrace_err.read_line(&mut said).expect("memtrace reports progress");
    assert!(said.starts_with("memtrace: tracing pid "), "{said}");
    target.stdin.take().unwrap().write_all(b"go\n").expect("the program is told to go");
    let mut rest = String::new();
    target_out.read_to_string(&mut rest).expect("the program's count");
    assert!(target.wait().expect("the program ends").success());
    let status = memtrace.wait().expect("memtrace ends");
    let mut stderr = String::new();
    memtrace_err.read_to_string(&mut stderr).unwrap();
    // Every traced process exited before the window ended.
    assert_eq!(status.code(), Some(1), "{stderr}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["mode"], "record");

    let own_count = printed(rest.as_bytes(), "minflt");
    let minor = fault_stack(&report, "touch_pages")["minor"].as_u64().unwrap();
    assert!(minor >= 3000, "{minor}");
    assert!(minor.abs_diff(own_count) * 100 <= own_count * 3, "memtrace {minor}, getrusage {own_count}");
    // It exited before the window closed: no memory picture, and memtrace said why.
    assert!(report.get("memory").is_none());
    assert!(stderr.contains("no memory picture for process"), "{stderr}");
    assert_no_probes_left();
}

/// Minor faults of every stack whose innermost frame is `function`, and the pids they are in.
fn minor_faults_in(report: &Value, function: &str) -> (u64, Vec<u64>) {
    let stacks: Vec<&Value> = report["faults"]["stacks"]
        .as_array()
        .expect("faults.stacks is an array")
        .iter()
        .filter(|stack| stack["frames"][0]["function"] == function)
        .collect();
    let mut pids: Vec<u64> = stacks.iter().map(|stack| stack["pid"].as_u64().unwrap()).collect();
    pids.dedup();
    (stacks.iter().map(|stack| stack["minor"].as_u64().unwrap()).sum(), pids)
}

#[test]
fn faults_of_threads_and_forked_children_are_counted_in_their_own_process() {
    let _serial = serial();
    let program = build_c("fault_family");
    let (output, report) = memtrace_json(&["run", "--faults"], &[program.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let child = printed(&output.stdout, "child");
    let target = report["target"]["pid"].as_u64().unwrap();

    // Two threads, 1,000 fresh pages each: one fault per page, in the target process.
    let (threads, pids) = minor_faults_in(&report, "thread_touch");
    assert!((2000..=2010).contains(&threads), "{threads} in thread_touch: {:#}", report["faults"]);
    assert_eq!(pids, [target]);
    // The child's 700 pages, in the child.
    let (children, pids) = minor_faults_in(&report, "child_touch");
    assert!((700..=710).contains(&children), "{children} in child_touch: {:#}", report["faults"]);
    assert_eq!(pids, [child]);
    let processes = report["faults"]["processes"].as_array().unwrap();
    let child_entry = processes.iter().find(|process| process["pid"] == child).expect("the child has its own entry");
    assert!(child_entry["minor"].as_u64().unwrap() >= 700);
    assert_no_probes_left();
}

#[test]
fn faults_in_shared_memory_are_classified_as_shared_memory() {
    let _serial = serial();
    let program = build_c("shared_memory");
    let name = format!("/memtrace-test-faults-{}", std::process::id());
    let (output, report) = memtrace_json(&["run", "--faults"], &[program.to_str().unwrap(), "once", &name]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    // touch() writes every page of the 3 MiB System V segment and the 5 MiB POSIX object once,
    // called from two places in main: two stacks.
    let stacks: Vec<&Value> = report["faults"]["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|stack| stack["frames"][0]["function"] == "touch")
        .collect();
    let mut per_stack: Vec<(u64, u64)> = stacks
        .iter()
        .map(|stack| (stack["minor"].as_u64().unwrap(), stack["kinds"]["shm"].as_u64().unwrap()))
        .collect();
    per_stack.sort();
    const PAGE: u64 = 4096;
    let (sysv, posix) = (3 * 1024 * 1024 / PAGE, 5 * 1024 * 1024 / PAGE);
    assert_eq!(per_stack, [(sysv, sysv), (posix, posix)], "{:#}", report["faults"]);
    assert_eq!(report["faults"]["kinds"]["shm"], sysv + posix);
    assert_no_probes_left();
}

#[test]
fn faults_are_classified_as_heap_stack_and_anonymous_memory() {
    let _serial = serial();
    let program = build_c("layout");
    let (output, report) = memtrace_json(&["run", "--faults"], &[program.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let kinds = &report["faults"]["kinds"];
    let count = |kind: &str| kinds[kind].as_u64().unwrap();
    // 1 MiB of sbrk'd heap (256 pages) and malloc's few; 2 MiB of stack growing down (512
    // pages, the kernel extending [stack] on each fault); 3 MiB of the mapping (768 pages).
    assert!((256..=266).contains(&count("heap")), "{kinds}");
    assert!((512..=530).contains(&count("stack")), "{kinds}");
    assert!((768..=800).contains(&count("anonymous")), "{kinds}");
    assert_no_probes_left();
}

#[test]
fn faults_render_as_folded_stacks_a_flamegraph_and_pprof_samples() {
    let _serial = serial();
    let program = build_c("touch_pages");
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("faults.json");
    let output = memtrace()
        .args(["run", "--faults", "--format", "json", "-o"])
        .arg(&saved)
        .arg("--")
        .arg(&program)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let stack = fault_stack(&report, "touch_pages");
    let faults_there = stack["minor"].as_u64().unwrap() + stack["major"].as_u64().unwrap();
    let render = |args: &[&str]| {
        let output = memtrace().arg("report").arg(&saved).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    };

    // Folded, weighted by faults: touch_pages's line, root first, with its count.
    let folded = String::from_utf8(render(&["--format", "folded", "--weight", "faults"])).unwrap();
    let line = folded
        .lines()
        .find(|line| line.contains(";main;touch_pages "))
        .unwrap_or_else(|| panic!("no touch_pages line in {folded}"));
    assert_eq!(line.rsplit(' ').next().unwrap().parse::<u64>().unwrap(), faults_there, "{line}");
    let total: u64 = folded.lines().map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()).sum();
    let all = report["faults"]["minor"].as_u64().unwrap() + report["faults"]["major"].as_u64().unwrap();
    assert_eq!(total, all, "every fault stack is in the folded output");

    // The flamegraph counts faults.
    let svg = String::from_utf8(render(&["--format", "svg", "--weight", "faults"])).unwrap();
    assert!(
        svg.contains(&format!("<title>all ({} faults, 100%)</title>", thousands(all))),
        "{}",
        &svg[..svg.len().min(2000)]
    );
    assert!(svg.contains("<title>touch_pages ("), "touch_pages has its cell");

    // pprof: two more sample types, and touch_pages's sample carries its faults.
    let profile_path = dir.path().join("faults.pb.gz");
    let output =
        memtrace().arg("report").arg(&saved).args(["--format", "pprof", "-o"]).arg(&profile_path).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let profile = decode_pprof(&profile_path, dir.path());
    let types: Vec<&str> =
        profile["sample_types"].as_array().unwrap().iter().map(|pair| pair[0].as_str().unwrap()).collect();
    assert_eq!(types, ["alloc_objects", "alloc_space", "inuse_objects", "inuse_space", "minor_faults", "major_faults"]);
    let samples = profile["samples"].as_array().unwrap();
    let touching = samples
        .iter()
        .find(|sample| sample["locations"][0]["lines"][0]["function"] == "touch_pages")
        .expect("a sample for touch_pages");
    assert_eq!(touching["values"][4].as_u64().unwrap() + touching["values"][5].as_u64().unwrap(), faults_there);
    assert_eq!(touching["labels"]["kind"], "fault");
    let minor_total: u64 = samples.iter().map(|sample| sample["values"][4].as_u64().unwrap()).sum();
    assert_eq!(minor_total, report["faults"]["minor"].as_u64().unwrap());
    assert_no_probes_left();
}

/// 12345 as "12,345", as inferno writes counts.
fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
