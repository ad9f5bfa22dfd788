//! The heap table: every outstanding block by (process, address), and running totals.
//! Knows nothing about stacks' names or report formats.
use std::collections::HashMap;

use memtrace_common::{Event, EventKind};

/// One block handed out and not yet freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub size: u64,
    /// Id in the kernel's stack map; negative when the capture failed.
    pub stack_id: i32,
    pub timestamp_ns: u64,
}

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
}

/// Bytes and blocks outstanding from one stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackTotal {
    pub tgid: u32,
    pub stack_id: i32,
    pub bytes: u64,
    pub allocations: u64,
}

#[derive(Debug, Default)]
pub struct HeapTable {
    blocks: HashMap<(u32, u64), Block>,
    totals: Totals,
}

impl HeapTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one event from the kernel.
    pub fn apply(&mut self, event: &Event) {
        let block = Block { size: event.size, stack_id: event.stack_id, timestamp_ns: event.timestamp_ns };
        match EventKind::from_u32(event.kind) {
            Some(EventKind::Alloc) => self.allocate(event.tgid, event.addr, block),
            Some(EventKind::Free) => self.free(event.tgid, event.addr),
            Some(EventKind::Realloc) => self.reallocate(event, block),
            None => log::warn!("ignoring an event of unknown kind {}", event.kind),
        }
    }

    fn allocate(&mut self, tgid: u32, addr: u64, block: Block) {
        self.totals.allocations += 1;
        self.totals.allocated_bytes += block.size;
        self.blocks.insert((tgid, addr), block);
    }

    fn free(&mut self, tgid: u32, addr: u64) {
        match self.blocks.remove(&(tgid, addr)) {
            Some(block) => {
                self.totals.frees += 1;
                self.totals.freed_bytes += block.size;
            }
            None => self.totals.unknown_frees += 1,
        }
    }

    /// realloc's four cases: `realloc(NULL, n)` allocates; `realloc(p, 0)` frees and returns
    /// NULL (glibc); a failure returns NULL and keeps `p`; otherwise `p` is freed and the
    /// result is a new block from this stack (even when it did not move).
    fn reallocate(&mut self, event: &Event, block: Block) {
        let (tgid, old, new) = (event.tgid, event.old_addr, event.addr);
        match (old, new) {
            (0, 0) => {} // realloc(NULL, n) that failed: nothing changed
            (0, new) => self.allocate(tgid, new, block),
            (old, 0) if event.size == 0 => self.free(tgid, old),
            (_, 0) => self.totals.failed_reallocs += 1,
            (old, new) => {
                self.free(tgid, old);
                self.allocate(tgid, new, block);
            }
        }
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    pub fn outstanding_blocks(&self) -> usize {
        self.blocks.len()
    }

    pub fn outstanding_bytes(&self) -> u64 {
        self.blocks.values().map(|block| block.size).sum()
    }

    /// Outstanding bytes and blocks per (process, stack), most bytes first.
    pub fn by_stack(&self) -> Vec<StackTotal> {
        let mut totals: HashMap<(u32, i32), StackTotal> = HashMap::new();
        for (&(tgid, _), block) in &self.blocks {
            let total = totals.entry((tgid, block.stack_id)).or_insert(StackTotal {
                tgid,
                stack_id: block.stack_id,
                bytes: 0,
                allocations: 0,
            });
            total.bytes += block.size;
            total.allocations += 1;
        }
        let mut totals: Vec<StackTotal> = totals.into_values().collect();
        totals.sort_by(|a, b| {
            b.bytes.cmp(&a.bytes).then(b.allocations.cmp(&a.allocations)).then(a.stack_id.cmp(&b.stack_id))
        });
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, addr: u64, size: u64, old_addr: u64, stack_id: i32) -> Event {
        Event { kind: kind as u32, tgid: 7, stack_id, _padding: 0, size, addr, old_addr, timestamp_ns: 1 }
    }

    #[test]
    fn frees_remove_blocks_and_unknown_frees_are_counted() {
        let mut heap = HeapTable::new();
        heap.apply(&event(EventKind::Alloc, 0x10, 100, 0, 1));
        heap.apply(&event(EventKind::Alloc, 0x20, 50, 0, 2));
        heap.apply(&event(EventKind::Free, 0x10, 0, 0, 0));
        heap.apply(&event(EventKind::Free, 0x99, 0, 0, 0));
        assert_eq!(heap.outstanding_bytes(), 50);
        assert_eq!(heap.outstanding_blocks(), 1);
        let totals = heap.totals();
        assert_eq!((totals.allocations, totals.frees, totals.unknown_frees), (2, 1, 1));
        assert_eq!((totals.allocated_bytes, totals.freed_bytes), (150, 100));
    }

    #[test]
    fn realloc_has_four_cases() {
        let mut heap = HeapTable::new();
        // realloc(NULL, 64) allocates.
        heap.apply(&event(EventKind::Realloc, 0x10, 64, 0, 1));
        assert_eq!(heap.outstanding_bytes(), 64);
        // realloc(0x10, 128) moving to 0x30 frees the old block and records the new one.
        heap.apply(&event(EventKind::Realloc, 0x30, 128, 0x10, 2));
        assert_eq!(heap.by_stack(), vec![StackTotal { tgid: 7, stack_id: 2, bytes: 128, allocations: 1 }]);
        // A failed realloc keeps the old block.
        heap.apply(&event(EventKind::Realloc, 0, 1 << 40, 0x30, 3));
        assert_eq!(heap.outstanding_bytes(), 128);
        assert_eq!(heap.totals().failed_reallocs, 1);
        // realloc(p, 0) frees.
        heap.apply(&event(EventKind::Realloc, 0, 0, 0x30, 4));
        assert_eq!(heap.outstanding_blocks(), 0);
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
