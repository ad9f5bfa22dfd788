//! The `Report`: the one value every output format renders. The JSON format is this value
//! serialized, so a saved report can be loaded back and rendered again.
#[cfg(test)]
mod crafted;
mod faults;
mod folded;
pub mod frame_names;
mod json;
mod junit;
mod memory;
pub mod options;
pub mod pending_file;
pub mod pprof;
pub mod printable;
pub mod profile_proto;
mod render;
pub mod saved;
pub mod sink;
pub mod svg;
mod text;
pub mod unwind;

use std::collections::BTreeMap;

pub use faults::{FaultStack, FaultsSection, KindCounts, ProcessFaults};
pub use leaks::{CheckSummary, DEFAULT_FAIL_ON, LeakKind, LeakSummary, ScanTiming};
pub use memory::{AllocatorView, CgroupMemory, KindUsage, MappingKind, MappingUsage, MemoryPicture};
use memtrace_common::LOSSES;
use serde::{Deserialize, Serialize};
pub use unwind::UnwindReport;

mod leaks;

pub use json::render as render_json;
pub use render::render;

/// Counts in words, as the text report writes them: `1 block`, `2 blocks`, `4,096 bytes`.
pub mod words {
    pub use super::text::units::{bytes, plural, thousands};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `memtrace run`: memtrace started the target.
    Run,
    /// `memtrace record`: memtrace attached to a running target.
    Record,
    /// `memtrace serve`: the report of one moment of a trace that goes on.
    Serve,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Report {
    pub memtrace_version: String,
    pub mode: Mode,
    pub target: Target,
    /// Seconds from attaching to the end of the trace.
    pub duration_seconds: f64,
    /// The trace's window on CLOCK_MONOTONIC: events outside it are not counted.
    pub window: Window,
    /// The object whose allocator was probed, as the target sees its path.
    pub allocator: String,
    /// All processes together.
    pub summary: Summary,
    /// Each traced process (the target, and in run mode its children) with its own numbers.
    pub processes: Vec<ProcessReport>,
    /// Stacks holding outstanding memory, most bytes first.
    pub stacks: Vec<Stack>,
    /// `--check`: what failed the check, or that it passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckSummary>,
    /// How long the reachability scans took, when there were any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanTiming>,
    /// Stacks that allocated during the trace and hold nothing at its end (everything they
    /// allocated was freed), most bytes allocated first: pprof's `alloc_space` needs them.
    #[serde(default)]
    pub released_stacks: Vec<Stack>,
    /// Page faults by stack (`--faults`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<FaultsSection>,
    /// Each process's memory picture at the end of the trace, the target first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub memory: Vec<MemoryPicture>,
    /// What memtrace itself used, up to the report.
    #[serde(default)]
    pub agent: AgentUsage,
    /// `--program-stats`: each kernel-side program's runs and mean time per run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_programs: Vec<ProgramCost>,
    /// How stacks were walked by unwind tables (absent with `--unwind fp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unwind: Option<UnwindReport>,
}

/// memtrace's own cost (not the traced processes'), for the overhead-minded.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AgentUsage {
    /// CPU seconds, user and system, memtrace's own process.
    pub cpu_seconds: f64,
    /// Its peak resident memory.
    pub peak_rss_bytes: u64,
}

