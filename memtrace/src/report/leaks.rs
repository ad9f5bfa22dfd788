//! The report's leak-kind totals and the outcome of `--check`.
use serde::{Deserialize, Serialize};

use crate::{
    heap::{MemoryKind, StackTotal},
    reachability::{LeakKind, LeakKinds},
};

/// Bytes and blocks per leak kind over every scanned process: valgrind's "LEAK SUMMARY".
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LeakSummary {
    pub definitely_lost_bytes: u64,
    pub definitely_lost_blocks: u64,
    pub indirectly_lost_bytes: u64,
    pub indirectly_lost_blocks: u64,
    pub possibly_lost_bytes: u64,
    pub possibly_lost_blocks: u64,
    pub still_reachable_bytes: u64,
    pub still_reachable_blocks: u64,
    /// Processes whose memory was scanned.
    pub scanned_processes: u64,
}

/// How long the scans took: kept out of `summary`, whose numbers are the same from run to run.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ScanTiming {
    /// Time the scans took (the processes were held that long), in seconds.
    pub seconds: f64,
    /// `record --scan`: how long the processes were stopped in all (stopping every thread,
    /// the scan, letting them go), in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_seconds: Option<f64>,
}

impl ScanTiming {
    pub fn of(leaks: &LeakKinds) -> Self {
        Self {
            seconds: leaks.scans.iter().map(|(_, stats)| stats.micros).fold(0, u64::saturating_add) as f64 / 1e6,
            stopped_seconds: (!leaks.stops.is_empty())
                .then(|| leaks.stops.iter().map(|(_, duration)| duration.as_secs_f64()).sum()),
        }
    }
}

impl LeakSummary {
    pub fn of(totals: &[StackTotal], leaks: &LeakKinds) -> Self {
        let mut summary = LeakSummary {
            scanned_processes: leaks.scans.len() as u64,
            ..Self::default()
        };
        for total in totals.iter().filter(|total| total.kind == MemoryKind::Heap) {
            if let Some(kind) = total.leak {
                let (bytes, blocks) = summary.of_kind_mut(kind);
                *bytes = bytes.saturating_add(total.bytes);
                *blocks = blocks.saturating_add(total.allocations);
            }
        }
        summary
    }

    /// (bytes, blocks) of one kind.
    pub fn of_kind(&self, kind: LeakKind) -> (u64, u64) {
        let mut copy = *self;
        let (bytes, blocks) = copy.of_kind_mut(kind);
        (*bytes, *blocks)
    }

    fn of_kind_mut(&mut self, kind: LeakKind) -> (&mut u64, &mut u64) {
        match kind {
            LeakKind::DefinitelyLost => (&mut self.definitely_lost_bytes, &mut self.definitely_lost_blocks),
            LeakKind::IndirectlyLost => (&mut self.indirectly_lost_bytes, &mut self.indirectly_lost_blocks),
            LeakKind::PossiblyLost => (&mut self.possibly_lost_bytes, &mut self.possibly_lost_blocks),
            LeakKind::StillReachable => (&mut self.still_reachable_bytes, &mut self.still_reachable_blocks),
        }
    }
}

/// What `--check` decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSummary {
    /// No unsuppressed leak of a failing kind beyond the threshold.
    pub passed: bool,
    /// The kinds that fail the check (`--fail-on`).
    pub fail_on: Vec<LeakKind>,
    /// Bytes of failing kinds allowed before the check fails (`--leak-threshold`).
    pub leak_threshold: u64,
    /// Unsuppressed bytes and blocks of failing kinds.
    pub failing_bytes: u64,
    pub failing_blocks: u64,
    /// Bytes and blocks (of any kind) in stacks a suppression matched.
    pub suppressed_bytes: u64,
    pub suppressed_blocks: u64,
    /// Stacks of failing kinds that were not suppressed.
    pub failing_stacks: u64,
}
