//! The heap table: every outstanding block by process and address, and running totals per
//! process. Knows nothing about stacks' names or report formats.
use std::collections::{HashMap, HashSet};

use memtrace_common::{Event, EventKind, StackSums, mapping};

use crate::{
    collect::{
        MemoryKind,
        allocation_totals::{Allocated, AllocatedByStack},
        block_map::{Block, BlockMap},
        outside_malloc::{RegionKind, Regions},
    },
    report::LeakKind,
};

/// Counts over the whole trace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub allocations: u64,
    pub allocated_bytes: u64,
    pub frees: u64,
    pub freed_bytes: u64,
    /// Frees of blocks this trace did not hold as outstanding: allocated before tracing began,
    /// or released again by the allocator's own housekeeping (glibc hands each exiting
    /// thread's cache of already-freed blocks back through `free`).
    pub unknown_frees: u64,
    /// realloc calls that failed and left the old block in place.
    pub failed_reallocs: u64,
    /// Blocks still outstanding when their process called exec, which discards them.
    pub dropped_by_exec: u64,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.allocations += other.allocations;
        self.allocated_bytes += other.allocated_bytes;
        self.frees += other.frees;
        self.freed_bytes += other.freed_bytes;
        self.unknown_frees += other.unknown_frees;
        self.failed_reallocs += other.failed_reallocs;
        self.dropped_by_exec += other.dropped_by_exec;
    }
}

/// Bytes and blocks outstanding from one stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackTotal {
    pub tgid: u32,
    pub stack_id: i32,
    pub kind: MemoryKind,
    /// Heap blocks of a process scanned at its end are split by leak kind; `None` otherwise.
    pub leak: Option<LeakKind>,
    pub bytes: u64,
    pub allocations: u64,
}

/// How the blocks the agent sees stand for the program's: all of them, or a sample
/// (`--sample-bytes`) where a block of `size` bytes was recorded with probability
/// 1 - exp(-size / mean) and so stands for 1 / that many blocks like it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Scale {
    #[default]
    Exact,
    Sampled {
        mean_bytes: f64,
    },
}

impl Scale {
    /// How many blocks one recorded block of `size` bytes stands for.
    pub fn weight(self, size: u64) -> f64 {
        match self {
            Scale::Exact => 1.0,
            Scale::Sampled { mean_bytes } => {
                let probability = -(-(size as f64) / mean_bytes).exp_m1();
                if probability > 0.0 { 1.0 / probability } else { 1.0 }
            }
        }
    }
}

/// Counts as estimated: exact integers when every block is recorded (f64 holds them exactly
/// up to 2^53), scaled sums when sampling.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    allocations: f64,
    allocated_bytes: f64,
    frees: f64,
    freed_bytes: f64,
}

/// One process's outstanding blocks and totals.
#[derive(Debug, Default)]
struct ProcessHeap {
    blocks: BlockMap,
    tally: Tally,
    totals: Totals,
    regions: Regions,
    /// `--combined`: what the kernel added up, per stack.
    kernel_sums: Vec<(i32, StackSums)>,
    /// `--combined`: (blocks, bytes) the kernel held when the process called exec; taken off
    /// the sums' outstanding numbers, and not frees.
    kernel_dropped: (u64, u64),
    /// Everything allocated during the trace, by stack, freed or not.
    allocated: AllocatedByStack,
    /// What the allocator left in blocks' first words, when leak kinds are scanned for (see
    /// [`HeapTable::remember_first_words`]).
    handed_out: HandedOut,
}

/// What the allocator left in the first words of one process's outstanding blocks when it
/// handed them out (`memtrace_common::handout`), for the leak-kind scan: only blocks with a
/// pointer-like word then, by address.
#[derive(Debug, Default)]
pub struct HandedOut {
    pub first_words: rustc_hash::FxHashMap<u64, (u64, u64)>,
}

impl HandedOut {
    /// Takes in an event: a block handed out (with its first words' summary) or given back.
    fn note(&mut self, event: &Event) {
        match EventKind::from_u32(event.kind) {
            // The summary's mask (bits 0 to 7) says which words looked like pointers.
            Some(EventKind::Alloc) if event.old_addr & 0xff != 0 => {
                self.first_words.insert(event.addr, (event.old_addr, event.old_size));
            }
            Some(EventKind::Alloc) => {
                self.first_words.remove(&event.addr);
            }
            Some(EventKind::Realloc) => {
                self.first_words.remove(&event.old_addr);
                self.first_words.remove(&event.addr);
            }
            Some(EventKind::Free) => {
                self.first_words.remove(&event.addr);
            }
            _ => {}
        }
    }
}

