//! State built from the kernel's events, with no I/O of its own: the outstanding blocks and
//! totals (`heap`, with `block_map` and `allocation_totals`), memory the program mapped itself
//! (`outside_malloc`), the stacks seen (`stack_table`), page faults (`fault_table`, with
//! `fault_kind`), and each stack's growth between intervals (`growth`).
pub mod allocation_totals;
pub mod block_map;
pub mod collected;
pub mod fault_kind;
pub mod fault_table;
pub mod growth;
pub mod heap;
pub mod outside_malloc;
pub mod stack_table;

/// What kind of memory a stack holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemoryKind {
    /// Blocks from the allocator (malloc, new, ...).
    Heap,
    /// Private mappings made by the program's own code.
    Mmap,
    /// Shared memory mapped by the program's own code (MAP_SHARED, System V).
    Shm,
    /// Break growth by the program's own code (brk, sbrk).
    Brk,
}
