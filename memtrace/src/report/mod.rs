//! The `Report`: the one value every output format renders. The JSON format is this value
//! serialized, so a saved report can be loaded back and rendered again.
mod faults;
mod folded;
mod json;
mod memory;
mod junit;
mod pprof;
mod profile_proto;
mod render;
mod svg;
mod text;

use serde::{Deserialize, Serialize};

use std::collections::HashMap;

use crate::{
    allocator::is_dynamic_loader,
    cli::SortBy,
    growth::{Growth, GrowthTracker},
    heap::{HeapTable, MemoryKind, ProcessTotals, Scale},
    probes::{KernelCounters, ProgramCost},
    reachability::{LeakKind, LeakKinds},
    symbolize::Frame,
};

pub use faults::{FaultStack, FaultsSection, ProcessFaults};
pub use leaks::{CheckSummary, LeakSummary, ScanTiming};

mod leaks;

pub use json::render as render_json;
pub use render::{RenderOptions, render};
pub use text::render as render_text;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `memtrace run`: memtrace started the target.
    Run,
    /// `memtrace record`: memtrace attached to a running target.
    Record,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub memory: Vec<crate::memory_picture::MemoryPicture>,
    /// What memtrace itself used, up to the report.
    #[serde(default)]
    pub agent: AgentUsage,
    /// `--program-stats`: each kernel-side program's runs and mean time per run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_programs: Vec<ProgramCost>,
    /// How stacks were walked by unwind tables (absent with `--unwind fp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unwind: Option<crate::unwind::UnwindReport>,
}

/// memtrace's own cost (not the traced processes'), for the overhead-minded.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
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
            peak_rss_bytes: usage.ru_maxrss.max(0) as u64 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// When every probe was in place (ns of CLOCK_MONOTONIC, as `clock_gettime` reports it).
    pub start_monotonic_ns: u64,
    /// When the trace ended; probes removed after it no longer count.
    pub end_monotonic_ns: u64,
}

/// Allocation numbers, for one process or for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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
}

impl From<ProcessTotals> for Counts {
    fn from(process: ProcessTotals) -> Self {
        let totals = process.totals;
        Counts {
            mmap_bytes: process.mmap_bytes,
            shm_bytes: process.shm_bytes,
            brk_bytes: process.brk_bytes,
            loader_mmap_bytes: 0,
            outstanding_bytes: process.outstanding_bytes,
            outstanding_allocations: process.outstanding_blocks,
            total_allocations: totals.allocations,
            total_allocated_bytes: totals.allocated_bytes,
            total_frees: totals.frees,
            total_freed_bytes: totals.freed_bytes,
            unknown_frees: totals.unknown_frees,
            failed_reallocs: totals.failed_reallocs,
            dropped_by_exec: totals.dropped_by_exec,
        }
    }
}

