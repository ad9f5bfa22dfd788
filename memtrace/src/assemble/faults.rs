//! The report's `faults` section from the fault table: totals, per process, and the stacks
//! with the most faults, named.
use super::{NamedStack, report_frame};
use crate::{
    collect::fault_table::FaultTable,
    report::{FaultStack, FaultsSection, ProcessFaults},
};

/// The faults section for `pids`, naming the `top` stacks with `frames_of`.
pub fn faults_section(
    table: &FaultTable,
    pids: &[u32],
    top: Option<usize>,
    mut frames_of: impl FnMut(u32, i32) -> Result<NamedStack, String>,
) -> FaultsSection {
    let all = table.all();
    let mut stacks: Vec<_> = table.stacks().collect();
    stacks.sort_by_key(|(_, _, counts)| std::cmp::Reverse(counts.minor.saturating_add(counts.major)));
    let stacks_total = stacks.len() as u64;
    let stacks = stacks
        .into_iter()
        .take(top.unwrap_or(usize::MAX))
        .map(|(pid, stack_id, counts)| {
            let (frames, unavailable, truncated) = match frames_of(pid, stack_id) {
                Ok(named) => (named.frames.into_iter().map(report_frame).collect(), None, named.truncated),
                Err(why) => (Vec::new(), Some(why), false),
            };
            FaultStack {
                pid,
                minor: counts.minor,
                major: counts.major,
                kinds: counts.kinds,
                frames,
                unavailable,
                truncated,
            }
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
        let section = faults_section(&table, &[0], Some(2), |_, stack_id| {
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
    }
}
