//! Text for people: the top stacks with file:line per frame, then the totals.
use std::{
    io::{self, Write},
    path::Path,
};

use super::{Kind, Mode, Report, ReportFrame};
use crate::reachability::LeakKind;

/// Stacks shown when `--top` is not given.
pub const DEFAULT_TOP: usize = 10;

/// Shown after the last frame of a stack whose walk was cut short.
pub const TRUNCATED_NOTE: &str = "... (truncated: the unwinder could not go past this frame)";

pub fn render(report: &Report, top: Option<usize>, out: &mut dyn Write) -> io::Result<()> {
    let summary = &report.summary;
    let counts = &summary.counts;
    writeln!(out, "memtrace: {}", headline(report))?;
    writeln!(
        out,
        "{} in {} still outstanding, from {} {}",
        bytes(counts.outstanding_bytes),
        plural(counts.outstanding_allocations, "allocation"),
        summary.stacks_total,
        if summary.stacks_total == 1 { "stack" } else { "stacks" },
    )?;
    let shown = top.unwrap_or(DEFAULT_TOP).min(report.stacks.len());
    // Scanned stacks are grouped by leak kind, most serious first, by bytes within a kind.
    let mut ordered: Vec<&super::Stack> = report.stacks.iter().take(shown).collect();
    ordered.sort_by_key(|stack| stack.leak_kind.map_or(4, |kind| kind as u8));
    let mut group = None;
    for (rank, stack) in ordered.into_iter().enumerate() {
        writeln!(out)?;
        if stack.leak_kind.is_some() && stack.leak_kind != group {
            group = stack.leak_kind;
            writeln!(out, "{}:", capitalized(stack.leak_kind.map_or("", LeakKind::words)))?;
        }
        let (what, unit) = match stack.kind {
            Kind::Heap => ("", "allocation"),
            Kind::Mmap => (" mapped", "mapping"),
            Kind::Shm => (" of shared memory", "mapping"),
            Kind::Brk => (" of break growth", "increment"),
        };
        writeln!(
            out,
            "#{}: {}{what} in {} (pid {}){}",
            rank + 1,
            bytes(stack.bytes),
            plural(stack.allocations, unit),
            stack.pid,
            stack.growth.map(growth_note).unwrap_or_default(),
        )?;
        if let Some(by) = &stack.suppressed_by {
            writeln!(out, "    (suppressed by {by})")?;
        }
        if let Some(why) = &stack.unavailable {
            writeln!(out, "    (stack unavailable: {why})")?;
        }
        for (depth, frame) in stack.frames.iter().enumerate() {
            writeln!(out, "    #{depth:<2} {}", frame_line(frame))?;
        }
        if stack.truncated {
            writeln!(out, "    {TRUNCATED_NOTE}")?;
        }
    }
    if (shown as u64) < summary.stacks_total {
        writeln!(out, "\n... {} more stacks (use --top N to see more)", summary.stacks_total - shown as u64)?;
    }
    if report.processes.len() > 1 {
        writeln!(out)?;
        writeln!(out, "Processes:")?;
        for process in &report.processes {
            writeln!(
                out,
                "    pid {:<8} {} in {} outstanding, {} ({}) {}",
                process.pid,
                bytes(process.summary.outstanding_bytes),
                plural(process.summary.outstanding_allocations, "allocation"),
                process.command.join(" "),
                ending(process.exit_code, process.signal, process.exited),
                process.parent_pid.map(|parent| format!("child of {parent}")).unwrap_or_default(),
            )?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "Totals: {} ({}), {} ({}); {} of blocks not held (allocated before tracing or freed twice by the allocator), {} of NULL",
        plural(counts.total_allocations, "allocation"),
        bytes(counts.total_allocated_bytes),
        plural(counts.total_frees, "free"),
        bytes(counts.total_freed_bytes),
        plural(counts.unknown_frees, "free"),
        plural(summary.null_frees, "free"),
    )?;
    if let Some(leaks) = &summary.leaks {
        let parts: Vec<String> = LeakKind::ALL
            .iter()
            .map(|&kind| {
                let (bytes_of, blocks) = leaks.of_kind(kind);
                format!("{} {} in {}", kind.words(), bytes(bytes_of), plural(blocks, "block"))
            })
            .collect();
        writeln!(out, "Leak summary: {}", parts.join(", "))?;
    }
    if let Some(check) = &report.check {
        writeln!(
            out,
            "Check: {}: {} in {} {} (threshold {}); {} in {} suppressed",
            if check.passed { "passed" } else { "FAILED" },
            bytes(check.failing_bytes),
            plural(check.failing_blocks, "block"),
            check.fail_on.iter().map(|kind| kind.words()).collect::<Vec<_>>().join(" or "),
            bytes(check.leak_threshold),
            bytes(check.suppressed_bytes),
            plural(check.suppressed_blocks, "block"),
        )?;
    }
    if counts.mmap_bytes + counts.shm_bytes + counts.brk_bytes > 0 {
        writeln!(
            out,
            "Outside malloc: {} mapped, {} of shared memory, {} of break growth still held",
            bytes(counts.mmap_bytes),
            bytes(counts.shm_bytes),
            bytes(counts.brk_bytes),
        )?;
    }
    let lost = &summary.lost;
    writeln!(
        out,
        "Lost: {} (ring buffer full {}, stack capture failed {}, in-flight table full {}, returns missed {}, results unreadable {}, undecodable {})",
        plural(summary.lost_events, "event"),
        lost.ring_buffer_full,
        lost.stack_capture_failed,
        lost.in_flight_full,
        lost.stale_in_flight,
        lost.argument_unreadable,
        lost.malformed,
    )?;
    if let Some(faults) = &report.faults {
        super::faults::render_text(faults, top, out)?;
    }
    super::memory::render_text(&report.memory, out)
}

/// Interval growth after a stack's headline; leak suspects stand out.
fn growth_note(growth: crate::growth::Growth) -> String {
    let mark = if growth.leak_suspect { "LEAK SUSPECT: " } else { "" };
    format!(" [{mark}grew in {} of {} intervals]", growth.grew_in, growth.intervals)
}

fn ending(exit_code: Option<i32>, signal: Option<i32>, exited: bool) -> String {
    match (exit_code, signal) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) if exited => "exited".to_owned(),
        (None, None) => "is still running".to_owned(),
    }
}

