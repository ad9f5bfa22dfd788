//! Everything each stack allocated during the trace, freed or not: what pprof's `alloc_space`
//! and `alloc_objects` show. Kept apart from the outstanding blocks, which forget a block when
//! it is freed, so that a stack whose blocks were all freed still counts here.
use std::collections::HashMap;

use crate::heap::MemoryKind;

/// Bytes and allocations one stack made over the whole trace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocated {
    pub bytes: u64,
    pub count: u64,
}

/// Allocation totals of one process, by (stack id, kind of memory).
#[derive(Debug, Default)]
pub struct AllocatedByStack {
    totals: HashMap<(i32, MemoryKind), Allocated>,
}

impl AllocatedByStack {
    pub fn add(&mut self, stack_id: i32, kind: MemoryKind, bytes: u64) {
        let total = self.totals.entry((stack_id, kind)).or_default();
        total.bytes += bytes;
        total.count += 1;
    }

    pub fn iter(&self) -> impl Iterator<Item = (i32, MemoryKind, Allocated)> + '_ {
        self.totals.iter().map(|(&(stack_id, kind), &total)| (stack_id, kind, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_per_stack_and_kind() {
        let mut allocated = AllocatedByStack::default();
        allocated.add(1, MemoryKind::Heap, 10);
        allocated.add(1, MemoryKind::Heap, 30);
        allocated.add(1, MemoryKind::Mmap, 4096);
        let mut totals: Vec<_> = allocated.iter().collect();
        totals.sort_by_key(|&(_, kind, _)| kind);
        assert_eq!(
            totals,
            vec![
                (1, MemoryKind::Heap, Allocated { bytes: 40, count: 2 }),
                (1, MemoryKind::Mmap, Allocated { bytes: 4096, count: 1 }),
            ]
        );
    }
}
