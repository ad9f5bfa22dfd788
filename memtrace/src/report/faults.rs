//! The `faults` section: page faults by user stack, with the kind of memory they touched.
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use super::{
    NamedStack, ReportFrame,
    text::{frame_line, thousands},
};
use crate::faults::{FaultTable, KindCounts};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultsSection {
    /// One sample was taken every `period` faults; every count is samples × period.
    pub period: u64,
    /// The counts are estimates scaled from samples (`period` > 1).
    pub scaled: bool,
    pub minor: u64,
    pub major: u64,
    /// Minor and major faults by the kind of memory the faulting address is in.
    pub kinds: KindCounts,
    pub processes: Vec<ProcessFaults>,
    /// Distinct stacks that faulted (before `--top`).
    pub stacks_total: u64,
    /// Stacks by faults (minor + major), most first.
    pub stacks: Vec<FaultStack>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessFaults {
    pub pid: u32,
    pub minor: u64,
    pub major: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultStack {
    pub pid: u32,
    pub minor: u64,
    pub major: u64,
    pub kinds: KindCounts,
    /// Innermost first: frame 0 is the instruction that faulted.
    pub frames: Vec<ReportFrame>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// The stack walk was cut short after the last frame.
    #[serde(default)]
    pub truncated: bool,
}

impl FaultsSection {
    /// Builds the section for `pids`, naming the `top` stacks with `frames_of`.
    pub fn build(
        table: &FaultTable,
        pids: &[u32],
        top: Option<usize>,
        mut frames_of: impl FnMut(u32, i32) -> Result<NamedStack, String>,
    ) -> Self {
        let all = table.all();
        let mut stacks: Vec<_> = table.stacks().collect();
        stacks.sort_by_key(|(_, _, counts)| std::cmp::Reverse(counts.minor + counts.major));
        let stacks_total = stacks.len() as u64;
        let stacks = stacks
            .into_iter()
            .take(top.unwrap_or(usize::MAX))
            .map(|(pid, stack_id, counts)| {
                let (frames, unavailable, truncated) = match frames_of(pid, stack_id) {
                    Ok(named) => (named.frames.into_iter().map(ReportFrame::from).collect(), None, named.truncated),
                    Err(why) => (Vec::new(), Some(why), false),
                };
                FaultStack { pid, minor: counts.minor, major: counts.major, kinds: counts.kinds, frames, unavailable, truncated }
            })
            .collect();
        let processes = pids
            .iter()
            .map(|&pid| {
                let counts = table.process(pid);
                ProcessFaults { pid, minor: counts.minor, major: counts.major }
            })
            .collect();
        FaultsSection {
            period: table.period(),
            scaled: table.period() > 1,
            minor: all.minor,
            major: all.major,
            kinds: all.kinds,
            processes,
            stacks_total,
            stacks,
        }
    }
}

/// Text: the totals, the kind breakdown, then the top stacks.
pub fn render_text(section: &FaultsSection, top: Option<usize>, out: &mut dyn Write) -> io::Result<()> {
    let estimate = if section.scaled { format!(" (estimated: one fault in {} sampled)", section.period) } else { String::new() };
    writeln!(out)?;
    writeln!(out, "Page faults: {} minor, {} major{estimate}", thousands(section.minor), thousands(section.major))?;
    let kinds = &section.kinds;
    writeln!(
        out,
        "    by memory: heap {}, stack {}, anonymous {}, file {}, shared memory {}, other {}",
        thousands(kinds.heap),
        thousands(kinds.stack),
        thousands(kinds.anonymous),
        thousands(kinds.file),
        thousands(kinds.shm),
        thousands(kinds.other)
    )?;
    let shown = top.unwrap_or(super::text::DEFAULT_TOP).min(section.stacks.len());
    for (rank, stack) in section.stacks.iter().take(shown).enumerate() {
        writeln!(out)?;
        writeln!(out, "faults #{}: {} minor, {} major (pid {})", rank + 1, thousands(stack.minor), thousands(stack.major), stack.pid)?;
        if let Some(why) = &stack.unavailable {
            writeln!(out, "    (stack unavailable: {why})")?;
        }
        for (depth, frame) in stack.frames.iter().enumerate() {
            writeln!(out, "    #{depth:<2} {}", frame_line(frame))?;
        }
        if stack.truncated {
            writeln!(out, "    {}", super::text::TRUNCATED_NOTE)?;
        }
    }
    if (shown as u64) < section.stacks_total {
        writeln!(out, "\n... {} more faulting stacks (use --top N to see more)", section.stacks_total - shown as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use memtrace_common::{Event, EventKind, fault};

    use super::*;

    fn sample(stack_id: i32, major: bool) -> Event {
        Event {
            kind: EventKind::Fault as u32,
            tgid: 0,
            stack_id,
            flags: if major { fault::MAJOR } else { 0 },
            size: 10,
            addr: u64::MAX - 4096,
            old_addr: 0,
            old_size: 0,
            timestamp_ns: 1,
        }
    }

    #[test]
    fn stacks_are_ranked_by_faults_cut_at_top_and_scaled_counts_are_marked() {
        let mut table = FaultTable::new(10);
        for _ in 0..3 {
            table.record(&sample(7, false));
        }
        table.record(&sample(8, true));
        table.record(&sample(-14, false));
        let section = FaultsSection::build(&table, &[0], Some(2), |_, stack_id| {
            if stack_id < 0 { Err("no stack".to_owned()) } else { Ok(NamedStack::default()) }
        });
        assert_eq!((section.minor, section.major, section.period, section.scaled), (40, 10, 10, true));
        assert_eq!(section.stacks_total, 3);
        assert_eq!(section.stacks.len(), 2);
        assert_eq!((section.stacks[0].minor, section.stacks[0].major), (30, 0));
        assert_eq!(section.processes, [ProcessFaults { pid: 0, minor: 40, major: 10 }]);
        // The JSON form loads back as it was.
        let json = serde_json::to_string(&section).unwrap();
        assert_eq!(serde_json::from_str::<FaultsSection>(&json).unwrap(), section);

        let mut text = Vec::new();
        render_text(&section, None, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("Page faults: 40 minor, 10 major (estimated: one fault in 10 sampled)"), "{text}");
        assert!(text.contains("... 1 more faulting stacks"), "{text}");
    }
}