impl ProcessHeap {
    fn allocate(&mut self, addr: u64, block: Block, scale: Scale) {
        let weight = scale.weight(block.size);
        self.tally.allocations += weight;
        self.tally.allocated_bytes += weight * block.size as f64;
        self.allocated.add(block.stack_id, MemoryKind::Heap, block.size, weight);
        if let Some(replaced) = self.blocks.insert(addr, block) {
            // Its free was never seen (it cannot have been missed in the ring buffer, which
            // counts its drops): count it as freed now.
            self.count_free(&replaced, scale);
        }
    }

    fn free(&mut self, addr: u64, scale: Scale) {
        match self.blocks.remove(addr) {
            Some(block) => self.count_free(&block, scale),
            None => self.totals.unknown_frees += 1,
        }
    }

    fn count_free(&mut self, block: &Block, scale: Scale) {
        let weight = scale.weight(block.size);
        self.tally.frees += weight;
        self.tally.freed_bytes += weight * block.size as f64;
    }

    /// realloc's four cases: `realloc(NULL, n)` allocates; `realloc(p, 0)` frees and returns
    /// NULL (glibc); a failure returns NULL and keeps `p`; otherwise `p` is freed and the
    /// result is a new block from this stack (even when it did not move).
    fn reallocate(&mut self, event: &Event, block: Block, scale: Scale) {
        match (event.old_addr, event.addr) {
            (0, 0) => {} // realloc(NULL, n) that failed: nothing changed
            (0, new) => self.allocate(new, block, scale),
            (old, 0) if event.size == 0 => self.free(old, scale),
            (_, 0) => self.totals.failed_reallocs += 1,
            (old, new) => {
                self.free(old, scale);
                self.allocate(new, block, scale);
            }
        }
    }

    /// Outstanding (bytes, blocks), estimated when sampling.
    fn outstanding(&self, scale: Scale) -> (u64, u64) {
        let (mut bytes, mut blocks) = (0.0, 0.0);
        for block in self.blocks.values() {
            let weight = scale.weight(block.size);
            bytes += weight * block.size as f64;
            blocks += weight;
        }
        let (kernel_bytes, kernel_blocks) = self.kernel_sums.iter().fold((0, 0), |(bytes, blocks), (_, sums)| {
            (bytes + sums.outstanding_bytes, blocks + sums.outstanding_blocks)
        });
        (bytes.round() as u64 + kernel_bytes, blocks.round() as u64 + kernel_blocks)
    }

    /// The totals, with the tally's estimates rounded and the kernel's sums added.
    fn totals(&self) -> Totals {
        let mut totals = Totals {
            allocations: self.tally.allocations.round() as u64,
            allocated_bytes: self.tally.allocated_bytes.round() as u64,
            frees: self.tally.frees.round() as u64,
            freed_bytes: self.tally.freed_bytes.round() as u64,
            ..self.totals
        };
        for (_, sums) in &self.kernel_sums {
            totals.allocations += sums.allocations;
            totals.allocated_bytes += sums.allocated_bytes;
            totals.frees += sums.allocations - sums.outstanding_blocks.min(sums.allocations);
            totals.freed_bytes += sums.allocated_bytes - sums.outstanding_bytes.min(sums.allocated_bytes);
        }
        let (dropped_blocks, dropped_bytes) = self.kernel_dropped;
        totals.frees = totals.frees.saturating_sub(dropped_blocks);
        totals.freed_bytes = totals.freed_bytes.saturating_sub(dropped_bytes);
        totals
    }
}

/// What one process holds and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessTotals {
    pub outstanding_bytes: u64,
    pub outstanding_blocks: u64,
    pub totals: Totals,
    /// Private mappings the program's own code holds.
    pub mmap_bytes: u64,
    /// Shared memory it has mapped.
    pub shm_bytes: u64,
    /// Break growth it made.
    pub brk_bytes: u64,
}

#[derive(Debug, Default)]
pub struct HeapTable {
    /// By process id; Fx hashing, as it is looked up once per event.
    processes: rustc_hash::FxHashMap<u32, ProcessHeap>,
    scale: Scale,
    /// Blocks' times are kept in milliseconds after this (CLOCK_MONOTONIC ns): the first
    /// event's time.
    epoch_ns: Option<u64>,
    /// Keep what the allocator left in blocks' first words ([`HandedOut`]): leak kinds are
    /// scanned for.
    remember_first_words: bool,
}

