//! `/metrics`: the report of this moment in Prometheus' text exposition (OpenMetrics), through
//! `prometheus-client`. Series, all labelled by process (`pid`, `exe`: the file name of
//! /proc/PID/exe):
//!
//! - `memtrace_outstanding_bytes`, `memtrace_outstanding_blocks`: held from the allocator now.
//! - `memtrace_allocated_bytes_total`, `memtrace_allocations_total`: allocated since tracing
//!   began.
//! - `memtrace_stack_outstanding_bytes`: the `--metrics-stacks` stacks holding most per process
//!   (5 by default), labelled by the innermost frame of the program's own code (`function`,
//!   `location`) and the `kind` of memory: bounded cardinality.
//! - `memtrace_leak_suspect`: 1 for each stack that grew in most growth intervals (see
//!   `--growth-interval`).
//! - `memtrace_rss_bytes`, `memtrace_pss_bytes`, `memtrace_uss_bytes`, `memtrace_swap_bytes`, and
//!   `memtrace_cgroup_memory_bytes` (the process's memory cgroup's usage): the memory picture.
//! - `memtrace_page_faults_total{type}` with `--faults`.
//! - `memtrace_lost_events_total{reason}`: every loss the report counts; and
//!   `memtrace_processes`, `memtrace_estimated` (1 when sampled).
//!
//! Label values come from processes memtrace does not control: anything but printable
//! characters, and the quote and backslash, become `_`, so that no value can break a line.
use std::path::Path;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::Snapshot;
use crate::report::{
    Stack,
    frame_names::{origin, short_function_name},
};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    pid: String,
    exe: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StackLabels {
    pid: String,
    exe: String,
    function: String,
    location: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    pid: String,
    exe: String,
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LossLabels {
    reason: String,
}

type Gauges<L> = Family<L, Gauge>;
type Counters<L> = Family<L, Counter>;

/// The exposition of the snapshot's report.
pub fn encode_report(snapshot: &Snapshot) -> String {
    let (report, stacks_per_process) = (&snapshot.report, snapshot.metrics_stacks);
    let mut registry = Registry::default();
    let gauge = |registry: &mut Registry, name: &str, help: &str| {
        let family = Gauges::<ProcessLabels>::default();
        registry.register(name, help, family.clone());
        family
    };
    let outstanding_bytes = gauge(&mut registry, "memtrace_outstanding_bytes", "Bytes held from the allocator now");
    let outstanding_blocks = gauge(&mut registry, "memtrace_outstanding_blocks", "Blocks held from the allocator now");
    let allocated_bytes = Counters::<ProcessLabels>::default();
    registry.register("memtrace_allocated_bytes", "Bytes allocated since tracing began", allocated_bytes.clone());
    let allocations = Counters::<ProcessLabels>::default();
    registry.register("memtrace_allocations", "Allocations since tracing began", allocations.clone());
    let rss = gauge(&mut registry, "memtrace_rss_bytes", "Resident set size (smaps_rollup)");
    let pss = gauge(&mut registry, "memtrace_pss_bytes", "Proportional set size (smaps_rollup)");
    let uss = gauge(&mut registry, "memtrace_uss_bytes", "Unique set size: private clean and dirty pages");
    let swap = gauge(&mut registry, "memtrace_swap_bytes", "Swapped out (smaps_rollup)");
    let cgroup = gauge(&mut registry, "memtrace_cgroup_memory_bytes", "Memory used by the process's memory cgroup");
    let stack_bytes = Gauges::<StackLabels>::default();
    registry.register(
        "memtrace_stack_outstanding_bytes",
        "Bytes held by each of the stacks holding most, per process, by innermost program frame",
        stack_bytes.clone(),
    );
    let suspects = Gauges::<StackLabels>::default();
    registry.register("memtrace_leak_suspect", "1 for a stack that grew in most growth intervals", suspects.clone());
    let faults = Counters::<FaultLabels>::default();
    registry.register("memtrace_page_faults", "Page faults (with --faults; scaled when sampled)", faults.clone());
    let lost = Counters::<LossLabels>::default();
    registry.register("memtrace_lost_events", "Events lost, by reason", lost.clone());
    let processes = Gauge::<i64>::default();
    registry.register("memtrace_processes", "Processes traced now", processes.clone());
    let estimated = Gauge::<i64>::default();
    registry.register("memtrace_estimated", "1 when the numbers are estimates from a sample", estimated.clone());

    let labels_of =
        |pid: u32| ProcessLabels { pid: pid.to_string(), exe: label_value(file_name(snapshot.executable(pid))) };
    for process in &report.processes {
        let labels = labels_of(process.pid);
        let counts = &process.summary;
        outstanding_bytes.get_or_create(&labels).set(signed(counts.outstanding_bytes));
        outstanding_blocks.get_or_create(&labels).set(signed(counts.outstanding_allocations));
        allocated_bytes.get_or_create(&labels).inc_by(counts.total_allocated_bytes);
        allocations.get_or_create(&labels).inc_by(counts.total_allocations);
    }
    for picture in &report.memory {
        let labels = labels_of(picture.pid);
        rss.get_or_create(&labels).set(signed(picture.rss_bytes));
        pss.get_or_create(&labels).set(signed(picture.pss_bytes));
        uss.get_or_create(&labels).set(signed(picture.uss_bytes));
        swap.get_or_create(&labels).set(signed(picture.swap_bytes));
        if let Some(current) = picture.cgroup.as_ref().and_then(|cgroup| cgroup.current_bytes) {
            cgroup.get_or_create(&labels).set(signed(current));
        }
    }
    for process in &report.processes {
        let mut held: Vec<&Stack> = report.stacks.iter().filter(|stack| stack.pid == process.pid).collect();
        held.sort_by_key(|stack| std::cmp::Reverse(stack.bytes));
        for stack in held.iter().take(stacks_per_process) {
            stack_bytes.get_or_create(&stack_labels(stack, &labels_of(stack.pid))).inc_by(signed(stack.bytes));
        }
    }
    for stack in report.stacks.iter().filter(|stack| stack.growth.is_some_and(|growth| growth.leak_suspect)) {
        suspects.get_or_create(&stack_labels(stack, &labels_of(stack.pid))).set(1);
    }
    if let Some(section) = &report.faults {
        for process in &section.processes {
            let ProcessLabels { pid, exe } = labels_of(process.pid);
            for (kind, count) in [("minor", process.minor), ("major", process.major)] {
                let labels = FaultLabels { pid: pid.clone(), exe: exe.clone(), r#type: kind.to_owned() };
                faults.get_or_create(&labels).inc_by(count);
            }
        }
    }
    for (reason, &count) in &report.summary.lost.0 {
        lost.get_or_create(&LossLabels { reason: label_value(reason) }).inc_by(count);
    }
    processes.set(i64::try_from(report.processes.iter().filter(|process| !process.exited).count()).unwrap_or(i64::MAX));
    estimated.set(i64::from(report.summary.estimated));

    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

/// A stack's labels: where it allocated (the innermost frame of the program's own code, as
/// JUnit names it) and its kind of memory. Stacks that share them add up.
fn stack_labels(stack: &Stack, process: &ProcessLabels) -> StackLabels {
    let frame = origin(stack);
    let function =
        frame.and_then(|frame| frame.function.as_deref()).map_or_else(|| "??".to_owned(), short_function_name);
    let location = match frame {
        Some(frame) => match (&frame.file, frame.line, &frame.module) {
            (Some(file), Some(line), _) => format!("{file}:{line}"),
            (_, _, Some(module)) => file_name(module).to_owned(),
            _ => String::new(),
        },
        None => String::new(),
    };
    let kind = stack.kind.name();
    StackLabels {
        pid: process.pid.clone(),
        exe: process.exe.clone(),
        function: label_value(&function),
        location: label_value(&location),
        kind: kind.to_owned(),
    }
}

fn file_name(path: &str) -> &str {
    Path::new(path).file_name().and_then(|name| name.to_str()).unwrap_or(path)
}

/// A label value that cannot break the exposition, at most 200 characters.
fn label_value(text: &str) -> String {
    text.chars().take(200).map(|c| if c.is_control() || c == '"' || c == '\\' { '_' } else { c }).collect()
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
