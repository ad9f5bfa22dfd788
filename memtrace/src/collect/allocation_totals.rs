//! Everything each stack allocated during the trace, freed or not: what pprof's `alloc_space`
//! and `alloc_objects` show. Kept apart from the outstanding blocks, which forget a block when
//! it is freed, so that a stack whose blocks were all freed still counts here.
use rustc_hash::FxHashMap;

use crate::collect::MemoryKind;

/// Bytes and allocations one stack made over the whole trace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocated {
    pub bytes: u64,
    pub count: u64,
}

/// Allocation totals of one process, by (stack id, kind of memory): sums of weights, exact
/// integers when every block is recorded, estimates when sampling (`--sample-bytes`).
#[derive(Debug, Default)]
pub struct AllocatedByStack {
    /// Fx rather than the standard library's SipHash: this is updated once per allocation, on
    /// the agent's hot path, and its keys are not chosen by an adversary.
    totals: FxHashMap<(i32, MemoryKind), (f64, f64)>,
}

impl AllocatedByStack {
    /// One allocation of `bytes` that stands for `weight` like it (1 unless sampling).
    pub fn add(&mut self, stack_id: i32, kind: MemoryKind, bytes: u64, weight: f64) {
        let total = self.totals.entry((stack_id, kind)).or_default();
        total.0 += weight * bytes as f64;
        total.1 += weight;
    }

    pub fn iter(&self) -> impl Iterator<Item = (i32, MemoryKind, Allocated)> + '_ {
        self.totals.iter().map(|(&(stack_id, kind), &(bytes, count))| {
            (stack_id, kind, Allocated { bytes: bytes.round() as u64, count: count.round() as u64 })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_per_stack_and_kind() {
        let mut allocated = AllocatedByStack::default();
        allocated.add(1, MemoryKind::Heap, 10, 1.0);
        allocated.add(1, MemoryKind::Heap, 30, 1.0);
        allocated.add(1, MemoryKind::Mmap, 4096, 1.0);
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
