//! The `Report` assembled from what a trace collected, in steps: which stacks hold what
//! (`outstanding`), the memory outside malloc set apart from what the dynamic loader mapped,
//! the heap stacks cut to `--top` and named, the stacks that allocated and hold nothing
//! (`released`), each process's numbers, and the summary with everything lost. Only the
//! stacks shown are symbolized.
mod faults;
mod leaks;

use std::collections::{HashMap, HashSet};

pub use faults::faults_section;
use memtrace_common::{Counter, UNDECODABLE};

use crate::{
    analyze::reachability::LeakKinds,
    attach::allocator::{is_c_library, is_dynamic_loader},
    collect::{
        MemoryKind,
        allocation_totals::Allocated,
        growth::GrowthTracker,
        heap::{HeapTable, ProcessTotals, Scale, StackTotal},
    },
    kernel::KernelCounters,
    report::{
        AgentUsage, Collection, Counts, Kind, LeakKind, LeakSummary, Lost, Mode, ProcessReport, Report, ReportFrame,
        Stack, Summary, Target, Window,
        options::{SortBy, sort_stacks},
    },
    symbolize::Frame,
};

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
    /// Records the agent could not decode.
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

/// A stack's identity in the collected state: process, stack id, kind of memory.
type StackKey = (u32, i32, MemoryKind);

/// Builds the report; `frames_of(pid, stack_id)` names a stack's frames or says why not.
pub fn report(input: ReportInput<'_>, frames_of: impl FnMut(u32, i32) -> Result<NamedStack, String>) -> Report {
    let mut namer = Namer { frames_of };
    let top = input.top.unwrap_or(usize::MAX);
    let mut allocated = input.heap.allocated_by_stack();
    let Outstanding { totals: outstanding, leaks, process_leaks } = outstanding(&input, &mut allocated);
    let growth = Growths { growth: input.growth.growth(), intervals: input.growth.counted() };
    let (heap_totals, others): (Vec<StackTotal>, Vec<StackTotal>) =
        outstanding.into_iter().partition(|total| total.kind == MemoryKind::Heap);
    let (mut stacks, set_apart) = outside_malloc(others, &mut allocated, &growth, &mut namer);
    let stacks_total = (stacks.len() + heap_totals.len()) as u64;
    sort_stacks(&mut stacks, input.sort);
    stacks.truncate(top);
    stacks.extend(heap_stacks(heap_totals, &mut allocated, &growth, input.sort, top, &mut namer));
    sort_stacks(&mut stacks, input.sort);
    stacks.truncate(top);
    // Symbolizing them costs time: only for the formats that show them.
    let released_stacks = if input.with_released { released(allocated, top, &mut namer) } else { Vec::new() };
    let processes = processes(&input, &set_apart, &process_leaks);
    let summary = summary(&input, &set_apart, stacks_total, leaks);
    Report {
        memtrace_version: env!("CARGO_PKG_VERSION").to_owned(),
        mode: input.mode,
        target: input.target,
        duration_seconds: input.duration_seconds,
        window: input.window,
        allocator: input.allocator,
        summary,
        processes,
        stacks,
        released_stacks,
        faults: None,
        memory: Vec::new(),
        agent: AgentUsage::of_this_process(),
        kernel_programs: Vec::new(),
        unwind: None,
        check: None,
        scan: input.leaks.any().then(|| leaks::scan_timing(input.leaks)),
    }
}

/// A stack's frames as symbolized, and whether its walk was cut short after the last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamedStack {
    pub frames: Vec<Frame>,
    pub truncated: bool,
}

/// Names stacks through the caller's `frames_of`.
struct Namer<F> {
    frames_of: F,
}

impl<F: FnMut(u32, i32) -> Result<NamedStack, String>> Namer<F> {
    /// The frames of a stack, or why there are none.
    fn frames(&mut self, pid: u32, stack_id: i32) -> Named {
        match (self.frames_of)(pid, stack_id) {
            Ok(named) => Named {
                frames: named.frames.into_iter().map(report_frame).collect(),
                unavailable: None,
                truncated: named.truncated,
            },
            Err(why) => Named { frames: Vec::new(), unavailable: Some(why), truncated: false },
        }
    }
}

