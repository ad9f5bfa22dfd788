//! What memtrace costs a program that does nothing, the fixed cost a CI suite of many small test
//! binaries pays per binary: `memtrace run -- /bin/true` against `valgrind --leak-check=full
//! /bin/true`, side by side, medians of `RUNS`, with memtrace's own split from `-v`'s timing
//! lines (start until the command runs, the probes removed after it, the report) and what is
//! left: the exit, including any removal still under way.
use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

const RUNS: usize = 7;

pub struct ShortRuns {
    pub memtrace: f64,
    pub valgrind: f64,
    pub start: f64,
    pub removal: f64,
    pub report: f64,
    pub exit: f64,
}

impl ShortRuns {
    pub fn describe(&self) -> String {
        format!(
            "run -- /bin/true, median of {RUNS}: memtrace {:.3} s (start {:.3}, probes removed after the command {:.3}, \
             report {:.3}, exit {:.3}), valgrind --leak-check=full {:.3} s: {:.1}x valgrind's",
            self.memtrace,
            self.start,
            self.removal,
            self.report,
            self.exit,
            self.valgrind,
            self.memtrace / self.valgrind
        )
    }

    pub fn summary(&self) -> Map<String, Value> {
        let mut summary = Map::new();
        summary.insert("run_true_seconds".into(), json!(self.memtrace));
        summary.insert("valgrind_true_seconds".into(), json!(self.valgrind));
        summary.insert("run_true_start_seconds".into(), json!(self.start));
        summary.insert("run_true_removal_seconds".into(), json!(self.removal));
        summary.insert("run_true_report_seconds".into(), json!(self.report));
        summary.insert("run_true_exit_seconds".into(), json!(self.exit));
        summary
    }
}

/// Alternates memtrace and valgrind runs, so that both see the same load.
pub fn measure(memtrace: &Path, report: &Path) -> Result<ShortRuns> {
    let (mut totals, mut valgrinds, mut starts, mut removals, mut reports, mut exits) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let began = Instant::now();
        let output = Command::new(memtrace)
            .args(["-v", "run", "-o"])
            .arg(report)
            .args(["--", "/bin/true"])
            .output()
            .context("running memtrace run -- /bin/true")?;
        let total = began.elapsed().as_secs_f64();
        if !output.status.success() {
            bail!("memtrace run -- /bin/true failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr));
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let start = seconds_after(&stderr, " s after memtrace began", ", ")?;
        let command = seconds_after(&stderr, " s; the probes still attached", "command ended after ")?;
        let removal = seconds_after(&stderr, " s", "the probes still attached removed in ")?;
        let report = seconds_after(&stderr, " s", "report made and written in ")?;
        totals.push(total);
        starts.push(start);
        removals.push(removal);
        reports.push(report);
        exits.push((total - start - command - removal - report).max(0.0));

        let began = Instant::now();
        let status = Command::new("valgrind")
            .args(["-q", "--leak-check=full", "/bin/true"])
            .status()
            .context("running valgrind --leak-check=full /bin/true")?;
        if !status.success() {
            bail!("valgrind --leak-check=full /bin/true failed ({status})");
        }
        valgrinds.push(began.elapsed().as_secs_f64());
    }
    Ok(ShortRuns {
        memtrace: crate::bench::median(&mut totals),
        valgrind: crate::bench::median(&mut valgrinds),
        start: crate::bench::median(&mut starts),
        removal: crate::bench::median(&mut removals),
        report: crate::bench::median(&mut reports),
        exit: crate::bench::median(&mut exits),
    })
}

/// The number between `before` and `after` on the line of `-v`'s output that holds both.
fn seconds_after(stderr: &str, after: &str, before: &str) -> Result<f64> {
    stderr
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(before)?;
            let (number, _) = rest.split_once(after)?;
            number.trim().parse().ok()
        })
        .next()
        .with_context(|| format!("no '{before}N{after}' line in memtrace -v's output"))
}
