//! Leak kinds (definitely, indirectly, possibly lost, still reachable) by scanning a stopped
//! process's memory for pointers, as valgrind memcheck does: `scan` reads the roots and
//! blocks, `classify` decides from the words read.
pub mod classify;
mod contents;
mod exit_frame;
mod extents;
mod memory;
pub mod scan;

pub use extents::{Extent, Extents};
pub use scan::{ScanError, ScanStats, scan};

use crate::{collect::heap::HandedOut, report::LeakKind, target::ptrace::ThreadState};

/// The leak kind of every block scanned, by process and address; blocks of processes that
/// were not scanned (killed with SIGKILL, still running at the end of `run`, `record` without
/// `--scan`) have none.
#[derive(Debug, Default)]
pub struct LeakKinds {
    /// Per process scanned: its blocks' addresses, ascending, and their kinds (9 bytes a block,
    /// where a hash map took about 40).
    kinds: Vec<(u32, Vec<u64>, Vec<LeakKind>)>,
    /// Processes scanned, with what their scan read.
    pub scans: Vec<(u32, ScanStats)>,
    /// `record --scan`: how long each process was stopped.
    pub stops: Vec<(u32, std::time::Duration)>,
}

impl LeakKinds {
    /// Records the scan of `pid`: `kinds[i]` is the kind of the block at `addrs[i]` (sorted).
    /// A later scan of the same process replaces an earlier one.
    pub fn record(&mut self, pid: u32, addrs: Vec<u64>, kinds: Vec<LeakKind>, stats: ScanStats) {
        debug_assert!(addrs.is_sorted(), "blocks sorted by address");
        self.kinds.retain(|(scanned, _, _)| *scanned != pid);
        self.kinds.push((pid, addrs, kinds));
        self.scans.push((pid, stats));
    }

    pub fn get(&self, pid: u32, addr: u64) -> Option<LeakKind> {
        let (_, addrs, kinds) = self.kinds.iter().find(|(scanned, _, _)| *scanned == pid)?;
        addrs.binary_search(&addr).ok().and_then(|index| kinds.get(index).copied())
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

/// Scans the stopped process `pid` whose outstanding blocks are at `addrs` (in any order), of
/// the sizes `size_of` gives, and records the result in `kinds`; a failure is a warning, and
/// its blocks stay without a kind.
pub fn scan_into(
    kinds: &mut LeakKinds,
    pid: u32,
    threads: &[ThreadState],
    addrs: impl Iterator<Item = u64>,
    size_of: impl FnMut(u64) -> u64,
    handed_out: Option<&HandedOut>,
    heap_as_roots: bool,
) {
    // Collected with room for exactly the blocks the iterator says it has (the heap's does):
    // grown by doubling, a million blocks could take room for two million.
    let mut blocks = Extents::new(addrs.collect(), size_of);
    if let Some(handed_out) = handed_out {
        blocks.set_first_words(handed_out.first_words.iter());
    }
    match scan(pid, threads, &mut blocks, heap_as_roots) {
        Ok((found, stats)) => {
            if stats.unreadable_blocks > 0 || stats.unreadable_bytes > 0 {
                log::warn!(
                    "process {pid}: {} blocks and {} bytes of roots could not be read; their pointers are not counted",
                    stats.unreadable_blocks,
                    stats.unreadable_bytes
                );
            }
            kinds.record(pid, blocks.into_addrs(), found, stats);
        }
        Err(error) => eprintln!("memtrace: warning: no leak kinds for process {pid}: {error}"),
    }
}
