//! Live recording: `--interval` reports and leak suspects, the status line, `--older-than` and
//! `--sort`, on real running programs with real eBPF.
mod common;

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::*;

/// A test program running in the background, killed when dropped.
struct Running(Child);

impl Running {
    fn start(program: &str) -> Self {
        let child = Command::new(build_c(program)).stdout(Stdio::null()).spawn().expect("the program starts");
        // Let it reach its loop.
        std::thread::sleep(Duration::from_millis(200));
        Self(child)
    }

    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn intervals_report_periodically_and_flag_the_slow_leak_not_the_cache() {
    let _serial = serial();
    let service = Running::start("cache_and_leak");
    let (output, report) = memtrace_json(&["record", "-p", &service.pid(), "--interval", "400ms", "--count", "5"], &[]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    // With -o the interval reports go to stderr, one per interval, in order.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let headers: Vec<&str> = stderr.lines().filter(|line| line.starts_with("memtrace: interval ")).collect();
    assert_eq!(headers.len(), 5, "{stderr}");
    for (index, header) in headers.iter().enumerate() {
        assert!(header.starts_with(&format!("memtrace: interval {} at ", index + 1)), "{header}");
    }
    assert!(stderr.contains("[LEAK SUSPECT: grew in 5 of 5 intervals]"), "{stderr}");
    // --count 5 of 400 ms: the recording lasted about 2 s.
    let duration = report["duration_seconds"].as_f64().unwrap();
    assert!((2.0..3.0).contains(&duration), "{duration}");

    let leak = stack_from(&report, "leak_slowly");
    assert_eq!(leak["growth"], serde_json::json!({"intervals": 5, "grew_in": 5, "leak_suspect": true}));
    let cache = stack_from(&report, "refresh_cache");
    assert_eq!(cache["bytes"], 4000);
    assert_eq!(cache["growth"], serde_json::json!({"intervals": 5, "grew_in": 1, "leak_suspect": false}));
    // Everything the cache allocated during the trace, freed or not.
    assert_eq!(cache["total_allocated_bytes"].as_u64().unwrap(), 1000 * cache["total_allocations"].as_u64().unwrap());
    assert!(cache["total_allocations"].as_u64().unwrap() >= 80, "{cache:#}");
    assert_no_probes_left();
}

#[test]
fn the_status_line_shows_on_a_terminal_and_not_otherwise() {
    let _serial = serial();
    let service = Running::start("cache_and_leak");
    // stderr a pipe: no status line at all.
    let output = memtrace().args(["record", "-p", &service.pid(), "--duration", "1500ms"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("events/s") && !stderr.contains('\r'), "{stderr}");

    // On a pseudo-terminal (python's pty module runs memtrace on one and copies what it
    // writes): the line is drawn, and erased before the report.
    let output = Command::new("/usr/bin/python3")
        .args(["-c", "import pty, sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)"])
        .arg(memtrace_bin())
        .args(["record", "-p", &service.pid(), "--duration", "2500ms"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&output.stdout);
    assert!(seen.contains("\r\x1b[Kmemtrace: 1 s, "), "{seen:?}");
    assert!(seen.contains(" events/s, ") && seen.contains(" bytes outstanding, 0 events lost"), "{seen:?}");
    assert!(seen.contains("\r\x1b[Kmemtrace: recorded pid"), "the line is not erased before the report: {seen:?}");
    assert_no_probes_left();
}

#[test]
fn older_than_keeps_only_old_blocks() {
    let _serial = serial();
    let service = Running::start("cache_and_leak");
    let (output, report) =
        memtrace_json(&["record", "-p", &service.pid(), "--duration", "1500ms", "--older-than", "1s"], &[]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    // The cache's blocks are all younger than 1 s at the end (replaced every 80 ms): gone. The
    // leak's blocks from the first ~0.5 s remain: 64 bytes every 20 ms, about 25 of them.
    let stacks = report["stacks"].as_array().unwrap();
    assert!(stacks.iter().all(|stack| stack["frames"][0]["function"] != "refresh_cache"), "{report:#}");
    let leak = stack_from(&report, "leak_slowly");
    let blocks = leak["allocations"].as_u64().unwrap();
    assert!((15..=30).contains(&blocks), "{blocks} blocks older than 1 s");
    assert_eq!(leak["bytes"].as_u64().unwrap(), 64 * blocks);
    // The totals still count every block.
    assert!(report["summary"]["outstanding_allocations"].as_u64().unwrap() >= 60, "{report:#}");
    assert_no_probes_left();
}

#[test]
fn sort_by_count_puts_the_most_allocations_first() {
    let _serial = serial();
    let leaky = build_c("leaky");
    let (output, report) = memtrace_json(&["run", "--sort", "count", "--top", "1"], &[leaky.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    // By bytes leak_with_realloc (5000 in 1) is first; by count leak_with_malloc (4 blocks).
    let stacks = report["stacks"].as_array().unwrap();
    assert_eq!(stacks.len(), 1);
    assert_eq!(stacks[0]["frames"][0]["function"], "leak_with_malloc");
    assert_eq!(stacks[0]["allocations"], 4);
    assert_no_probes_left();
}
