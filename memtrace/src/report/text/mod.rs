//! Text for people: the top stacks with file:line per frame, then the totals.
mod faults;
mod memory;
mod units;

use std::io::{self, Write};

use units::{bytes, frame_line, plural};

use super::{Growth, Kind, LeakKind, Mode, Report, printable::printable};

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
            writeln!(out, "    (suppressed by {})", printable(by))?;
        }
        if let Some(why) = &stack.unavailable {
            writeln!(out, "    (stack unavailable: {})", printable(why))?;
        }
        for (depth, frame) in stack.frames.iter().enumerate() {
            writeln!(out, "    #{depth:<2} {}", frame_line(frame))?;
        }
        if stack.truncated {
            writeln!(out, "    {TRUNCATED_NOTE}")?;
        }
    }
    if let Some(more) = summary.stacks_total.checked_sub(shown as u64).filter(|&more| more > 0) {
        writeln!(out, "\n... {more} more stacks (use --top N to see more)")?;
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
                printable(&process.command.join(" ")),
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
    if counts.mmap_bytes > 0 || counts.shm_bytes > 0 || counts.brk_bytes > 0 {
        writeln!(
            out,
            "Outside malloc: {} mapped, {} of shared memory, {} of break growth still held",
            bytes(counts.mmap_bytes),
            bytes(counts.shm_bytes),
            bytes(counts.brk_bytes),
        )?;
    }
    let breakdown: Vec<String> =
        summary.lost.breakdown().into_iter().map(|(words, count, _)| format!("{words} {count}")).collect();
    writeln!(out, "Lost: {} ({})", plural(summary.lost_events, "event"), breakdown.join(", "))?;
    if let Some(faults) = &report.faults {
        faults::render_text(faults, top, out)?;
    }
    memory::render_text(&report.memory, out)
}

/// Interval growth after a stack's headline; leak suspects stand out.
fn growth_note(growth: Growth) -> String {
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
    let command = printable(&command);
    let ending = ending(target.exit_code, target.signal, target.exited);
    let verb = match report.mode {
        Mode::Run => "ran",
        Mode::Record => "recorded",
    };
    format!(
        "{verb} pid {} ({command}) for {:.2} s; it {ending}; allocator {}",
        target.pid,
        report.duration_seconds,
        printable(&report.allocator)
    )
}


fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use memtrace_common::LOSSES;

    use super::*;
    use crate::report::{AgentUsage, Collection, Counts, Lost, Summary, Target, Window};

    fn report(collection: Collection, lost: Lost) -> Report {
        Report {
            memtrace_version: "0".to_owned(),
            mode: Mode::Record,
            target: Target { pid: 1, command: vec!["prog".to_owned()], exit_code: None, signal: None, exited: false },
            duration_seconds: 1.0,
            window: Window { start_monotonic_ns: 0, end_monotonic_ns: 1 },
            allocator: "libc.so.6".to_owned(),
            summary: Summary {
                counts: Counts::default(),
                null_frees: 0,
                lost_events: lost.total(),
                lost,
                stacks_total: 0,
                minor_faults: None,
                major_faults: None,
                leaks: None,
                collection,
                sample_bytes: None,
                estimated: false,
            },
            processes: Vec::new(),
            stacks: Vec::new(),
            check: None,
            scan: None,
            released_stacks: Vec::new(),
            faults: None,
            memory: Vec::new(),
            agent: AgentUsage::default(),
            kernel_programs: Vec::new(),
            unwind: None,
        }
    }

    /// The "Lost:" line of the text report: its total and the numbers of its breakdown.
    fn lost_line(text: &str) -> (u64, Vec<u64>) {
        let line = text.lines().find(|line| line.starts_with("Lost: ")).expect("a Lost line");
        let (head, breakdown) = line.split_once(" (").expect("a breakdown");
        let number = |word: &str| word.replace(',', "").parse::<u64>().expect("a number");
        let total = number(head.trim_start_matches("Lost: ").trim_end_matches(" events").trim_end_matches(" event"));
        let parts = breakdown.trim_end_matches(')').split(", ").map(|part| number(part.rsplit(' ').next().unwrap_or(""))).collect();
        (total, parts)
    }

    #[test]
    fn the_lost_breakdown_adds_up_to_its_total_in_every_collection_mode() {
        // A distinct count for every loss memtrace knows, and one a newer memtrace wrote.
        let mut lost = Lost::default();
        for (index, loss) in LOSSES.iter().enumerate() {
            lost.0.insert(loss.key.to_owned(), 1 << index);
        }
        lost.0.insert("from_the_future".to_owned(), 1000);
        for collection in [Collection::Events, Collection::Combined, Collection::Sampled] {
            let mut text = Vec::new();
            render(&report(collection, lost.clone()), None, &mut text).expect("rendered");
            let (total, parts) = lost_line(&String::from_utf8(text).expect("text"));
            assert_eq!(parts.len(), LOSSES.len() + 1);
            assert_eq!(parts.iter().sum::<u64>(), total, "{collection:?}");
            assert_eq!(total, 255 + 1000);
        }
    }
}
