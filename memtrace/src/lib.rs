//! memtrace: an eBPF memory-allocation tracer and leak detector.
//!
//! Data flows one way, and the rooms follow it:
//!
//! - `target`: the traced processes: starting a command (fork, ptrace, exec), reading `/proc`,
//!   stopping a process for a scan, and the checks made before touching the kernel.
//! - `attach`: where the probes go: which object provides each allocator function, and the
//!   instruction in it to probe.
//! - `kernel`: the only code that touches aya: loading the programs, attaching them, the ring
//!   buffer, the kernel's counters and tables.
//! - `unwind`: the unwind tables the kernel walks stacks with, built from each module's
//!   call-frame information, and the walks it hands over finished here.
//! - `collect`: state built from the kernel's events, no I/O: the heap table, memory outside
//!   malloc, the stack table, page faults, growth between intervals.
//! - `analyze`: what the collected state means: leak kinds (reachability), the memory picture,
//!   the CI check.
//! - `symbolize`: addresses to function, file, line and module.
//! - `assemble`: the `Report` built from what the trace collected, in steps.
//! - `report`: the one `Report` value every format renders, each format, and where a report
//!   goes.
//! - `serve`: `memtrace serve`'s HTTP endpoints (/metrics, /debug/pprof/heap, the page), each
//!   rendering the report of the moment the session hands it.
//! - `session`: `run`, `record` and `serve`, wiring the rooms together.
//!
//! `cli` holds the clap definitions and turns them into each room's options. Three leaves serve
//! every room: `untrusted` opens files that others control (bounded, never blocking, never
//! following links), `error_text` says an error's causes once each, `glob` matches paths.
pub mod analyze;
pub mod assemble;
pub mod attach;
pub mod cli;
pub mod collect;
pub mod error_text;
pub mod glob;
pub mod kernel;
pub mod report;
pub mod serve;
pub mod session;
pub mod symbolize;
pub mod target;
pub mod untrusted;
pub mod unwind;