/// A stack as the report shows it: its frames, or why there are none, and whether its walk was
/// cut short.
struct Named {
    frames: Vec<ReportFrame>,
    unavailable: Option<String>,
    truncated: bool,
}

/// Each stack's growth over the intervals (`--interval`).
struct Growths {
    growth: HashMap<StackKey, crate::report::Growth>,
    intervals: u64,
}

impl Growths {
    fn of(&self, key: StackKey) -> Option<crate::report::Growth> {
        GrowthTracker::of(&self.growth, self.intervals, key)
    }
}

/// What the stacks hold, and the leak-kind totals of all processes and of each.
struct Outstanding {
    totals: Vec<StackTotal>,
    leaks: Option<LeakSummary>,
    process_leaks: HashMap<u32, LeakSummary>,
}

/// What each stack holds, split by leak kind when its process was scanned, and the leak
/// summaries. With `--older-than`, only blocks old enough count; a stack left out for being too
/// young still holds memory, so it is taken out of `allocated` (it is not "released").
fn outstanding(input: &ReportInput<'_>, allocated: &mut HashMap<StackKey, Allocated>) -> Outstanding {
    let by_leak_kind = || input.heap.by_stack_and_leak(|pid, addr| input.leaks.get(pid, addr));
    let summaries = |by_kind: &[StackTotal]| {
        let leaks = input.leaks.any().then(|| leaks::leak_summary(by_kind, input.leaks));
        (leaks, leaks::by_process(by_kind, input.leaks))
    };
    match input.allocated_before_ns {
        Some(cutoff) => {
            let old_enough = input.heap.by_stack_allocated_before(cutoff);
            let shown: HashSet<StackKey> =
                old_enough.iter().map(|total| (total.tgid, total.stack_id, total.kind)).collect();
            for total in input.heap.by_stack() {
                let key = (total.tgid, total.stack_id, total.kind);
                if !shown.contains(&key) {
                    allocated.remove(&key);
                }
            }
            let (leaks, process_leaks) = summaries(&by_leak_kind());
            Outstanding { totals: old_enough, leaks, process_leaks }
        }
        None => {
            // One pass over the blocks serves both the stacks and the leak summaries.
            let totals = by_leak_kind();
            let (leaks, process_leaks) = summaries(&totals);
            Outstanding { totals, leaks, process_leaks }
        }
    }
}

/// Mappings that are not the program's own, per process: counted, and left out of
/// `mmap_bytes`.
#[derive(Debug, Default, Clone, Copy)]
struct SetApart {
    /// The dynamic loader's (the libraries): not shown as stacks either.
    loader: u64,
    /// The C library's own (thread stacks, arenas): shown as stacks of kind `allocator`.
    allocator: u64,
}

/// The stacks of memory outside malloc (mappings, break growth), all named: what the dynamic
/// loader mapped (the libraries) is set apart, counted per process and not shown; what the C
/// library mapped for itself is shown as its own kind.
fn outside_malloc<F: FnMut(u32, i32) -> Result<NamedStack, String>>(
    totals: Vec<StackTotal>,
    allocated: &mut HashMap<StackKey, Allocated>,
    growth: &Growths,
    namer: &mut Namer<F>,
) -> (Vec<Stack>, HashMap<u32, SetApart>) {
    let mut set_apart: HashMap<u32, SetApart> = HashMap::new();
    let mut stacks = Vec::new();
    for total in totals {
        let named = namer.frames(total.tgid, total.stack_id);
        let apart = set_apart.entry(total.tgid).or_default();
        if by_dynamic_loader(&named.frames) {
            apart.loader = apart.loader.saturating_add(total.bytes);
            continue;
        }
        let key = (total.tgid, total.stack_id, total.kind);
        let made = allocated.remove(&key).unwrap_or_default();
        let mut shown = stack(&total, made, named, growth.of(key));
        if mark_c_library_mapping(&mut shown, total.kind) {
            apart.allocator = apart.allocator.saturating_add(total.bytes);
        }
        stacks.push(shown);
    }
    (stacks, set_apart)
}