impl HeapTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// A table of sampled blocks (`--sample-bytes`): every number it gives is an estimate.
    pub fn sampled(mean_bytes: u64) -> Self {
        Self { scale: Scale::Sampled { mean_bytes: mean_bytes.max(1) as f64 }, ..Self::default() }
    }

    pub fn scale(&self) -> Scale {
        self.scale
    }

    /// From now on, keep what the allocator left in blocks' first words, for the leak-kind
    /// scan (the events carry it when the probes were loaded with `handout_words`, and
    /// `Trace::load` asks for it then).
    pub fn remember_first_words(&mut self) {
        self.remember_first_words = true;
    }

    /// What the allocator left in process `tgid`'s outstanding blocks (empty unless remembered).
    pub fn handed_out(&self, tgid: u32) -> Option<&HandedOut> {
        self.processes.get(&tgid).map(|process| &process.handed_out)
    }

    /// When a block was allocated (CLOCK_MONOTONIC ns, to the millisecond).
    pub fn allocated_at_ns(&self, block: &Block) -> u64 {
        self.epoch_ns.unwrap_or(0) + u64::from(block.time_ms) * 1_000_000
    }

    /// Applies one event from the kernel.
    pub fn apply(&mut self, event: &Event) {
        let epoch = *self.epoch_ns.get_or_insert(event.timestamp_ns);
        let time_ms = u32::try_from(event.timestamp_ns.saturating_sub(epoch) / 1_000_000).unwrap_or(u32::MAX);
        let block = Block { size: event.size, stack_id: event.stack_id, time_ms };
        let scale = self.scale;
        let process = self.processes.entry(event.tgid).or_default();
        if self.remember_first_words {
            process.handed_out.note(event);
        }
        match EventKind::from_u32(event.kind) {
            Some(EventKind::Alloc) => process.allocate(event.addr, block, scale),
            Some(EventKind::Free) => process.free(event.addr, scale),
            Some(EventKind::Realloc) => process.reallocate(event, block, scale),
            Some(EventKind::Mmap) if event.flags & mapping::INTERNAL == 0 => {
                let kind = if event.flags & mapping::SHARED != 0 { RegionKind::Shared } else { RegionKind::Private };
                let memory = if kind == RegionKind::Shared { MemoryKind::Shm } else { MemoryKind::Mmap };
                process.allocated.add(event.stack_id, memory, event.size, 1.0);
                process.regions.map(event.addr, event.size, kind, event.stack_id);
            }
            Some(EventKind::Shmat) => {
                process.allocated.add(event.stack_id, MemoryKind::Shm, event.size, 1.0);
                process.regions.map(event.addr, event.size, RegionKind::Shared, event.stack_id)
            }
            // An internal mmap is the allocator's (counted as the block asked for); an unmap or
            // remap of a range this trace does not hold changes nothing.
            Some(EventKind::Mmap) => {}
            Some(EventKind::Munmap) => process.regions.unmap(event.addr, event.size),
            Some(EventKind::Mremap) => process.regions.remap(event.old_addr, event.old_size, event.addr, event.size),
            Some(EventKind::Shmdt) => process.regions.detach_segment(event.addr),
            Some(EventKind::Brk) => {
                let by_program = event.flags & mapping::INTERNAL == 0 && event.old_addr != 0;
                process.regions.set_break(event.addr, by_program, event.stack_id);
            }
            // Page faults are counted by the fault table, not here.
            Some(EventKind::Fault) => {}
            None => log::warn!("ignoring an event of unknown kind {}", event.kind),
        }
    }

    /// The process replaced its image with exec: its outstanding blocks are gone with the old
    /// address space. They are counted, not reported.
    /// The stacks a process's numbers refer to, and those every other process's refer to.
    pub fn stacks_referred(&self, tgid: u32) -> (HashSet<i32>, HashSet<i32>) {
        let (mut theirs, mut others) = (HashSet::new(), HashSet::new());
        for (&owner, process) in &self.processes {
            let stacks = if owner == tgid { &mut theirs } else { &mut others };
            stacks.extend(process.allocated.iter().map(|(stack_id, _, _)| stack_id));
            stacks.extend(process.regions.pieces().map(|(stack_id, _, _)| stack_id));
            stacks.extend(process.kernel_sums.iter().map(|(stack_id, _)| *stack_id));
            stacks.extend(process.blocks.iter().map(|(_, block)| block.stack_id));
        }
        (theirs, others)
    }

    /// Forgets an exited process altogether (`serve`, once it was reported after its exit).
    pub fn forget_process(&mut self, tgid: u32) {
        self.processes.remove(&tgid);
    }

    pub fn drop_image(&mut self, tgid: u32) {
        if let Some(process) = self.processes.get_mut(&tgid) {
            process.totals.dropped_by_exec += process.blocks.len() as u64;
            process.blocks.clear();
            process.regions = Regions::default();
        }
    }

    /// `--combined`: blocks the kernel held for a process when it called exec.
    pub fn dropped_in_kernel(&mut self, tgid: u32, blocks: u64, bytes: u64) {
        let process = self.processes.entry(tgid).or_default();
        process.totals.dropped_by_exec += blocks;
        process.kernel_dropped.0 += blocks;
        process.kernel_dropped.1 += bytes;
    }

    /// `--combined`: one (process, stack)'s sums as the kernel added them up.
    pub fn add_kernel_sums(&mut self, tgid: u32, stack_id: i32, sums: StackSums) {
        self.processes.entry(tgid).or_default().kernel_sums.push((stack_id, sums));
    }

    /// Counts the kernel kept itself when it splits reallocs or aggregates (not per process:
    /// they go to `tgid`, the target).
    pub fn add_kernel_counts(&mut self, tgid: u32, unknown_frees: u64, failed_reallocs: u64) {
        let totals = &mut self.processes.entry(tgid).or_default().totals;
        totals.unknown_frees += unknown_frees;
        totals.failed_reallocs += failed_reallocs;
    }

    /// One process's numbers (zero for a process never seen).
    pub fn process(&self, tgid: u32) -> ProcessTotals {
        self.processes.get(&tgid).map_or_else(ProcessTotals::default, |process| {
            let (outstanding_bytes, outstanding_blocks) = process.outstanding(self.scale);
            ProcessTotals {
                outstanding_bytes,
                outstanding_blocks,
                totals: process.totals(),
                mmap_bytes: process.regions.mapped_bytes(RegionKind::Private),
                shm_bytes: process.regions.mapped_bytes(RegionKind::Shared),
                brk_bytes: process.regions.brk_bytes(),
            }
        })
    }

    /// All processes together.
    pub fn totals(&self) -> Totals {
        let mut sum = Totals::default();
        for process in self.processes.values() {
            sum.add(&process.totals());
        }
        sum
    }

    /// All processes' numbers together.
    pub fn all(&self) -> ProcessTotals {
        let mut sum = ProcessTotals { totals: self.totals(), ..ProcessTotals::default() };
        for &tgid in self.processes.keys() {
            let process = self.process(tgid);
            sum.outstanding_bytes += process.outstanding_bytes;
            sum.outstanding_blocks += process.outstanding_blocks;
            sum.mmap_bytes += process.mmap_bytes;
            sum.shm_bytes += process.shm_bytes;
            sum.brk_bytes += process.brk_bytes;
        }
        sum
    }

    /// One process's outstanding blocks' addresses, in no order.
    pub fn addresses_of(&self, tgid: u32) -> impl Iterator<Item = u64> + '_ {
        let process = self.processes.get(&tgid);
        let count = process.map_or(0, |process| process.blocks.len());
        let addrs = process.into_iter().flat_map(|process| process.blocks.iter().map(|(addr, _)| addr));
        KnownLength { inner: addrs, left: count }
    }

    /// The sizes of one process's outstanding blocks by address (0 where it has none), the
    /// process looked up once.
    pub fn sizes_of(&self, tgid: u32) -> impl Fn(u64) -> u64 + '_ {
        let blocks = self.processes.get(&tgid).map(|process| &process.blocks);
        move |addr| blocks.and_then(|blocks| blocks.get(addr)).map_or(0, |block| block.size)
    }

    /// Everything allocated during the trace (heap blocks, mappings), freed or not, per
    /// (process, stack, kind); estimated when sampling, the kernel's sums with `--combined`.
    pub fn allocated_by_stack(&self) -> HashMap<(u32, i32, MemoryKind), Allocated> {
        let mut all = HashMap::new();
        for (&tgid, process) in &self.processes {
            for (stack_id, kind, total) in process.allocated.iter() {
                all.insert((tgid, stack_id, kind), total);
            }
            for &(stack_id, sums) in &process.kernel_sums {
                let total: &mut Allocated = all.entry((tgid, stack_id, MemoryKind::Heap)).or_default();
                total.bytes += sums.allocated_bytes;
                total.count += sums.allocations;
            }
        }
        all
    }

    /// Like [`HeapTable::by_stack`], counting only allocator blocks allocated before
    /// `cutoff_ns` (CLOCK_MONOTONIC), for `--older-than`. Mappings, break growth and the
    /// kernel's `--combined` sums carry no age and are all kept.
    pub fn by_stack_allocated_before(&self, cutoff_ns: u64) -> Vec<StackTotal> {
        let young: HashMap<(u32, i32), (f64, f64)> = {
            let mut young: HashMap<(u32, i32), (f64, f64)> = HashMap::new();
            for (&tgid, process) in &self.processes {
                for block in process.blocks.values().filter(|block| self.allocated_at_ns(block) >= cutoff_ns) {
                    let weight = self.scale.weight(block.size);
                    let estimate = young.entry((tgid, block.stack_id)).or_default();
                    estimate.0 += weight * block.size as f64;
                    estimate.1 += weight;
                }
            }
            young
        };
        let mut totals: Vec<StackTotal> = self
            .by_stack()
            .into_iter()
            .filter_map(|mut total| {
                if total.kind == MemoryKind::Heap
                    && let Some(&(bytes, blocks)) = young.get(&(total.tgid, total.stack_id))
                {
                    total.bytes = total.bytes.saturating_sub(bytes.round() as u64);
                    total.allocations = total.allocations.saturating_sub(blocks.round() as u64);
                }
                (total.allocations > 0).then_some(total)
            })
            .collect();
        totals.sort_by(|a, b| {
            b.bytes.cmp(&a.bytes).then(b.allocations.cmp(&a.allocations)).then(a.stack_id.cmp(&b.stack_id))
        });
        totals
    }

    /// Outstanding bytes and blocks (or mappings) per (process, stack, kind), most bytes first.
    pub fn by_stack(&self) -> Vec<StackTotal> {
        self.by_stack_and_leak(|_, _| None)
    }

    /// Like [`HeapTable::by_stack`], heap blocks split further by `leak_of(tgid, address)`.
    pub fn by_stack_and_leak(&self, leak_of: impl Fn(u32, u64) -> Option<LeakKind>) -> Vec<StackTotal> {
        let mut totals: HashMap<(u32, i32, MemoryKind), StackTotal> = HashMap::new();
        let mut estimates: HashMap<(u32, i32, Option<LeakKind>), (f64, f64)> = HashMap::new();
        for (&tgid, process) in &self.processes {
            for (addr, block) in process.blocks.iter() {
                let weight = self.scale.weight(block.size);
                let estimate = estimates.entry((tgid, block.stack_id, leak_of(tgid, addr))).or_default();
                estimate.0 += weight * block.size as f64;
                estimate.1 += weight;
            }
            for &(stack_id, sums) in &process.kernel_sums {
                if sums.outstanding_blocks > 0 {
                    let estimate = estimates.entry((tgid, stack_id, None)).or_default();
                    estimate.0 += sums.outstanding_bytes as f64;
                    estimate.1 += sums.outstanding_blocks as f64;
                }
            }
            for (stack_id, kind, bytes) in process.regions.pieces() {
                let kind = match kind {
                    Some(RegionKind::Private) => MemoryKind::Mmap,
                    Some(RegionKind::Shared) => MemoryKind::Shm,
                    None => MemoryKind::Brk,
                };
                let total = totals.entry((tgid, stack_id, kind)).or_insert(StackTotal {
                    tgid,
                    stack_id,
                    kind,
                    leak: None,
                    bytes: 0,
                    allocations: 0,
                });
                total.bytes += bytes;
                total.allocations += 1;
            }
        }
        let heap = estimates.into_iter().map(|((tgid, stack_id, leak), (bytes, blocks))| StackTotal {
            tgid,
            stack_id,
            kind: MemoryKind::Heap,
            leak,
            bytes: bytes.round() as u64,
            allocations: blocks.round() as u64,
        });
        let mut totals: Vec<StackTotal> = totals.into_values().chain(heap).collect();
        totals.sort_by(|a, b| {
            b.bytes
                .cmp(&a.bytes)
                .then(b.allocations.cmp(&a.allocations))
                .then(a.stack_id.cmp(&b.stack_id))
                .then(a.leak.cmp(&b.leak))
        });
        totals
    }
}

