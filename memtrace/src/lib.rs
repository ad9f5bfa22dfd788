//! memtrace: an eBPF memory-allocation tracer and leak detector.
//!
//! Data flows one way: `probes` attach the kernel side to the `allocator` a target uses;
//! `events` reads what it reports into the `heap` table; `symbolize` names the stacks; `report`
//! builds the one `Report` value that every format renders. `session` wires these together for
//! `run` (with `launch`) and `record`.
pub mod allocated;
pub mod allocator;
pub mod block_slots;
pub mod blocks;
pub mod check;
pub mod cli;
pub mod events;
pub mod faults;
pub mod growth;
pub mod heap;
pub mod launch;
pub mod map_batch;
pub mod memory_picture;
pub mod output;
pub mod placement;
pub mod preflight;
pub mod probes;
pub mod procmaps;
pub mod reachability;
pub mod regions;
pub mod report;
pub mod saved_report;
pub mod session;
pub mod stacks;
pub mod status;
pub mod symbolize;
pub mod unwind;