/// The heap stacks: what each allocated in all is taken out of `allocated` whether shown or
/// not, then the `top` of them (in `sort` order) are named.
fn heap_stacks<F: FnMut(u32, i32) -> Result<NamedStack, String>>(
    mut totals: Vec<StackTotal>,
    allocated: &mut HashMap<StackKey, Allocated>,
    growth: &Growths,
    sort: SortBy,
    top: usize,
    namer: &mut Namer<F>,
) -> Vec<Stack> {
    let shares = shares_of_totals(&totals, allocated);
    if sort == SortBy::Count {
        totals.sort_by(|a, b| b.allocations.cmp(&a.allocations).then(b.bytes.cmp(&a.bytes)));
    }
    totals
        .into_iter()
        .take(top)
        .map(|total| {
            let named = namer.frames(total.tgid, total.stack_id);
            let made = shares.get(&(total.tgid, total.stack_id, total.leak)).copied().unwrap_or_default();
            stack(&total, made, named, growth.of((total.tgid, total.stack_id, total.kind)))
        })
        .collect()
}

/// What each heap stack allocated in all, taken out of `allocated`, as each of its entries'
/// share: a stack holding blocks of several leak kinds appears once per kind, and each entry
/// gets at least what it holds, the first kind (in `LeakKind` order) the rest, so that the
/// entries add up to the stack's totals (pprof's `alloc_space` and `alloc_objects` sum them).
fn shares_of_totals(
    totals: &[StackTotal],
    allocated: &mut HashMap<StackKey, Allocated>,
) -> HashMap<(u32, i32, Option<LeakKind>), Allocated> {
    let mut by_stack: HashMap<(u32, i32), Vec<&StackTotal>> = HashMap::new();
    for total in totals {
        by_stack.entry((total.tgid, total.stack_id)).or_default().push(total);
    }
    let mut shares = HashMap::with_capacity(totals.len());
    for ((tgid, stack_id), mut entries) in by_stack {
        let made = allocated.remove(&(tgid, stack_id, MemoryKind::Heap)).unwrap_or_default();
        entries.sort_by_key(|total| total.leak);
        let Some((first, others)) = entries.split_first() else { continue };
        let mut left = made;
        for total in others {
            left.bytes = left.bytes.saturating_sub(total.bytes);
            left.count = left.count.saturating_sub(total.allocations);
            shares.insert((tgid, stack_id, total.leak), Allocated { bytes: total.bytes, count: total.allocations });
        }
        shares.insert((tgid, stack_id, first.leak), left);
    }
    shares
}

/// A stack of the report. What it allocated in all is at least what it holds (a mapping grown
/// by mremap holds more than its mmap asked for; an estimate's rounding may differ by one).
fn stack(total: &StackTotal, made: Allocated, named: Named, growth: Option<crate::report::Growth>) -> Stack {
    Stack {
        kind: kind(total.kind),
        bytes: total.bytes,
        allocations: total.allocations,
        total_allocated_bytes: made.bytes.max(total.bytes),
        total_allocations: made.count.max(total.allocations),
        pid: total.tgid,
        frames: named.frames,
        unavailable: named.unavailable,
        truncated: named.truncated,
        leak_kind: total.leak,
        suppressed_by: None,
        growth,
    }
}

/// The stacks that allocated and hold nothing at the end, most bytes allocated first, the
/// first `top` of them named. What the dynamic loader mapped is left out, as above.
fn released<F: FnMut(u32, i32) -> Result<NamedStack, String>>(
    allocated: HashMap<StackKey, Allocated>,
    top: usize,
    namer: &mut Namer<F>,
) -> Vec<Stack> {
    let mut made: Vec<_> = allocated.into_iter().filter(|(_, made)| made.count > 0).collect();
    made.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(b.1.count.cmp(&a.1.count)).then(a.0.cmp(&b.0)));
    let mut stacks = Vec::new();
    for ((tgid, stack_id, memory), made) in made {
        if stacks.len() >= top {
            break;
        }
        let named = namer.frames(tgid, stack_id);
        if memory != MemoryKind::Heap && by_dynamic_loader(&named.frames) {
            continue;
        }
        let total = StackTotal { tgid, stack_id, kind: memory, leak: None, bytes: 0, allocations: 0 };
        let mut shown = stack(&total, made, named, None);
        mark_c_library_mapping(&mut shown, memory);
        stacks.push(shown);
    }
    stacks
}

