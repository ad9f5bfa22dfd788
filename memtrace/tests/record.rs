//! `memtrace record -p PID` against real running processes, real eBPF.
mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use common::*;

/// A running test program whose "leak <ns>" lines are collected as they come.
struct Steady {
    child: Child,
    leaks: Arc<Mutex<Vec<u64>>>,
}

impl Steady {
    fn start() -> Self {
        let mut child = Command::new(build_c("steady")).stdout(Stdio::piped()).spawn().expect("steady starts");
        let stdout = child.stdout.take().unwrap();
        let leaks = Arc::new(Mutex::new(Vec::new()));
        let sink = leaks.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(ns) = line.strip_prefix("leak ").and_then(|ns| ns.parse().ok()) {
                    sink.lock().unwrap().push(ns);
                }
            }
        });
        let steady = Self { child, leaks };
        let deadline = Instant::now() + Duration::from_secs(5);
        while steady.leaks.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "steady never started leaking");
            thread::sleep(Duration::from_millis(10));
        }
        steady
    }

    fn leaks_between(&self, start_ns: u64, end_ns: u64) -> usize {
        self.leaks.lock().unwrap().iter().filter(|&&ns| (start_ns..=end_ns).contains(&ns)).count()
    }
}

impl Drop for Steady {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn record_counts_what_a_running_process_leaks_during_the_window() {
    let _serial = serial();
    let steady = Steady::start();
    let pid = steady.child.id().to_string();
    let (output, report) = memtrace_json(&["record", "-p", &pid, "--duration", "1s"], &[]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    thread::sleep(Duration::from_millis(100)); // let the last lines of the window arrive

    let window = &report["window"];
    let said = steady
        .leaks_between(window["start_monotonic_ns"].as_u64().unwrap(), window["end_monotonic_ns"].as_u64().unwrap());
    let counted = report["summary"]["outstanding_allocations"].as_u64().unwrap() as usize;
    // One leak every 20 ms for 1 s; the program's clock reading and the probe's differ by a
    // few microseconds, so one leak at either edge may land on the other side.
    assert!(said >= 30, "the program said it leaked only {said} blocks in the window");
    assert!(counted.abs_diff(said) <= 1, "memtrace counted {counted}, the program said {said}");
    assert_eq!(report["summary"]["outstanding_bytes"].as_u64().unwrap(), 128 * counted as u64);
    let stack = stack_from(&report, "leak_one");
    assert_eq!(stack["allocations"].as_u64().unwrap() as usize, counted);
    assert_eq!(stack["frames"][0]["line"], line_of("steady", "malloc(128)"));
    assert_eq!(stack["frames"][1]["function"], "main");
    assert_eq!(report["target"]["pid"].as_u64().unwrap().to_string(), pid);
    assert_eq!(report["target"]["exited"], false);
    assert_eq!(report["summary"]["lost_events"], 0);
    assert_no_probes_left();
    drop(steady);
}

#[test]
fn record_stops_when_the_process_exits_and_says_so() {
    let _serial = serial();
    let mut sleeper = Command::new("sleep").arg("1").spawn().expect("sleep starts");
    let pid = sleeper.id().to_string();
    // On a busy machine the loader may not have mapped libc yet: memtrace attaches to what is
    // mapped, so wait for it (a process that has none is refused, tested elsewhere).
    let maps = format!("/proc/{pid}/maps");
    while !std::fs::read_to_string(&maps).is_ok_and(|text| text.contains("libc.so")) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    let (output, report) = memtrace_json(&["record", "-p", &pid], &[]);
    let _ = sleeper.wait();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(output.status.code(), Some(1));
    let lines = stderr_lines(&output);
    assert!(lines.last().unwrap().contains(&format!("process {pid} exited during the trace")), "{lines:?}");
    assert_eq!(report["target"]["exited"], true);
    assert_eq!(report["summary"]["lost_events"], 0);
    assert_no_probes_left();
}

#[test]
fn sigterm_ends_the_window_with_a_report_and_sigkill_leaves_no_probe() {
    let _serial = serial();
    let steady = Steady::start();
    let pid = steady.child.id().to_string();
    for signal in ["TERM", "KILL"] {
        let dir = tempfile::tempdir().unwrap();
        let report_path = dir.path().join("report.json");
        let mut memtrace = memtrace()
            .args(["record", "-p", &pid, "-f", "json", "-o"])
            .arg(&report_path)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until it says it is tracing.
        let mut stderr = BufReader::new(memtrace.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        assert!(line.starts_with("memtrace: tracing pid"), "{line}");
        assert!(!loaded_memtrace_programs().is_empty(), "the probes are attached while tracing");
        thread::sleep(Duration::from_millis(300));
        let status = Command::new("kill").arg(format!("-{signal}")).arg(memtrace.id().to_string()).status().unwrap();
        assert!(status.success());
        let status = memtrace.wait().unwrap();
        if signal == "TERM" {
            assert_eq!(status.code(), Some(0));
            let report: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
            assert!(report["summary"]["outstanding_allocations"].as_u64().unwrap() >= 5, "{report:#}");
            assert_eq!(stack_from(&report, "leak_one")["frames"][1]["function"], "main");
        } else {
            assert_eq!(status.code(), None, "killed");
        }
        assert_no_probes_left();
    }
    // The traced process was not harmed: it still runs and still leaks on schedule.
    let before = steady.leaks.lock().unwrap().len();
    thread::sleep(Duration::from_millis(200));
    assert!(steady.leaks.lock().unwrap().len() > before);
}