/// An iterator that says how many items it has left, so that collecting it reserves exactly
/// that (the block map's own iterator cannot know).
struct KnownLength<I> {
    inner: I,
    left: usize,
}

impl<I: Iterator> Iterator for KnownLength<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let item = self.inner.next()?;
        self.left = self.left.saturating_sub(1);
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, addr: u64, size: u64, old_addr: u64, stack_id: i32) -> Event {
        Event { kind: kind as u32, tgid: 7, stack_id, flags: 0, size, addr, old_addr, old_size: 0, timestamp_ns: 1 }
    }

    #[test]
    fn processes_are_kept_apart_and_exec_drops_an_image() {
        let mut heap = HeapTable::new();
        heap.apply(&event(EventKind::Alloc, 0x10, 100, 0, 1));
        heap.apply(&Event { tgid: 8, ..event(EventKind::Alloc, 0x10, 30, 0, 1) });
        // The same address in another process is another block.
        heap.apply(&Event { tgid: 8, ..event(EventKind::Free, 0x10, 0, 0, 0) });
        assert_eq!(heap.process(7).outstanding_bytes, 100);
        assert_eq!(heap.process(8).outstanding_bytes, 0);
        heap.drop_image(7);
        assert_eq!(heap.process(7).outstanding_blocks, 0);
        assert_eq!(heap.process(7).totals.dropped_by_exec, 1);
        assert_eq!(heap.totals().allocations, 2);
    }

    #[test]
    fn frees_remove_blocks_and_unknown_frees_are_counted() {
        let mut heap = HeapTable::new();
        heap.apply(&event(EventKind::Alloc, 0x10, 100, 0, 1));
        heap.apply(&event(EventKind::Alloc, 0x20, 50, 0, 2));
        heap.apply(&event(EventKind::Free, 0x10, 0, 0, 0));
        heap.apply(&event(EventKind::Free, 0x99, 0, 0, 0));
        assert_eq!(heap.all().outstanding_bytes, 50);
        assert_eq!(heap.all().outstanding_blocks, 1);
        let totals = heap.totals();
        assert_eq!((totals.allocations, totals.frees, totals.unknown_frees), (2, 1, 1));
        assert_eq!((totals.allocated_bytes, totals.freed_bytes), (150, 100));
    }

    #[test]
    fn realloc_has_four_cases() {
        let mut heap = HeapTable::new();
        // realloc(NULL, 64) allocates.
        heap.apply(&event(EventKind::Realloc, 0x10, 64, 0, 1));
        assert_eq!(heap.all().outstanding_bytes, 64);
        // realloc(0x10, 128) moving to 0x30 frees the old block and records the new one.
        heap.apply(&event(EventKind::Realloc, 0x30, 128, 0x10, 2));
        assert_eq!(
            heap.by_stack(),
            vec![StackTotal { tgid: 7, stack_id: 2, kind: MemoryKind::Heap, leak: None, bytes: 128, allocations: 1 }]
        );
        // A failed realloc keeps the old block.
        heap.apply(&event(EventKind::Realloc, 0, 1 << 40, 0x30, 3));
        assert_eq!(heap.all().outstanding_bytes, 128);
        assert_eq!(heap.totals().failed_reallocs, 1);
        // realloc(p, 0) frees.
        heap.apply(&event(EventKind::Realloc, 0, 0, 0x30, 4));
        assert_eq!(heap.all().outstanding_blocks, 0);
        assert_eq!(heap.totals().frees, 2);
    }

    #[test]
    fn stacks_are_sorted_by_bytes() {
        let mut heap = HeapTable::new();
        for (addr, size, stack) in [(1, 10, 1), (2, 10, 1), (3, 500, 2), (4, 30, 3)] {
            heap.apply(&event(EventKind::Alloc, addr, size, 0, stack));
        }
        let stacks: Vec<(i32, u64, u64)> =
            heap.by_stack().iter().map(|s| (s.stack_id, s.bytes, s.allocations)).collect();
        assert_eq!(stacks, vec![(2, 500, 1), (3, 30, 1), (1, 20, 2)]);
    }
}