/// A stack whose innermost frame is in the dynamic loader: it maps the libraries.
fn by_dynamic_loader(frames: &[ReportFrame]) -> bool {
    frames.first().and_then(|frame| frame.module.as_deref()).is_some_and(is_dynamic_loader)
}

/// Gives a private mapping whose innermost frame is in the C library the kind `allocator`, and
/// says whether it did: libc mapped it for itself (a thread's stack in pthread_create, an
/// arena), since a program's own mmap through libc's wrapper has the program's code as its
/// innermost frame (the wrapper's return takes the stack).
fn mark_c_library_mapping(stack: &mut Stack, memory: MemoryKind) -> bool {
    let libcs = memory == MemoryKind::Mmap
        && stack.frames.first().and_then(|frame| frame.module.as_deref()).is_some_and(is_c_library);
    if libcs {
        stack.kind = Kind::Allocator;
    }
    libcs
}

/// Each traced process with its own numbers, and its leak kinds when it was scanned.
fn processes(
    input: &ReportInput<'_>,
    set_apart: &HashMap<u32, SetApart>,
    leaks: &HashMap<u32, LeakSummary>,
) -> Vec<ProcessReport> {
    input
        .processes
        .iter()
        .map(|process| {
            let apart = set_apart.get(&process.pid).copied().unwrap_or_default();
            ProcessReport {
                summary: counts(input.heap.process(process.pid), apart),
                leaks: leaks.get(&process.pid).copied(),
                ..process.clone()
            }
        })
        .collect()
}

/// All processes together, what was lost, and how the numbers were gathered.
fn summary(
    input: &ReportInput<'_>,
    set_apart: &HashMap<u32, SetApart>,
    stacks_total: u64,
    leaks: Option<LeakSummary>,
) -> Summary {
    let lost = lost(&input.counters, input.malformed);
    let sample_bytes = match input.heap.scale() {
        Scale::Sampled { mean_bytes } => Some(mean_bytes as u64),
        Scale::Exact => None,
    };
    let collection = match (input.combined, sample_bytes) {
        (true, _) => Collection::Combined,
        (false, Some(_)) => Collection::Sampled,
        (false, None) => Collection::Events,
    };
    let all = set_apart.values().fold(SetApart::default(), |sum, apart| SetApart {
        loader: sum.loader.saturating_add(apart.loader),
        allocator: sum.allocator.saturating_add(apart.allocator),
    });
    Summary {
        counts: counts(input.heap.all(), all),
        null_frees: input.counters.get(Counter::NullFree),
        lost_events: lost.total(),
        lost,
        stacks_total,
        minor_faults: None,
        major_faults: None,
        leaks,
        collection,
        sample_bytes,
        estimated: sample_bytes.is_some(),
    }
}

/// Every loss of the counter list: the kernel's, then the records the agent could not decode.
fn lost(counters: &KernelCounters, malformed: u64) -> Lost {
    let kernel = Counter::ALL
        .iter()
        .filter(|counter| counter.info().loss)
        .map(|&counter| (counter.info().key, counters.get(counter)));
    Lost(kernel.chain([(UNDECODABLE.key, malformed)]).map(|(key, count)| (key.to_owned(), count)).collect())
}

