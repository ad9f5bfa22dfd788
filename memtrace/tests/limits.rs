//! Size and duration options are bounded: a value beyond a bound is refused by the command line
//! (exit 2, the bound in the message and in --help), and kernel maps that would not fit in the
//! memory available are refused before any is made (exit 1, one line naming the option).
mod common;

use std::process::{Child, Command, Output};

use common::*;

/// Runs memtrace with `args`; the command-line error it must stop at.
fn refused(args: &[&str]) -> Output {
    let output = memtrace().args(args).output().expect("memtrace runs");
    assert_eq!(output.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A process to point `record -p` at.
fn sleeper() -> Child {
    Command::new("sleep").arg("30").spawn().expect("sleep starts")
}

#[test]
fn sizes_beyond_their_bounds_are_refused_by_the_command_line() {
    let _serial = serial();
    let cases = [
        (
            vec!["run", "--combined", "--stack-slots", "4294967295", "--", "true"],
            "invalid value '4294967295' for '--stack-slots <N>': 4294967295 is not in 1..=1048576",
        ),
        (
            vec!["run", "--combined", "--live-blocks", "67108865", "--", "true"],
            "invalid value '67108865' for '--live-blocks <N>': 67108865 is not in 1..=67108864",
        ),
        (
            vec!["run", "--ring-buffer-size", "3000000000", "--", "true"],
            "invalid value '3000000000' for '--ring-buffer-size <BYTES>': 3000000000 is not in 4096..=1073741824",
        ),
        (
            vec!["run", "--ring-buffer-size", "100", "--", "true"],
            "invalid value '100' for '--ring-buffer-size <BYTES>': 100 is not in 4096..=1073741824",
        ),
        (
            vec!["run", "--sample-bytes", "1099511627777", "--", "true"],
            "invalid value '1099511627777' for '--sample-bytes <BYTES>': 1099511627777 is not in 1..=1099511627776",
        ),
    ];
    for (args, message) in cases {
        let output = refused(&args);
        assert!(stderr(&output).starts_with(&format!("error: {message}\n")), "{args:?}: {}", stderr(&output));
    }
    assert_no_probes_left();
}

#[test]
fn help_states_the_bounds() {
    let output = memtrace().args(["run", "--help"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    // Help wraps lines: compare with whitespace collapsed.
    let help = String::from_utf8_lossy(&output.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    for bound in [
        "4,096 to 1,073,741,824 (1 GiB)",
        "distinct stacks the kernel can keep, 1 to 1,048,576",
        "at least, 1 to 67,108,864",
        "(1 to 1,099,511,627,776: 1 TiB)",
        "(at most 127)",
    ] {
        assert!(help.contains(bound), "{bound:?} not in {help}");
    }
}

#[test]
fn durations_longer_than_a_year_are_refused() {
    let _serial = serial();
    let mut target = sleeper();
    let pid = target.id().to_string();
    for (option, value) in [("--duration", "100000000000000000000"), ("--interval", "10000000000000000000")] {
        let output = refused(&["record", "-p", &pid, option, value]);
        assert!(
            stderr(&output).starts_with(&format!(
                "error: invalid value '{value}' for '{option} <DURATION>': `{value}` is longer than a year (8760h), the longest duration memtrace takes\n"
            )),
            "{}",
            stderr(&output)
        );
    }
    target.kill().unwrap();
    target.wait().unwrap();
    assert_no_probes_left();
}

/// memtrace refuses the maps on one line, naming `option`, before starting the target.
fn assert_maps_refused(args: &[&str], option: &str, what: &str) {
    let marker = tempfile::tempdir().unwrap().keep().join("target-ran");
    let output = memtrace().arg("run").args(args).arg("--").arg("touch").arg(&marker).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let (start, end) = lines[0].split_once(" of memory, ").expect("the total");
    assert!(start.starts_with("memtrace: error: the kernel maps memtrace needs would take about "), "{lines:?}");
    assert!(end.starts_with("more than the 95 MiB available (MemAvailable in /proc/meminfo): "), "{lines:?}");
    assert!(end.contains(&format!(": lower {option} ({what} alone take ")), "{lines:?}");
    assert!(!marker.exists(), "the target ran");
}

#[test]
fn maps_larger_than_the_memory_available_are_refused_before_they_are_made() {
    let _serial = serial();
    // 100,000,000 bytes available (95 MiB rounded up), as /proc/meminfo would say on a small machine.
    let small = ["--mem-available", "100000000"];
    assert_maps_refused(
        &[&small[..], &["--combined", "--live-blocks", "4194304"]].concat(),
        "--live-blocks",
        "the block table and its overflow map",
    );
    assert_maps_refused(
        &[&small[..], &["--combined", "--stack-slots", "1048576"]].concat(),
        "--stack-slots",
        "the stack table and its per-CPU totals",
    );
    assert_maps_refused(
        &[&small[..], &["--ring-buffer-size", "1073741824"]].concat(),
        "--ring-buffer-size",
        "the ring buffer",
    );
    // The defaults fit.
    let (output, report) = memtrace_json(&["run", small[0], small[1]], &["true"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(report["summary"]["lost_events"], 0);
    assert_no_probes_left();
}
