//! Text for the `faults` section: the totals, the kind breakdown, then the top stacks.
use std::io::{self, Write};

use super::units::{frame_line, thousands};
use crate::report::{FaultsSection, printable::printable};

/// Text: the totals, the kind breakdown, then the top stacks.
pub fn render_text(section: &FaultsSection, top: Option<usize>, out: &mut dyn Write) -> io::Result<()> {
    let estimate =
        if section.scaled { format!(" (estimated: one fault in {} sampled)", section.period) } else { String::new() };
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
    let shown = top.unwrap_or(super::DEFAULT_TOP).min(section.stacks.len());
    for (rank, stack) in section.stacks.iter().take(shown).enumerate() {
        writeln!(out)?;
        writeln!(
            out,
            "faults #{}: {} minor, {} major (pid {})",
            rank + 1,
            thousands(stack.minor),
            thousands(stack.major),
            stack.pid
        )?;
        if let Some(why) = &stack.unavailable {
            writeln!(out, "    (stack unavailable: {})", printable(why))?;
        }
        for (depth, frame) in stack.frames.iter().enumerate() {
            writeln!(out, "    #{depth:<2} {}", frame_line(frame))?;
        }
        if stack.truncated {
            writeln!(out, "    {}", super::TRUNCATED_NOTE)?;
        }
    }
    if let Some(more) = section.stacks_total.checked_sub(shown as u64).filter(|&more| more > 0) {
        writeln!(out, "\n... {more} more faulting stacks (use --top N to see more)")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{FaultStack, KindCounts};

    #[test]
    fn scaled_counts_are_marked_and_stacks_beyond_top_are_counted() {
        let stack = |minor| FaultStack {
            pid: 1,
            minor,
            major: 0,
            kinds: KindCounts::default(),
            frames: Vec::new(),
            unavailable: None,
            truncated: false,
        };
        let section = FaultsSection {
            period: 10,
            scaled: true,
            minor: 40,
            major: 10,
            kinds: KindCounts { heap: 30, stack: 0, anonymous: 10, file: 10, shm: 0, other: 0 },
            processes: Vec::new(),
            stacks_total: 3,
            stacks: vec![stack(30), stack(10)],
        };
        let mut text = Vec::new();
        render_text(&section, Some(2), &mut text).expect("rendered");
        let text = String::from_utf8(text).expect("text");
        assert!(text.contains("Page faults: 40 minor, 10 major (estimated: one fault in 10 sampled)"), "{text}");
        assert!(
            text.contains("by memory: heap 30, stack 0, anonymous 10, file 10, shared memory 0, other 0"),
            "{text}"
        );
        assert!(text.contains("faults #2: 10 minor, 0 major (pid 1)"), "{text}");
        assert!(text.contains("... 1 more faulting stacks"), "{text}");
    }
}