impl AgentUsage {
    /// This process's usage so far (its children's excluded).
    pub fn of_this_process() -> Self {
        // SAFETY: getrusage fills the struct we pass.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
            return Self::default();
        }
        let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
        Self {
            cpu_seconds: seconds(usage.ru_utime) + seconds(usage.ru_stime),
            peak_rss_bytes: (usage.ru_maxrss.max(0) as u64).saturating_mul(1024),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Target {
    pub pid: u32,
    /// The command line (run mode: as given; record mode: from /proc/PID/cmdline).
    pub command: Vec<String>,
    /// Exit code, when the target exited normally during the trace.
    pub exit_code: Option<i32>,
    /// The signal that killed the target, when one did.
    pub signal: Option<i32>,
    /// The target ended before the trace did.
    pub exited: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Window {
    /// When every probe was in place (ns of CLOCK_MONOTONIC, as `clock_gettime` reports it).
    pub start_monotonic_ns: u64,
    /// When the trace ended; probes removed after it no longer count.
    pub end_monotonic_ns: u64,
}

/// Allocation numbers, for one process or for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Counts {
    pub outstanding_bytes: u64,
    pub outstanding_allocations: u64,
    pub total_allocations: u64,
    pub total_allocated_bytes: u64,
    pub total_frees: u64,
    pub total_freed_bytes: u64,
    /// Frees of blocks the trace did not hold: allocated before it began (record mode), or
    /// handed back again by the allocator's housekeeping (glibc's thread-exit cache flush).
    /// Not errors.
    pub unknown_frees: u64,
    /// realloc calls that failed and kept their block.
    pub failed_reallocs: u64,
    /// Blocks outstanding when their process called exec, which discarded them.
    pub dropped_by_exec: u64,
    /// Private mappings (mmap, mremap) the program's own code made and still holds; not the
    /// allocator's own, not the dynamic loader's.
    pub mmap_bytes: u64,
    /// Shared memory (MAP_SHARED mappings, POSIX and System V shared memory) it still holds.
    pub shm_bytes: u64,
    /// Break growth (brk, sbrk) by the program's own code, not the allocator's.
    pub brk_bytes: u64,
    /// Mappings the dynamic loader made (libraries), left out of `mmap_bytes`.
    pub loader_mmap_bytes: u64,
    /// Mappings the C library made for itself (thread stacks, malloc arenas: stacks of kind
    /// `allocator`), left out of `mmap_bytes`.
    #[serde(default)]
    pub allocator_mmap_bytes: u64,
}

/// One traced process: who it is, how it ended, and its own numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProcessReport {
    pub pid: u32,
    /// The process that forked it (run mode; with `--trace-only`, perhaps one not traced).
    pub parent_pid: Option<u32>,
    /// Its command line, after its last exec.
    pub command: Vec<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// It ended before the trace did.
    pub exited: bool,
    pub summary: Counts,
    /// Its leak kinds, when it was scanned (at its exit in run mode, with `record --scan`).
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub leaks: Option<LeakSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Summary {
    #[serde(flatten)]
    pub counts: Counts,
    /// `free(NULL)` calls.
    pub null_frees: u64,
    /// Everything lost on the way; the breakdown is in `lost`.
    pub lost_events: u64,
    pub lost: Lost,
    /// Distinct stacks holding outstanding memory (before `--top`).
    pub stacks_total: u64,
    /// Page faults of every traced process (`--faults`; scaled when sampled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor_faults: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_faults: Option<u64>,
    /// Leak kinds, when the processes were scanned at their end (run) or `record --scan`.
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub leaks: Option<LeakSummary>,
    /// How the allocator's numbers were gathered: `events` (one per call, the default),
    /// `combined` (added up in the kernel) or `sampled`.
    #[serde(default)]
    pub collection: Collection,
    /// `sampled`: mean bytes between samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_bytes: Option<u64>,
    /// The allocator's numbers (bytes, blocks, totals) are estimates scaled up from a sample.
    #[serde(default)]
    pub estimated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Collection {
    #[default]
    Events,
    Combined,
    Sampled,
}

/// Everything lost on the way, by what lost it: one entry per loss of
/// `memtrace_common::LOSSES` (`ring_buffer_full`, `stack_capture_failed`, ...), zero or not.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Lost(pub BTreeMap<String, u64>);

/// Its schema names each loss of the list, as memtrace writes every one of them.
impl schemars::JsonSchema for Lost {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Lost".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let count = |words: &str| serde_json::json!({ "description": words, "type": "integer", "format": "uint64", "minimum": 0 });
        let properties: serde_json::Map<String, serde_json::Value> =
            LOSSES.iter().map(|loss| (loss.key.to_owned(), count(loss.words))).collect();
        let required: Vec<&str> = LOSSES.iter().map(|loss| loss.key).collect();
        schemars::json_schema!({
            "description": "Everything lost on the way, by what lost it (memtrace_common::LOSSES).",
            "type": "object",
            "properties": properties,
            "required": required,
        })
    }
}

impl Lost {
    /// Every loss added up.
    pub fn total(&self) -> u64 {
        self.0.values().fold(0, |sum, &count| sum.saturating_add(count))
    }

    /// One loss by its key; 0 when the report does not have it.
    pub fn get(&self, key: &str) -> u64 {
        self.0.get(key).copied().unwrap_or(0)
    }

    /// Each loss in the order of `LOSSES`, with its words for people and its hint, then any
    /// key a saved report has that this memtrace does not know (words: the key itself).
    pub fn breakdown(&self) -> Vec<(&str, u64, &'static str)> {
        let known = LOSSES.iter().map(|loss| (loss.words, self.get(loss.key), loss.hint));
        let unknown = self
            .0
            .iter()
            .filter(|(key, _)| !LOSSES.iter().any(|loss| loss.key == key.as_str()))
            .map(|(key, &count)| (key.as_str(), count, ""));
        known.chain(unknown).collect()
    }
}

/// What kind of memory a stack holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Allocator blocks (malloc, new, ...).
    Heap,
    /// Private mappings (mmap, mremap).
    Mmap,
    /// Shared memory (MAP_SHARED, System V).
    Shm,
    /// Break growth (brk, sbrk).
    Brk,
    /// Private mappings the C library made for itself: thread stacks (which glibc keeps for
    /// reuse after the thread ends) and malloc arenas. Not the program's.
    Allocator,
}

impl Kind {
    /// Its name in the JSON, and as pprof's `kind` label and /metrics' `kind`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Heap => "heap",
            Kind::Mmap => "mmap",
            Kind::Shm => "shm",
            Kind::Brk => "brk",
            Kind::Allocator => "allocator",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Stack {
    pub kind: Kind,
    /// Bytes held: blocks' sizes, or mappings' lengths.
    pub bytes: u64,
    /// Blocks (or mappings, or break increments) held.
    pub allocations: u64,
    /// Bytes this stack allocated during the whole trace, freed or not (break growth: 0).
    #[serde(default)]
    pub total_allocated_bytes: u64,
    /// Allocations (or mappings) it made during the whole trace, freed or not.
    #[serde(default)]
    pub total_allocations: u64,
    pub pid: u32,
    /// Innermost first: frame 0 is the code that called the allocator.
    pub frames: Vec<ReportFrame>,
    /// Why there are no frames, when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// The stack walk was cut short after the last frame (code it could not unwind): callers
    /// are missing below it.
    #[serde(default)]
    pub truncated: bool,
    /// Heap blocks of a scanned process: what still reaches them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak_kind: Option<LeakKind>,
    /// The suppression that matched this stack (`--suppressions`, or a built-in one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed_by: Option<String>,
    /// With `--interval`: how its outstanding bytes moved from interval to interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub growth: Option<Growth>,
}

/// How one stack's outstanding bytes moved over the intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Growth {
    /// Intervals observed.
    pub intervals: u64,
    /// Intervals at whose end the stack held more bytes than at the one before (the first
    /// compared with the start of the trace, when it held nothing).
    pub grew_in: u64,
    /// It grew in most intervals (more than half, two at least).
    pub leak_suspect: bool,
}

/// What one kernel-side program cost while stats were on (`--program-stats`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ProgramCost {
    pub program: String,
    pub runs: u64,
    pub ns_per_run: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReportFrame {
    /// The address in the target, `0x…` hexadecimal.
    pub address: String,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub module: Option<String>,
    /// Offset in the module's file, `0x…`, so an unnamed frame can still be looked up.
    pub module_offset: Option<String>,
    /// Inlined into the frame that follows it.
    pub inlined: bool,
}

impl Report {
    /// Adds the page-fault section and its totals.
    pub fn add_faults(&mut self, section: FaultsSection) {
        self.summary.minor_faults = Some(section.minor);
        self.summary.major_faults = Some(section.major);
        self.faults = Some(section);
    }
}
