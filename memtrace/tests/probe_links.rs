//! How the probes are attached and removed: uprobe_multi links for the traced processes only
//! (other processes on the machine pay nothing), and perf-event uprobes, the path kernels before
//! 6.6 take, with the same numbers.
mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::*;

/// `run` follows forks with probes per process: an unrelated process calling malloc a million
/// times meanwhile never runs memtrace's programs.
#[test]
fn run_probes_its_own_processes_only() {
    let _serial = serial();
    let family = build_c("family");
    let churn = build_variant("probe_churn.c", "probe_churn", "cc", &["-O1", "-g"], &[]);
    // The outsider starts first and runs through the whole trace.
    let outsider = Command::new(&churn).stdout(Stdio::piped()).spawn().expect("start the churn program");
    std::thread::sleep(Duration::from_millis(100));
    let (output, report) = memtrace_json_ok(&["run", "--program-stats"], &[family.to_str().unwrap()]);
    let outsider_done = outsider.wait_with_output().expect("the churn program ends");
    assert!(outsider_done.status.success());
    let calls: u64 = String::from_utf8_lossy(&outsider_done.stdout)
        .trim()
        .strip_prefix("churn: ")
        .and_then(|rest| rest.strip_suffix(" calls"))
        .and_then(|count| count.parse().ok())
        .expect("churn: N calls");
    assert!(calls > 1_000_000, "the outsider made only {calls} calls");
    assert!(output.status.success());

    let runs = |program: &str| {
        report["kernel_programs"]
            .as_array()
            .expect("kernel_programs with --program-stats")
            .iter()
            .find(|cost| cost["program"] == program)
            .map_or(0, |cost| cost["runs"].as_u64().unwrap())
    };
    // The family's own calls: a few hundred at most, against the outsider's millions.
    let (mallocs, frees) = (runs("size_enter"), runs("free_enter"));
    assert!(mallocs > 0 && mallocs < 2_000, "size_enter ran {mallocs} times");
    assert!(frees < 2_000, "free_enter ran {frees} times");
    assert_no_probes_left();
}

/// The numbers of `run.rs`'s leaky program, with one perf-event uprobe per point.
#[test]
fn perf_event_uprobes_give_the_same_numbers() {
    let _serial = serial();
    let leaky = build_c("leaky");
    for links in [&[][..], &["--perf-event-uprobes"][..]] {
        let (output, report) = memtrace_json_ok(&[&["run"], links].concat(), &[leaky.to_str().unwrap()]);
        assert_eq!(String::from_utf8_lossy(&output.stdout), "leaky: done\n");
        let summary = &report["summary"];
        assert_eq!(summary["outstanding_bytes"], 9300, "{links:?}");
        assert_eq!(summary["outstanding_allocations"], 6, "{links:?}");
        assert_eq!(summary["total_allocations"], 107, "{links:?}");
        assert_eq!(summary["total_frees"], 101, "{links:?}");
        assert_eq!(summary["lost_events"], 0, "{links:?}");
        assert_eq!(stack_from(&report, "leak_with_realloc")["bytes"], 5000, "{links:?}");
        assert_no_probes_left();
    }
}
