//! Leak kinds (definitely, indirectly, possibly lost, still reachable) by scanning a stopped
//! process's memory for pointers, as valgrind memcheck does: `scan` reads the roots and
//! blocks, `classify` decides from the words read.
pub mod classify;
mod exit_frame;
pub mod scan;
mod stop;

pub use classify::{Extent, LeakKind};
pub use scan::{ScanError, ScanStats, ThreadState, scan};
pub use stop::StoppedProcess;

use std::collections::HashMap;

/// The leak kind of every block scanned, by process and address; blocks of processes that
/// were not scanned (killed with SIGKILL, still running at the end of `run`, `record` without
/// `--scan`) have none.
#[derive(Debug, Default)]
pub struct LeakKinds {
    kinds: HashMap<(u32, u64), LeakKind>,
    /// Processes scanned, with what their scan read.
    pub scans: Vec<(u32, ScanStats)>,
    /// `record --scan`: how long each process was stopped.
    pub stops: Vec<(u32, std::time::Duration)>,
}

impl LeakKinds {
    /// Records the scan of `pid`: `kinds[i]` is the kind of `blocks[i]` (address, size).
    pub fn record(&mut self, pid: u32, blocks: &[(u64, u64)], kinds: &[LeakKind], stats: ScanStats) {
        for (&(addr, _), &kind) in blocks.iter().zip(kinds) {
            self.kinds.insert((pid, addr), kind);
        }
        self.scans.push((pid, stats));
    }

    pub fn get(&self, pid: u32, addr: u64) -> Option<LeakKind> {
        self.kinds.get(&(pid, addr)).copied()
    }

    /// `record --scan` stopped `pid` for `duration`.
    pub fn stopped(&mut self, pid: u32, duration: std::time::Duration) {
        self.stops.push((pid, duration));
    }

    /// Whether any process was scanned.
    pub fn any(&self) -> bool {
        !self.scans.is_empty()
    }
}

/// Scans the stopped process `pid` whose outstanding blocks are `blocks` (address, size; by
/// address) and records the result in `kinds`; a failure is a warning, and its blocks stay
/// without a kind.
pub fn scan_into(kinds: &mut LeakKinds, pid: u32, threads: &[ThreadState], blocks: &[(u64, u64)], heap_as_roots: bool) {
    match scan(pid, threads, blocks, heap_as_roots) {
        Ok((found, stats)) => {
            if stats.unreadable_blocks > 0 || stats.unreadable_bytes > 0 {
                log::warn!(
                    "process {pid}: {} blocks and {} bytes of roots could not be read; their pointers are not counted",
                    stats.unreadable_blocks,
                    stats.unreadable_bytes
                );
            }
            kinds.record(pid, blocks, &found, stats);
        }
        Err(error) => eprintln!("memtrace: warning: no leak kinds for process {pid}: {error}"),
    }
}
