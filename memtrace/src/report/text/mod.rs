//! Text for people: the top stacks with file:line per frame, then the totals.
mod faults;
mod memory;
pub(super) mod units;

use std::io::{self, Write};

use units::{bytes, frame_line, plural};

use super::{Growth, Kind, LeakKind, LeakSummary, Mode, Report, Stack, options::KindFilter, printable::printable};

/// Stacks shown when `--top` is not given.
pub const DEFAULT_TOP: usize = 10;

/// Shown after the last frame of a stack whose walk was cut short.
pub const TRUNCATED_NOTE: &str = "... (truncated: the unwinder could not go past this frame)";

/// Which stacks a text report leaves out for `--kinds`, and how many it left out.
#[derive(Debug, Clone, Copy)]
pub struct KindsShown {
    /// The kinds shown, when not all are.
    pub kinds: Option<KindFilter>,
    /// Stacks of the report left out for being of other kinds.
    pub hidden: u64,
}

impl KindsShown {
    pub const ALL: KindsShown = KindsShown { kinds: None, hidden: 0 };
}

/// Renders `report`, whose stacks are already those of the kinds shown (`shown` says which
/// were left out).
pub fn render(report: &Report, top: Option<usize>, shown: KindsShown, out: &mut dyn Write) -> io::Result<()> {
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
    if let Some(kinds) = shown.kinds {
        let words: Vec<&str> = kinds.kinds().into_iter().map(LeakKind::words).collect();
        let words = if words.is_empty() { "no leak kind".to_owned() } else { words.join(", ") };
        writeln!(out, "Showing {words} (--kinds); {} of other kinds left out", plural(shown.hidden, "stack"))?;
    }
    let shown_count = top.unwrap_or(DEFAULT_TOP).min(report.stacks.len());
    let groups = groups(report, shown_count);
    let several = groups.len() > 1;
    let mut rank = 0;
    for (process, stacks) in groups {
        if several {
            writeln!(out)?;
            writeln!(out, "{}", process_heading(report, process))?;
        }
        // Scanned stacks are grouped by leak kind, most serious first, by bytes within a kind.
        let mut group = None;
        for stack in stacks {
            rank += 1;
            writeln!(out)?;
            if stack.leak_kind.is_some() && stack.leak_kind != group {
                group = stack.leak_kind;
                writeln!(out, "{}:", capitalized(stack.leak_kind.map_or("", LeakKind::words)))?;
            }
            write_stack(rank, stack, out)?;
        }
    }
    let more = summary.stacks_total.saturating_sub(shown_count as u64).saturating_sub(shown.hidden);
    if more > 0 {
        let noun = if more == 1 { "stack" } else { "stacks" };
        writeln!(out, "\n... {} more {noun} (use --top N to see more)", units::thousands(more))?;
    }
    if report.processes.len() > 1 {
        writeln!(out)?;
        writeln!(out, "Processes:")?;
        for process in &report.processes {
            writeln!(
                out,
                "    pid {:<8} {} in {} outstanding{}, {} ({}) {}",
                process.pid,
                bytes(process.summary.outstanding_bytes),
                plural(process.summary.outstanding_allocations, "allocation"),
                process.leaks.map(|leaks| format!("; {}", leak_words(&leaks))).unwrap_or_default(),
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
    if counts.allocator_mmap_bytes > 0 {
        writeln!(
            out,
            "The C library's own mappings (thread stacks it keeps for reuse, malloc arenas): {}, not counted above",
            bytes(counts.allocator_mmap_bytes),
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

/// The first `count` stacks, by process when they come from several (in the order of
/// `processes`, then any other pid), each group by leak kind.
fn groups(report: &Report, count: usize) -> Vec<(u32, Vec<&Stack>)> {
    let mut groups: Vec<(u32, Vec<&Stack>)> = Vec::new();
    for stack in report.stacks.iter().take(count) {
        match groups.iter_mut().find(|(pid, _)| *pid == stack.pid) {
            Some((_, stacks)) => stacks.push(stack),
            None => groups.push((stack.pid, vec![stack])),
        }
    }
    let position = |pid: u32| report.processes.iter().position(|process| process.pid == pid).unwrap_or(usize::MAX);
    groups.sort_by_key(|(pid, _)| (position(*pid), *pid));
    for (_, stacks) in &mut groups {
        stacks.sort_by_key(|stack| stack.leak_kind.map_or(4, |kind| kind as u8));
    }
    groups
}

/// `Process 123 (./t_leak a): exited with code 0; definitely lost 64 bytes in 1 block`.
fn process_heading(report: &Report, pid: u32) -> String {
    match report.processes.iter().find(|process| process.pid == pid) {
        Some(process) => format!(
            "Process {pid} ({}): {}{}",
            printable(&process.command.join(" ")),
            ending(process.exit_code, process.signal, process.exited),
            process.leaks.map(|leaks| format!("; {}", leak_words(&leaks))).unwrap_or_default(),
        ),
        None => format!("Process {pid}:"),
    }
}

/// The leak kinds a process has blocks of, or that it has none.
fn leak_words(leaks: &LeakSummary) -> String {
    let parts: Vec<String> = LeakKind::ALL
        .iter()
        .filter_map(|&kind| {
            let (bytes_of, blocks) = leaks.of_kind(kind);
            (blocks > 0 || bytes_of > 0)
                .then(|| format!("{} {} in {}", kind.words(), bytes(bytes_of), plural(blocks, "block")))
        })
        .collect();
    if parts.is_empty() { "no blocks left".to_owned() } else { parts.join(", ") }
}

/// One stack: its headline, then a line per frame.
fn write_stack(rank: usize, stack: &Stack, out: &mut dyn Write) -> io::Result<()> {
    let (what, unit) = match stack.kind {
        Kind::Heap => ("", "allocation"),
        Kind::Mmap => (" mapped", "mapping"),
        Kind::Shm => (" of shared memory", "mapping"),
        Kind::Brk => (" of break growth", "increment"),
        Kind::Allocator => (" mapped by the C library for itself", "mapping"),
    };
    writeln!(
        out,
        "#{rank}: {}{what} in {} (pid {}){}",
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
    Ok(())
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
        Mode::Serve => "served",
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
        let parts = breakdown
            .trim_end_matches(')')
            .split(", ")
            .map(|part| number(part.rsplit(' ').next().unwrap_or("")))
            .collect();
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
            render(&report(collection, lost.clone()), None, KindsShown::ALL, &mut text).expect("rendered");
            let (total, parts) = lost_line(&String::from_utf8(text).expect("text"));
            assert_eq!(parts.len(), LOSSES.len() + 1);
            assert_eq!(parts.iter().sum::<u64>(), total, "{collection:?}");
            assert_eq!(total, 255 + 1000);
        }
    }
}
