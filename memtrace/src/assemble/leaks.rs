//! The report's leak-kind totals (valgrind's LEAK SUMMARY), for all processes and for each, and
//! how long the scans took.
use std::collections::HashMap;

use crate::{
    analyze::reachability::LeakKinds,
    collect::{MemoryKind, heap::StackTotal},
    report::{LeakSummary, ScanTiming},
};

/// Bytes and blocks per leak kind over the heap stacks of every scanned process.
pub fn leak_summary(totals: &[StackTotal], leaks: &LeakKinds) -> LeakSummary {
    let mut summary = LeakSummary { scanned_processes: leaks.scans.len() as u64, ..LeakSummary::default() };
    for total in totals.iter().filter(|total| total.kind == MemoryKind::Heap) {
        add(&mut summary, total);
    }
    summary
}

/// The same for each scanned process on its own (`scanned_processes` is 1 in each).
pub fn by_process(totals: &[StackTotal], leaks: &LeakKinds) -> HashMap<u32, LeakSummary> {
    let mut by_process: HashMap<u32, LeakSummary> = leaks
        .scans
        .iter()
        .map(|(pid, _)| (*pid, LeakSummary { scanned_processes: 1, ..LeakSummary::default() }))
        .collect();
    for total in totals.iter().filter(|total| total.kind == MemoryKind::Heap) {
        if let Some(summary) = by_process.get_mut(&total.tgid) {
            add(summary, total);
        }
    }
    by_process
}

fn add(summary: &mut LeakSummary, total: &StackTotal) {
    if let Some(kind) = total.leak {
        let (bytes, blocks) = summary.of_kind_mut(kind);
        *bytes = bytes.saturating_add(total.bytes);
        *blocks = blocks.saturating_add(total.allocations);
    }
}

/// The scans' time, and with `record --scan` how long the processes were stopped.
pub fn scan_timing(leaks: &LeakKinds) -> ScanTiming {
    ScanTiming {
        seconds: leaks.scans.iter().map(|(_, stats)| stats.micros).fold(0, u64::saturating_add) as f64 / 1e6,
        stopped_seconds: (!leaks.stops.is_empty())
            .then(|| leaks.stops.iter().map(|(_, duration)| duration.as_secs_f64()).sum()),
    }
}