/// A process's (or all processes') numbers; what the dynamic loader and the C library mapped
/// is counted apart from the program's own mappings.
fn counts(process: ProcessTotals, apart: SetApart) -> Counts {
    let totals = process.totals;
    Counts {
        mmap_bytes: process.mmap_bytes.saturating_sub(apart.loader).saturating_sub(apart.allocator),
        shm_bytes: process.shm_bytes,
        brk_bytes: process.brk_bytes,
        loader_mmap_bytes: apart.loader,
        allocator_mmap_bytes: apart.allocator,
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

fn kind(memory: MemoryKind) -> Kind {
    match memory {
        MemoryKind::Heap => Kind::Heap,
        MemoryKind::Mmap => Kind::Mmap,
        MemoryKind::Shm => Kind::Shm,
        MemoryKind::Brk => Kind::Brk,
    }
}

/// A symbolized frame as the report shows it: addresses as `0x…` strings.
fn report_frame(frame: Frame) -> ReportFrame {
    ReportFrame {
        address: format!("{:#x}", frame.address),
        function: frame.function,
        file: frame.file,
        line: frame.line,
        module: frame.module,
        module_offset: frame.module_offset.map(|offset| format!("{offset:#x}")),
        inlined: frame.inlined,
    }
}

#[cfg(test)]
mod tests {
    use memtrace_common::{COUNTER_SLOTS, Event, EventKind, mapping};

    use super::*;

    fn event(kind: EventKind, tgid: u32, stack_id: i32, addr: u64, size: u64) -> Event {
        Event { kind: kind as u32, tgid, stack_id, flags: 0, size, addr, old_addr: 0, old_size: 0, timestamp_ns: 1 }
    }

    /// Frames named after the stack id; stack 5 is the dynamic loader's, stack -2 failed.
    fn frames_of(_pid: u32, stack_id: i32) -> Result<NamedStack, String> {
        if stack_id < 0 {
            return Err("no stack".to_owned());
        }
        let module = if stack_id == 5 { "/lib64/ld-linux-x86-64.so.2" } else { "/usr/bin/prog" };
        let frame = Frame {
            address: 0x1000 + stack_id as u64,
            function: Some(format!("f{stack_id}")),
            file: None,
            line: None,
            module: Some(module.to_owned()),
            module_offset: None,
            inlined: false,
        };
        Ok(NamedStack { frames: vec![frame], truncated: false })
    }

    fn input<'a>(
        heap: &'a HeapTable,
        leaks: &'a LeakKinds,
        growth: &'a GrowthTracker,
        top: Option<usize>,
    ) -> ReportInput<'a> {
        let mut counts = [0; COUNTER_SLOTS as usize];
        counts[Counter::RingBufferFull as usize] = 3;
        counts[Counter::StackSumsFull as usize] = 2;
        counts[Counter::NullFree as usize] = 7;
        let process = |pid| ProcessReport {
            pid,
            parent_pid: None,
            command: vec!["prog".to_owned()],
            exit_code: None,
            signal: None,
            exited: false,
            summary: Counts::default(),
            leaks: None,
        };
        ReportInput {
            mode: Mode::Run,
            target: Target {
                pid: 10,
                command: vec!["prog".to_owned()],
                exit_code: Some(0),
                signal: None,
                exited: true,
            },
            processes: vec![process(10), process(20)],
            duration_seconds: 1.0,
            allocator: "libc.so.6".to_owned(),
            heap,
            leaks,
            counters: KernelCounters::from_counts(counts),
            malformed: 1,
            window: Window { start_monotonic_ns: 0, end_monotonic_ns: u64::MAX },
            top,
            sort: SortBy::Bytes,
            allocated_before_ns: None,
            growth,
            with_released: true,
            combined: false,
        }
    }

    /// Two processes: pid 10 holds 200 bytes from stack 1 (one of three blocks freed), 1,000 from
    /// stack 2, a 4,096-byte mapping of its own (stack 4) and 8,192 mapped by the loader (stack
    /// 5); stack 3 allocated 50 bytes and freed them. Pid 20 holds 10 bytes from stack 1.
    fn heap() -> HeapTable {
        let mut heap = HeapTable::new();
        for (index, addr) in [0x100, 0x200, 0x300].into_iter().enumerate() {
            heap.apply(&event(EventKind::Alloc, 10, 1, addr, 100));
            if index == 0 {
                heap.apply(&event(EventKind::Free, 10, 0, addr, 0));
            }
        }
        heap.apply(&event(EventKind::Alloc, 10, 2, 0x400, 1000));
        heap.apply(&event(EventKind::Alloc, 10, 3, 0x500, 50));
        heap.apply(&event(EventKind::Free, 10, 0, 0x500, 0));
        heap.apply(&event(EventKind::Alloc, 20, 1, 0x100, 10));
        let anonymous = |stack_id, addr, size| Event {
            flags: mapping::ANONYMOUS,
            ..event(EventKind::Mmap, 10, stack_id, addr, size)
        };
        heap.apply(&anonymous(4, 0x7000_0000, 4096));
        heap.apply(&anonymous(5, 0x7100_0000, 8192));
        heap
    }

    #[test]
    fn stacks_are_ranked_cut_at_top_and_the_loader_is_set_apart() {
        let (heap, leaks, growth) = (heap(), LeakKinds::default(), GrowthTracker::default());
        let report = report(input(&heap, &leaks, &growth, Some(2)), frames_of);
        let shown: Vec<(Kind, u32, u64, u64)> =
            report.stacks.iter().map(|stack| (stack.kind, stack.pid, stack.bytes, stack.allocations)).collect();
        assert_eq!(shown, [(Kind::Mmap, 10, 4096, 1), (Kind::Heap, 10, 1000, 1)]);
        assert_eq!(report.stacks[1].frames[0].function.as_deref(), Some("f2"));
        // Four stacks hold memory (the loader's mapping is not one of them).
        assert_eq!(report.summary.stacks_total, 4);
        // The 50 bytes stack 3 allocated and freed.
        let released: Vec<(i32, u64, u64)> = report
            .released_stacks
            .iter()
            .map(|stack| (stack.pid as i32, stack.total_allocated_bytes, stack.total_allocations))
            .collect();
        assert_eq!(released, [(10, 50, 1)]);
        let counts = report.summary.counts;
        assert_eq!((counts.outstanding_bytes, counts.outstanding_allocations), (1210, 4));
        assert_eq!((counts.total_allocations, counts.total_allocated_bytes), (6, 1360));
        assert_eq!((counts.total_frees, counts.total_freed_bytes), (2, 150));
        assert_eq!((counts.mmap_bytes, counts.loader_mmap_bytes), (4096, 8192));
    }

    #[test]
    fn each_process_gets_its_own_numbers() {
        let (heap, leaks, growth) = (heap(), LeakKinds::default(), GrowthTracker::default());
        let report = report(input(&heap, &leaks, &growth, None), frames_of);
        let summaries: Vec<(u32, u64, u64, u64)> = report
            .processes
            .iter()
            .map(|process| {
                let counts = process.summary;
                (process.pid, counts.outstanding_bytes, counts.mmap_bytes, counts.loader_mmap_bytes)
            })
            .collect();
        assert_eq!(summaries, [(10, 1200, 4096, 8192), (20, 10, 0, 0)]);
        // Without --top every stack is there, most bytes first; stack 1 once per process.
        let shown: Vec<(u32, u64)> = report.stacks.iter().map(|stack| (stack.pid, stack.bytes)).collect();
        assert_eq!(shown, [(10, 4096), (10, 1000), (10, 200), (20, 10)]);
        let stack_1 = &report.stacks[2];
        assert_eq!((stack_1.total_allocated_bytes, stack_1.total_allocations), (300, 3));
    }

    /// Pid 30's stack 7 allocates ten blocks of 10 bytes and frees three; of the seven left,
    /// four are definitely lost and three still reachable. Stack 8 allocates one block of 5,
    /// freed.
    fn split_stack() -> (HeapTable, LeakKinds) {
        let mut heap = HeapTable::new();
        for index in 0..10u64 {
            heap.apply(&event(EventKind::Alloc, 30, 7, 0x1000 + index * 0x10, 10));
        }
        for index in [2u64, 5, 8] {
            heap.apply(&event(EventKind::Free, 30, 0, 0x1000 + index * 0x10, 0));
        }
        heap.apply(&event(EventKind::Alloc, 30, 8, 0x9000, 5));
        heap.apply(&event(EventKind::Free, 30, 0, 0x9000, 0));
        let mut addrs: Vec<u64> = heap.addresses_of(30).collect();
        addrs.sort();
        let kinds = addrs
            .iter()
            .enumerate()
            .map(|(index, _)| if index < 4 { LeakKind::DefinitelyLost } else { LeakKind::StillReachable })
            .collect();
        let mut leaks = LeakKinds::default();
        leaks.record(30, addrs, kinds, crate::analyze::reachability::ScanStats::default());
        (heap, leaks)
    }

    fn scanned_input<'a>(heap: &'a HeapTable, leaks: &'a LeakKinds, growth: &'a GrowthTracker) -> ReportInput<'a> {
        let base = input(heap, leaks, growth, None);
        let process = ProcessReport { pid: 30, ..base.processes[0].clone() };
        ReportInput { processes: vec![process], ..base }
    }

    #[test]
    fn a_stack_of_two_leak_kinds_shares_out_its_totals_and_they_add_up() {
        let (heap, leaks, growth) = (split_stack().0, split_stack().1, GrowthTracker::default());
        let report = report(scanned_input(&heap, &leaks, &growth), frames_of);
        let halves: Vec<(Option<LeakKind>, u64, u64, u64, u64)> = report
            .stacks
            .iter()
            .map(|stack| {
                (stack.leak_kind, stack.bytes, stack.allocations, stack.total_allocated_bytes, stack.total_allocations)
            })
            .collect();
        // The first kind (definitely lost) takes what the stack freed; the other holds its own.
        assert_eq!(
            halves,
            [(Some(LeakKind::DefinitelyLost), 40, 4, 70, 7), (Some(LeakKind::StillReachable), 30, 3, 30, 3)]
        );
        // Every stack, shown or released, adds up to the summary's totals, as pprof sums them.
        let all = report.stacks.iter().chain(&report.released_stacks);
        let (bytes, count) = all.fold((0, 0), |(bytes, count), stack| {
            (bytes + stack.total_allocated_bytes, count + stack.total_allocations)
        });
        assert_eq!(
            (bytes, count),
            (report.summary.counts.total_allocated_bytes, report.summary.counts.total_allocations)
        );
        assert_eq!((bytes, count), (105, 11));
        // The process carries its own leak kinds, as the summary does for all.
        let process = report.processes[0].leaks.expect("pid 30 was scanned");
        assert_eq!(process.of_kind(LeakKind::DefinitelyLost), (40, 4));
        assert_eq!(process.of_kind(LeakKind::StillReachable), (30, 3));
        assert_eq!(process.scanned_processes, 1);
        assert_eq!(report.summary.leaks.map(|leaks| leaks.of_kind(LeakKind::DefinitelyLost)), Some((40, 4)));
    }

    #[test]
    fn stacks_shown_by_older_than_keep_their_totals() {
        let (heap, leaks, growth) = (heap(), LeakKinds::default(), GrowthTracker::default());
        // Every block is old enough: each stack keeps what it allocated in all.
        let report = report(
            ReportInput { allocated_before_ns: Some(u64::MAX), ..input(&heap, &leaks, &growth, None) },
            frames_of,
        );
        for stack in &report.stacks {
            assert!(
                stack.total_allocated_bytes >= stack.bytes && stack.total_allocations >= stack.allocations,
                "{stack:?}"
            );
        }
        let stack_1 =
            report.stacks.iter().find(|stack| stack.pid == 10 && stack.bytes == 200).expect("stack 1 of pid 10");
        assert_eq!((stack_1.total_allocated_bytes, stack_1.total_allocations), (300, 3));
    }

    #[test]
    fn every_loss_of_the_counter_list_is_in_the_summary_and_adds_up() {
        let (heap, leaks, growth) = (heap(), LeakKinds::default(), GrowthTracker::default());
        let report = report(input(&heap, &leaks, &growth, None), frames_of);
        let lost = &report.summary.lost;
        assert_eq!(lost.0.len(), memtrace_common::LOSSES.len());
        assert_eq!((lost.get("ring_buffer_full"), lost.get("stack_sums_full"), lost.get("malformed")), (3, 2, 1));
        assert_eq!(report.summary.lost_events, 6);
        // Not a loss: free(NULL) has its own field.
        assert_eq!(report.summary.null_frees, 7);
        assert_eq!(report.summary.collection, Collection::Events);
    }
}
