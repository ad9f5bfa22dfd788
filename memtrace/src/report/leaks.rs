//! The report's leak-kind totals and the outcome of `--check`.
use serde::{Deserialize, Serialize};

/// What can still reach a block when its process ends, in valgrind's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeakKind {
    /// No pointer to the block anywhere.
    DefinitelyLost,
    /// Only reachable from definitely lost blocks.
    IndirectlyLost,
    /// Only pointers into its middle reach it.
    PossiblyLost,
    /// A pointer to its start from a root (data, bss, a stack, a register) or a reachable block.
    StillReachable,
}

impl LeakKind {
    pub const ALL: [LeakKind; 4] =
        [LeakKind::DefinitelyLost, LeakKind::IndirectlyLost, LeakKind::PossiblyLost, LeakKind::StillReachable];

    /// The name used in reports and on the command line (`definitely_lost`, ...).
    pub fn name(self) -> &'static str {
        match self {
            LeakKind::DefinitelyLost => "definitely_lost",
            LeakKind::IndirectlyLost => "indirectly_lost",
            LeakKind::PossiblyLost => "possibly_lost",
            LeakKind::StillReachable => "still_reachable",
        }
    }

    /// For people: "definitely lost".
    pub fn words(self) -> &'static str {
        match self {
            LeakKind::DefinitelyLost => "definitely lost",
            LeakKind::IndirectlyLost => "indirectly lost",
            LeakKind::PossiblyLost => "possibly lost",
            LeakKind::StillReachable => "still reachable",
        }
    }

    /// Parses a name as written on the command line: `definite`, `definitely_lost`,
    /// `definitely-lost` (valgrind's short names work too).
    pub fn parse(text: &str) -> Option<LeakKind> {
        match text.trim().replace('-', "_").as_str() {
            "definite" | "definitely_lost" => Some(LeakKind::DefinitelyLost),
            "indirect" | "indirectly_lost" => Some(LeakKind::IndirectlyLost),
            "possible" | "possibly_lost" => Some(LeakKind::PossiblyLost),
            "reachable" | "still_reachable" => Some(LeakKind::StillReachable),
            _ => None,
        }
    }
}

/// The kinds that fail `--check` unless `--fail-on` says otherwise: lost memory, as valgrind's
/// default `--errors-for-leak-kinds=definite,possible` minus possible (whose interior pointers
/// are often legitimate), and as LeakSanitizer, which reports only unreachable blocks.
pub const DEFAULT_FAIL_ON: [LeakKind; 2] = [LeakKind::DefinitelyLost, LeakKind::IndirectlyLost];

/// Bytes and blocks per leak kind over every scanned process: valgrind's "LEAK SUMMARY".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ScanTiming {
    /// Time the scans took (the processes were held that long), in seconds.
    pub seconds: f64,
    /// `record --scan`: how long the processes were stopped in all (stopping every thread,
    /// the scan, letting them go), in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_seconds: Option<f64>,
}

impl LeakSummary {
    /// (bytes, blocks) of one kind.
    pub fn of_kind(&self, kind: LeakKind) -> (u64, u64) {
        let mut copy = *self;
        let (bytes, blocks) = copy.of_kind_mut(kind);
        (*bytes, *blocks)
    }

    pub fn of_kind_mut(&mut self, kind: LeakKind) -> (&mut u64, &mut u64) {
        match kind {
            LeakKind::DefinitelyLost => (&mut self.definitely_lost_bytes, &mut self.definitely_lost_blocks),
            LeakKind::IndirectlyLost => (&mut self.indirectly_lost_bytes, &mut self.indirectly_lost_blocks),
            LeakKind::PossiblyLost => (&mut self.possibly_lost_bytes, &mut self.possibly_lost_blocks),
            LeakKind::StillReachable => (&mut self.still_reachable_bytes, &mut self.still_reachable_blocks),
        }
    }
}

/// What `--check` decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// The processes those stacks belong to (pids, in the order of `processes`).
    #[serde(default)]
    pub failing_processes: Vec<u32>,
}