/// One traced process: who it is, how it ended, and its own numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessReport {
    pub pid: u32,
    /// The traced process that started it (run mode).
    pub parent_pid: Option<u32>,
    /// Its command line, after its last exec.
    pub command: Vec<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// It ended before the trace did.
    pub exited: bool,
    pub summary: Counts,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Collection {
    #[default]
    Events,
    Combined,
    Sampled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Lost {
    /// Events dropped because the ring buffer was full.
    pub ring_buffer_full: u64,
    /// Allocations whose stack could not be captured (still counted, under an unknown stack).
    pub stack_capture_failed: u64,
    /// Allocations not recorded because the in-flight table was full.
    pub in_flight_full: u64,
    /// Allocations whose return was never seen.
    pub stale_in_flight: u64,
    /// Allocations whose result could not be read from the target (posix_memalign).
    pub argument_unreadable: u64,
    /// Blocks the kernel had no room to track (`--combined`, `--sample-bytes`).
    #[serde(default)]
    pub live_blocks_full: u64,
    /// Blocks from new stacks `--combined` had no room to add up.
    #[serde(default)]
    pub stack_sums_full: u64,
    /// Records the agent could not decode.
    pub malformed: u64,
}

impl Lost {
    pub fn total(&self) -> u64 {
        self.ring_buffer_full
            + self.stack_capture_failed
            + self.in_flight_full
            + self.stale_in_flight
            + self.argument_unreadable
            + self.live_blocks_full
            + self.stack_sums_full
            + self.malformed
    }
}

/// What kind of memory a stack holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl From<MemoryKind> for Kind {
    fn from(kind: MemoryKind) -> Self {
        match kind {
            MemoryKind::Heap => Kind::Heap,
            MemoryKind::Mmap => Kind::Mmap,
            MemoryKind::Shm => Kind::Shm,
            MemoryKind::Brk => Kind::Brk,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

impl From<Frame> for ReportFrame {
    fn from(frame: Frame) -> Self {
        Self {
            address: format!("{:#x}", frame.address),
            function: frame.function,
            file: frame.file,
            line: frame.line,
            module: frame.module,
            module_offset: frame.module_offset.map(|offset| format!("{offset:#x}")),
            inlined: frame.inlined,
        }
    }
}

/// A stack's frames as symbolized, and whether its walk was cut short after the last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamedStack {
    pub frames: Vec<Frame>,
    pub truncated: bool,
}

/// Everything a report is made of besides the stacks' frames.
pub struct ReportInput<'a> {
    pub mode: Mode,
    pub target: Target,
    /// Every traced process; `summary` is filled in from the heap table.
    pub processes: Vec<ProcessReport>,
    pub duration_seconds: f64,
    pub allocator: String,
    pub heap: &'a HeapTable,
    /// Leak kinds of the blocks of the processes scanned.
    pub leaks: &'a LeakKinds,
    pub counters: KernelCounters,
    pub malformed: u64,
    pub window: Window,
    /// Keep only this many stacks.
    pub top: Option<usize>,
    /// Which stacks come first (and are kept by `top`).
    pub sort: SortBy,
    /// `--older-than`: count only blocks allocated before this CLOCK_MONOTONIC time.
    pub allocated_before_ns: Option<u64>,
    /// Interval samples taken (`--interval`), and each stack's growth over them.
    pub growth: &'a GrowthTracker,
    /// Fill in `released_stacks` (JSON and pprof show them; text, folded and svg do not).
    pub with_released: bool,
    /// The allocator's numbers were added up in the kernel (`--combined`).
    pub combined: bool,
}

impl Report {
    /// Adds the page-fault section and its totals.
    pub fn add_faults(&mut self, section: FaultsSection) {
        self.summary.minor_faults = Some(section.minor);
        self.summary.major_faults = Some(section.major);
        self.faults = Some(section);
    }

    /// Builds the report; `frames_of(pid, stack_id)` names a stack's frames or says why not.
    pub fn build(
        input: ReportInput<'_>,
        mut frames_of: impl FnMut(u32, i32) -> Result<NamedStack, String>,
    ) -> Self {
        let mut resolve = |pid: u32, stack_id: i32| match frames_of(pid, stack_id) {
            Ok(named) => (named.frames.into_iter().map(ReportFrame::from).collect::<Vec<_>>(), None, named.truncated),
            Err(why) => (Vec::new(), Some(why), false),
        };
        // Memory outside malloc is named first, whatever --top says: what the dynamic loader
        // mapped (the libraries) is set apart from what the program mapped.
        let mut loader_bytes: HashMap<u32, u64> = HashMap::new();
        let mut allocated = input.heap.allocated_by_stack();
        let growth = input.growth.growth();
        let intervals = input.growth.intervals();
        let growth_of = |tgid: u32, stack_id: i32, kind: MemoryKind| GrowthTracker::of(&growth, intervals, (tgid, stack_id, kind));
        let by_leak_kind = || input.heap.by_stack_and_leak(|pid, addr| input.leaks.get(pid, addr));
        let (outstanding, leaks) = match input.allocated_before_ns {
            Some(cutoff) => {
                // A stack left out for being too young still holds memory: not "released".
                for total in input.heap.by_stack() {
                    allocated.remove(&(total.tgid, total.stack_id, total.kind));
                }
                let leaks = input.leaks.any().then(|| LeakSummary::of(&by_leak_kind(), input.leaks));
                (input.heap.by_stack_allocated_before(cutoff), leaks)
            }
            None => {
                // One pass over the blocks serves both the stacks and the leak summary.
                let outstanding = by_leak_kind();
                let leaks = input.leaks.any().then(|| LeakSummary::of(&outstanding, input.leaks));
                (outstanding, leaks)
            }
        };
        let mut stacks = Vec::new();
        let mut heap_stacks = Vec::new();
        let mut heap_made = HashMap::new();
        for total in outstanding {
            if total.kind == MemoryKind::Heap {
                heap_stacks.push(total);
                continue;
            }
            let (frames, unavailable, truncated) = resolve(total.tgid, total.stack_id);
            let module = frames.first().and_then(|frame| frame.module.as_deref());
            if module.is_some_and(is_dynamic_loader) {
                *loader_bytes.entry(total.tgid).or_default() += total.bytes;
                continue;
            }
            let made = allocated.remove(&(total.tgid, total.stack_id, total.kind)).unwrap_or_default();
            stacks.push(Stack {
                kind: total.kind.into(),
                bytes: total.bytes,
                allocations: total.allocations,
                total_allocated_bytes: made.bytes,
                total_allocations: made.count,
                pid: total.tgid,
                frames,
                unavailable,
                truncated,
                leak_kind: None,
                suppressed_by: None,
                growth: growth_of(total.tgid, total.stack_id, total.kind),
            });
        }
        let stacks_total = (stacks.len() + heap_stacks.len()) as u64;
        for total in &heap_stacks {
            // Taken out here, shown or not: what is left allocated and holds nothing.
            let made = allocated.remove(&(total.tgid, total.stack_id, total.kind)).unwrap_or_default();
            heap_made.insert((total.tgid, total.stack_id), made);
        }
        let top = input.top.unwrap_or(usize::MAX);
        // Only the stacks shown are symbolized.
        if input.sort == SortBy::Count {
            heap_stacks.sort_by(|a, b| b.allocations.cmp(&a.allocations).then(b.bytes.cmp(&a.bytes)));
        }
        sort_stacks(&mut stacks, input.sort);
        stacks.truncate(top);
        for total in heap_stacks.into_iter().take(top) {
            let (frames, unavailable, truncated) = resolve(total.tgid, total.stack_id);
            let made = heap_made.get(&(total.tgid, total.stack_id)).copied().unwrap_or_default();
            stacks.push(Stack {
                kind: Kind::Heap,
                bytes: total.bytes,
                allocations: total.allocations,
                total_allocated_bytes: made.bytes,
                total_allocations: made.count,
                pid: total.tgid,
                frames,
                unavailable,
                truncated,
                leak_kind: total.leak,
                suppressed_by: None,
                growth: growth_of(total.tgid, total.stack_id, total.kind),
            });
        }
        sort_stacks(&mut stacks, input.sort);
        stacks.truncate(top);
        // Symbolizing them costs time: only for the formats that show them.
        let released_stacks = if input.with_released { released(allocated, top, &mut resolve) } else { Vec::new() };

        let counts_of = |totals: ProcessTotals, loader: u64| Counts {
            mmap_bytes: totals.mmap_bytes.saturating_sub(loader),
            loader_mmap_bytes: loader,
            ..Counts::from(totals)
        };
        let processes = input
            .processes
            .into_iter()
            .map(|process| {
                let loader = loader_bytes.get(&process.pid).copied().unwrap_or(0);
                ProcessReport { summary: counts_of(input.heap.process(process.pid), loader), ..process }
            })
            .collect();
        let lost = Lost {
            ring_buffer_full: input.counters.ring_buffer_full,
            stack_capture_failed: input.counters.stack_capture_failed,
            in_flight_full: input.counters.in_flight_full,
            stale_in_flight: input.counters.stale_in_flight,
            argument_unreadable: input.counters.argument_unreadable,
            live_blocks_full: input.counters.live_blocks_full,
            stack_sums_full: input.counters.stack_sums_full,
            malformed: input.malformed,
        };
        let sample_bytes = match input.heap.scale() {
            Scale::Sampled { mean_bytes } => Some(mean_bytes as u64),
            Scale::Exact => None,
        };
        let collection = match (input.combined, sample_bytes) {
            (true, _) => Collection::Combined,
            (false, Some(_)) => Collection::Sampled,
            (false, None) => Collection::Events,
        };
        Report {
            memtrace_version: env!("CARGO_PKG_VERSION").to_owned(),
            mode: input.mode,
            target: input.target,
            duration_seconds: input.duration_seconds,
            window: input.window,
            allocator: input.allocator,
            summary: Summary {
                counts: counts_of(input.heap.all(), loader_bytes.values().sum()),
                null_frees: input.counters.null_frees,
                lost_events: lost.total(),
                lost,
                stacks_total,
                minor_faults: None,
                major_faults: None,
                leaks,
                collection,
                sample_bytes,
                estimated: sample_bytes.is_some(),
            },
            processes,
            stacks,
            released_stacks,
            faults: None,
            memory: Vec::new(),
            agent: AgentUsage::of_this_process(),
            kernel_programs: Vec::new(),
            unwind: None,
            check: None,
            scan: input.leaks.any().then(|| ScanTiming::of(input.leaks)),
        }
    }
}

/// The stacks that allocated and hold nothing at the end, most bytes allocated first, the
/// first `top` of them symbolized. What the dynamic loader mapped is left out, as above.
fn released(
    allocated: HashMap<(u32, i32, MemoryKind), crate::allocated::Allocated>,
    top: usize,
    resolve: &mut impl FnMut(u32, i32) -> (Vec<ReportFrame>, Option<String>, bool),
) -> Vec<Stack> {
    let mut made: Vec<_> = allocated.into_iter().filter(|(_, made)| made.count > 0).collect();
    made.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(b.1.count.cmp(&a.1.count)).then(a.0.cmp(&b.0)));
    let mut stacks = Vec::new();
    for ((tgid, stack_id, kind), made) in made {
        if stacks.len() >= top {
            break;
        }
        let (frames, unavailable, truncated) = resolve(tgid, stack_id);
        let module = frames.first().and_then(|frame| frame.module.as_deref());
        if kind != MemoryKind::Heap && module.is_some_and(is_dynamic_loader) {
            continue;
        }
        stacks.push(Stack {
            kind: kind.into(),
            bytes: 0,
            allocations: 0,
            total_allocated_bytes: made.bytes,
            total_allocations: made.count,
            pid: tgid,
            frames,
            unavailable,
            truncated,
            growth: None,
            leak_kind: None,
            suppressed_by: None,
        });
    }
    stacks
}

/// Most bytes first, or most allocations first (`--sort count`); the other breaks ties.
pub fn sort_stacks(stacks: &mut [Stack], sort: SortBy) {
    match sort {
        SortBy::Bytes => stacks.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.allocations.cmp(&a.allocations))),
        SortBy::Count => stacks.sort_by(|a, b| b.allocations.cmp(&a.allocations).then(b.bytes.cmp(&a.bytes))),
    }
}
