//! The `faults` section: page faults by user stack, with the kind of memory they touched.
use serde::{Deserialize, Serialize};

use super::ReportFrame;

/// Minor and major faults, by the kind of memory the faulting address is in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KindCounts {
    pub heap: u64,
    pub stack: u64,
    pub anonymous: u64,
    pub file: u64,
    pub shm: u64,
    pub other: u64,
}

impl KindCounts {
    pub fn sum(&mut self, other: &KindCounts) {
        self.heap += other.heap;
        self.stack += other.stack;
        self.anonymous += other.anonymous;
        self.file += other.file;
        self.shm += other.shm;
        self.other += other.other;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProcessFaults {
    pub pid: u32,
    pub minor: u64,
    pub major: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
