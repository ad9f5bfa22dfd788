//! The memory picture at the end of a trace (smaps, smaps_rollup, cgroup), from real programs
//! of known shape.
mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use common::*;
use serde_json::Value;

const MIB: u64 = 1024 * 1024;
const PAGE: u64 = 4096;

/// The picture's usage of one mapping kind.
fn kind<'a>(picture: &'a Value, name: &str) -> &'a Value {
    picture["by_kind"]
        .as_array()
        .expect("by_kind is an array")
        .iter()
        .find(|usage| usage["kind"] == name)
        .unwrap_or_else(|| panic!("no {name} in {picture:#}"))
}

fn number(value: &Value) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("{value} is not a number"))
}

fn assert_near(actual: u64, expected: u64, slack: u64, what: &str) {
    assert!(actual.abs_diff(expected) <= slack, "{what}: {actual}, expected {expected} ± {slack}");
}

/// A shared memory object name of this test run's own.
fn shm_name(tag: &str) -> String {
    format!("/memtrace-test-{tag}-{}", std::process::id())
}

#[test]
fn system_v_and_posix_shared_memory_are_listed_with_their_sizes() {
    let _serial = serial();
    let program = build_c("shared_memory");
    let name = shm_name("once");
    let (output, report) = memtrace_json(&["run"], &[program.to_str().unwrap(), "once", &name]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let picture = &report["memory"][0];
    assert_eq!(picture["pid"], report["target"]["pid"]);
    let sysv = kind(picture, "sysv_shm");
    assert_eq!(sysv["mappings"], 1, "{sysv:#}");
    assert_eq!(sysv["size_bytes"], 3 * MIB, "{sysv:#}");
    assert_eq!(sysv["rss_bytes"], 3 * MIB, "{sysv:#}");
    // Alone, it is all this process's.
    assert_eq!(sysv["pss_bytes"], 3 * MIB, "{sysv:#}");
    let posix = kind(picture, "posix_shm");
    assert_eq!(posix["mappings"], 1, "{posix:#}");
    assert_eq!(posix["size_bytes"], 5 * MIB, "{posix:#}");
    assert_eq!(posix["rss_bytes"], 5 * MIB, "{posix:#}");
    // The two largest mappings are these, by path.
    let largest = picture["largest"].as_array().unwrap();
    assert_eq!(largest[0]["kind"], "posix_shm");
    assert_eq!(largest[0]["path"], format!("/dev/shm{name} (deleted)"));
    assert_eq!(largest[0]["mode"], "rw-s");
    assert_eq!(largest[1]["kind"], "sysv_shm");
    assert!(largest[1]["path"].as_str().unwrap().starts_with("/SYSV"), "{:#}", largest[1]);
    // The totals include them.
    assert!(number(&picture["rss_bytes"]) >= 8 * MIB);
    assert!(number(&picture["shared_bytes"]) <= number(&picture["rss_bytes"]));
    assert_no_probes_left();
}

#[test]
fn two_processes_sharing_memory_each_show_half_of_it_as_pss() {
    let _serial = serial();
    let program = build_c("shared_memory");
    let name = shm_name("pair");
    let mut pair =
        Command::new(&program).args(["pair", &name]).stdout(Stdio::piped()).spawn().expect("the program starts");
    let mut ready = String::new();
    BufReader::new(pair.stdout.take().unwrap()).read_line(&mut ready).expect("the program says it is ready");
    let pids: Vec<&str> = ready.split_whitespace().skip(1).collect();
    assert_eq!(pids.len(), 2, "{ready:?}");

    let dir = tempfile::tempdir().expect("temp dir");
    let report_path = dir.path().join("report.json");
    let output = memtrace()
        .args(["record", "-p", &pids.join(","), "--duration", "300ms", "--format", "json", "-o"])
        .arg(&report_path)
        .output()
        .expect("memtrace runs");
    let _ = pair.kill();
    let _ = pair.wait();
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();

    let pictures = report["memory"].as_array().unwrap();
    assert_eq!(pictures.len(), 2, "{pictures:#?}");
    for (picture, pid) in pictures.iter().zip(&pids) {
        assert_eq!(picture["pid"].to_string(), *pid);
        let sysv = kind(picture, "sysv_shm");
        assert_eq!(sysv["rss_bytes"], 3 * MIB, "{sysv:#}");
        // Each of the two processes mapping every page is charged half of it.
        assert_near(number(&sysv["pss_bytes"]), 3 * MIB / 2, 2 * PAGE, "System V PSS");
        let posix = kind(picture, "posix_shm");
        assert_eq!(posix["rss_bytes"], 5 * MIB, "{posix:#}");
        assert_near(number(&posix["pss_bytes"]), 5 * MIB / 2, 2 * PAGE, "POSIX shm PSS");
    }
    assert_no_probes_left();
}

#[test]
fn heap_stack_and_mapping_sizes_match_the_program_within_a_page_or_two() {
    let _serial = serial();
    let program = build_c("layout");
    let (output, report) = memtrace_json(&["run"], &[program.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    // "heap START END mapping ADDRESS"
    let stdout = String::from_utf8_lossy(&output.stdout);
    let words: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(words.len(), 5, "{stdout:?}");
    let address = |text: &str| u64::from_str_radix(text.trim_start_matches("0x"), 16).expect("an address");
    let (heap_start, heap_end, mapping) = (address(words[1]), address(words[2]), address(words[4]));

    let picture = &report["memory"][0];
    let heap = kind(picture, "heap");
    assert_eq!(heap["mappings"], 1);
    assert_near(number(&heap["size_bytes"]), heap_end - heap_start, 2 * PAGE, "heap size");
    // The 1 MiB the program wrote, and the little malloc touched after it.
    assert_near(number(&heap["rss_bytes"]), MIB, 8 * PAGE, "heap RSS");

    let stack = kind(picture, "stack");
    // 2 MiB written by use_stack, plus the few pages main, the arguments and environment use.
    assert_near(number(&stack["rss_bytes"]), 2 * MIB, 8 * PAGE, "stack RSS");

    let largest = picture["largest"].as_array().unwrap();
    let own = largest
        .iter()
        .find(|entry| entry["address"] == format!("{mapping:#x}"))
        .unwrap_or_else(|| panic!("mapping {mapping:#x} not in {largest:#?}"));
    assert_eq!(own["kind"], "anonymous");
    assert_eq!(own["size_bytes"], 4 * MIB);
    assert_eq!(own["rss_bytes"], 3 * MIB);
    assert_eq!(own["dirty_bytes"], 3 * MIB);

    // malloc's view: 200,000 + 10 x 1,000 bytes outstanding, against far more resident in the
    // heap and anonymous memory: the program's own sbrk and mmap, which malloc never saw. (The
    // 200,000-byte block was never written: only its header page is resident.)
    let allocator = &picture["allocator"];
    assert_eq!(allocator["outstanding_bytes"], 210_000);
    assert_eq!(report["summary"]["outstanding_bytes"], 210_000);
    let resident = number(&allocator["heap_and_anonymous_rss_bytes"]);
    assert!((MIB + 3 * MIB..=MIB + 3 * MIB + 64 * PAGE).contains(&resident), "{allocator:#}");
    assert!(number(&picture["vsz_bytes"]) > number(&picture["rss_bytes"]));
    assert!(
        number(&picture["uss_bytes"]) + number(&picture["shared_bytes"]) == number(&picture["rss_bytes"]),
        "{picture:#}"
    );
    assert_no_probes_left();
}

#[test]
fn the_text_report_shows_the_memory_table() {
    let _serial = serial();
    let program = build_c("layout");
    let output = memtrace().args(["run", "--"]).arg(&program).output().expect("memtrace runs");
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.lines().any(|line| line.starts_with("Memory of pid ") && line.contains(": VSZ ")), "{text}");
    let heap_row = text.lines().find(|line| line.trim_start().starts_with("heap ")).unwrap_or_else(|| panic!("{text}"));
    // One heap mapping, about 1 MiB of it resident (in KiB).
    let columns: Vec<&str> = heap_row.split_whitespace().collect();
    assert_eq!(columns[1], "1", "{heap_row}");
    let rss_kib: u64 = columns[3].replace(',', "").parse().unwrap();
    assert!(rss_kib.abs_diff(1024) <= 32, "{heap_row}");
    assert!(text.contains("malloc outstanding 205 against heap + anonymous RSS "), "{text}");
    assert_no_probes_left();
}

#[test]
fn the_cgroup_figures_are_those_of_the_process_cgroup() {
    let _serial = serial();
    let program = build_c("layout");
    let (output, report) = memtrace_json(&["run"], &[program.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    // memtrace's children stay in its cgroup: the same one as this test's.
    let membership = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let cgroup = &report["memory"][0]["cgroup"];
    let v2 = membership.lines().find_map(|line| line.strip_prefix("0::")).unwrap_or("");
    let v1 = membership.lines().find_map(|line| {
        line.split(':').nth(1).filter(|c| c.split(',').any(|c| c == "memory")).and(line.rsplit(':').next())
    });
    match cgroup["version"].as_u64() {
        Some(2) => assert_eq!(cgroup["path"], v2),
        Some(1) => assert_eq!(cgroup["path"].as_str(), v1),
        _ => panic!("no cgroup figures: {cgroup:#}, membership {membership}"),
    }
    // The layout program alone holds more than 6 MiB: the cgroup holds at least that.
    assert!(number(&cgroup["current_bytes"]) >= 6 * MIB, "{cgroup:#}");
    assert!(number(&cgroup["peak_bytes"]) >= number(&cgroup["current_bytes"]), "{cgroup:#}");
    assert!(cgroup["anon_bytes"].is_u64(), "{cgroup:#}");
    assert_no_probes_left();
}