fn headline(report: &Report) -> String {
    let target = &report.target;
    let command = target.command.join(" ");
    let ending = ending(target.exit_code, target.signal, target.exited);
    let verb = match report.mode {
        Mode::Run => "ran",
        Mode::Record => "recorded",
    };
    format!(
        "{verb} pid {} ({command}) for {:.2} s; it {ending}; allocator {}",
        target.pid, report.duration_seconds, report.allocator
    )
}

pub(super) fn frame_line(frame: &ReportFrame) -> String {
    let mut line = frame.address.clone();
    line.push_str(" in ");
    line.push_str(frame.function.as_deref().unwrap_or("??"));
    if frame.inlined {
        line.push_str(" (inlined)");
    }
    if let Some(file) = &frame.file {
        line.push_str(&format!(" at {file}"));
        if let Some(number) = frame.line {
            line.push_str(&format!(":{number}"));
        }
    }
    match (&frame.module, &frame.module_offset) {
        (Some(module), Some(offset)) if frame.function.is_none() => {
            line.push_str(&format!(" ({}+{offset})", basename(module)))
        }
        (Some(module), _) => line.push_str(&format!(" ({})", basename(module))),
        (None, _) => {}
    }
    line
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

fn basename(path: &str) -> &str {
    Path::new(path).file_name().and_then(|name| name.to_str()).unwrap_or(path)
}

fn plural(count: u64, noun: &str) -> String {
    if count == 1 { format!("1 {noun}") } else { format!("{} {noun}s", thousands(count)) }
}

fn bytes(count: u64) -> String {
    if count == 1 { "1 byte".to_owned() } else { format!("{} bytes", thousands(count)) }
}

/// 1234567 as "1,234,567".
pub(super) fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(plural(1, "allocation"), "1 allocation");
        assert_eq!(bytes(4096), "4,096 bytes");
    }

    #[test]
    fn unnamed_frames_show_module_and_offset() {
        let frame = ReportFrame {
            address: "0x7f00".into(),
            function: None,
            file: None,
            line: None,
            module: Some("/usr/lib/libfoo.so".into()),
            module_offset: Some("0x1234".into()),
            inlined: false,
        };
        assert_eq!(frame_line(&frame), "0x7f00 in ?? (libfoo.so+0x1234)");
    }
}
