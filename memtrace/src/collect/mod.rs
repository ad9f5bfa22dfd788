//! State built from the kernel's events, with no I/O of its own: the outstanding blocks and
//! totals (`heap`, with `block_map` and `allocation_totals`), memory the program mapped itself
//! (`outside_malloc`), the stacks seen (`stack_table`), page faults (`fault_table`, with
//! `fault_kind`), and each stack's growth between intervals (`growth`).
pub mod allocation_totals;
pub mod block_map;
pub mod fault_kind;
pub mod fault_table;
pub mod growth;
pub mod heap;
pub mod outside_malloc;
pub mod stack_table;
