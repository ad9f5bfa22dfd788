//! Collapsed stacks ("folded"): one line per stack, frames root first joined by `;`, then a
//! space and the weight. The input flamegraph.pl, inferno and speedscope read as is. Frames are
//! named without parameter lists and template arguments; stacks of a scanned process start with
//! their leak kind (`[definitely lost]`), so that kinds stay apart.
use std::{
    collections::BTreeMap,
    io::{self, Write},
    path::Path,
};

use super::{Kind, LeakKind, Report, ReportFrame, Stack, frame_names::short_function_name, options::Weight};

pub fn render(report: &Report, weight: Weight, top: Option<usize>, out: &mut dyn Write) -> io::Result<()> {
    for line in lines(report, weight, top) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// The folded lines, sorted. Stacks that differ only in addresses (the same functions reached
/// from different call sites in one function) fold into one line with their weights summed.
/// With `--weight faults`, the faulting stacks of a report made with `--faults` (none without).
pub fn lines(report: &Report, weight: Weight, top: Option<usize>) -> Vec<String> {
    weighted_paths(report, weight, top).into_iter().map(|(path, value)| format!("{path} {value}")).collect()
}

/// Each folded path and its weight (summed, saturating at u64::MAX), sorted by path.
pub fn weighted_paths(report: &Report, weight: Weight, top: Option<usize>) -> Vec<(String, u64)> {
    let several_processes = report.processes.len() > 1;
    let top = top.unwrap_or(usize::MAX);
    let weighted: Vec<(u64, String)> = match weight {
        Weight::Bytes | Weight::Allocations => report
            .stacks
            .iter()
            .take(top)
            .map(|stack| {
                let value = if weight == Weight::Bytes { stack.bytes } else { stack.allocations };
                (value, path(stack.pid, several_processes, &roots(stack), &stack.frames))
            })
            .collect(),
        Weight::Faults => report
            .faults
            .iter()
            .flat_map(|faults| faults.stacks.iter().take(top))
            .map(|stack| {
                (stack.minor.saturating_add(stack.major), path(stack.pid, several_processes, &[], &stack.frames))
            })
            .collect(),
    };
    let mut folded: BTreeMap<String, u64> = BTreeMap::new();
    for (value, path) in weighted.into_iter().filter(|(value, _)| *value > 0) {
        let sum = folded.entry(path).or_default();
        *sum = sum.saturating_add(value);
    }
    folded.into_iter().collect()
}

/// The frames a stack's path starts with: its leak kind (and whether it is suppressed), and the
/// kind of memory when not the heap.
fn roots(stack: &Stack) -> Vec<String> {
    let mut roots = Vec::new();
    if let Some(kind) = stack.leak_kind {
        roots.push(leak_root(kind, stack.suppressed_by.is_some()));
    }
    let memory = match stack.kind {
        Kind::Heap => None,
        Kind::Mmap => Some("[mmap]"),
        Kind::Shm => Some("[shared memory]"),
        Kind::Brk => Some("[brk]"),
        Kind::Allocator => Some("[allocator]"),
    };
    roots.extend(memory.map(str::to_owned));
    roots
}

/// The root frame of a leak kind's stacks: `[definitely lost]`, `[still reachable, suppressed]`.
pub fn leak_root(kind: LeakKind, suppressed: bool) -> String {
    format!("[{}{}]", kind.words(), if suppressed { ", suppressed" } else { "" })
}

/// Root first: the process (when there are several), `roots`, then the frames from the
/// outermost in.
fn path(pid: u32, several_processes: bool, roots: &[String], frames: &[ReportFrame]) -> String {
    let mut names = Vec::new();
    if several_processes {
        names.push(format!("pid {pid}"));
    }
    names.extend(roots.iter().cloned());
    if frames.is_empty() {
        names.push("[stack unavailable]".to_owned());
    }
    names.extend(frames.iter().rev().map(frame_name));
    names.join(";")
}

/// A frame's name: its function without parameters and template arguments, or where it is
/// (module+offset, or the bare address) so that it never vanishes. `;` separates frames and a
/// newline ends the line: neither may appear.
pub fn frame_name(frame: &ReportFrame) -> String {
    let name = match (&frame.function, &frame.module, &frame.module_offset) {
        (Some(function), _, _) => short_function_name(function),
        (None, Some(module), Some(offset)) => format!("{}+{offset}", basename(module)),
        (None, _, _) => frame.address.clone(),
    };
    name.replace([';', '\n'], ":")
}

fn basename(path: &str) -> &str {
    Path::new(path).file_name().and_then(|name| name.to_str()).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: Option<&str>, address: &str) -> ReportFrame {
        ReportFrame {
            address: address.into(),
            function: function.map(str::to_owned),
            file: None,
            line: None,
            module: Some("/usr/lib/libc.so.6".into()),
            module_offset: Some("0x2724a".into()),
            inlined: false,
        }
    }

    #[test]
    fn frames_go_root_first_and_unnamed_ones_keep_their_place() {
        let frames = vec![frame(Some("grab;it"), "0x1"), frame(Some("main"), "0x2"), frame(None, "0x3")];
        let mmap = ["[mmap]".to_owned()];
        assert_eq!(path(9, false, &mmap, &frames), "[mmap];libc.so.6+0x2724a;main;grab:it");
        assert_eq!(path(9, true, &mmap, &frames), "pid 9;[mmap];libc.so.6+0x2724a;main;grab:it");
        assert_eq!(path(9, false, &[], &[]), "[stack unavailable]");
        let lost = [leak_root(LeakKind::DefinitelyLost, false)];
        let cxx = vec![
            frame(Some("std::vector<int, std::allocator<int> >::push_back(int const&)"), "0x1"),
            frame(Some("main"), "0x2"),
        ];
        assert_eq!(path(9, false, &lost, &cxx), "[definitely lost];main;std::vector::push_back");
        assert_eq!(leak_root(LeakKind::StillReachable, true), "[still reachable, suppressed]");
    }
}
