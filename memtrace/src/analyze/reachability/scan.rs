//! Reading a stopped process's roots and blocks for the classifier: which memory is a root,
//! read through `/proc/PID/mem`.
//!
//! Roots are what valgrind scans: every readable and writable mapping (data and bss of every
//! module, anonymous memory, thread stacks, shared memory) except the allocator's own heap;
//! each thread's stack only from its stack pointer (less the 128-byte red zone the x86-64 ABI
//! lets leaf functions use) upwards, since what lies below it is dead; and every thread's
//! general-purpose registers.
//!
//! The allocator's heap is left out because its free chunks still hold stale pointers that
//! valgrind (whose own allocator replaces the program's) never sees: glibc's `[heap]`, any
//! mapping holding an outstanding block (its non-main arenas and large blocks), and glibc's
//! non-main arena heaps (64 MiB-aligned anonymous mappings whose first word points into a
//! 64 MiB-aligned mapping).
//!
//! `record --scan` cannot do that: blocks allocated before the window are not in the heap
//! table, and the only pointer to a new block may sit in one of them. There the heap is a root
//! too (less the blocks known, which are scanned as blocks), so that a block is never called
//! lost while an older block points to it; stale pointers in free chunks may hide a leak
//! instead.
use std::{io, time::Instant};

use thiserror::Error;

use super::{
    classify::Classifier,
    contents::BlockReader,
    exit_frame::{caller_stack_pointer, exit_functions},
    extents::Extents,
    memory::{read_fully, read_word},
};
use crate::{
    report::LeakKind,
    target::{
        maps::{self, Mapping},
        ptrace::ThreadState,
    },
};

/// The x86-64 System V red zone below the stack pointer.
const RED_ZONE: u64 = 128;
/// glibc's HEAP_MAX_SIZE on 64-bit: non-main arena heaps are aligned to it.
const GLIBC_HEAP_ALIGNMENT: u64 = 64 << 20;
/// Roots are read in pieces of this size.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Error)]
pub enum ScanError {
    #[error("cannot read the mappings of process {pid}: {cause}")]
    Maps { pid: u32, cause: io::Error },
    #[error("cannot open the memory of process {pid}: {cause}")]
    Memory { pid: u32, cause: io::Error },
}

/// What the scan read, for the report and for diagnosis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Bytes of root memory scanned.
    pub root_bytes: u64,
    /// Bytes of roots that could not be read (skipped).
    pub unreadable_bytes: u64,
    /// Outstanding blocks whose contents could not be read (they point nowhere).
    pub unreadable_blocks: u64,
    /// How long reading and classifying took, in microseconds.
    pub micros: u64,
}

/// Classifies `blocks` (sorted by address) of the stopped process `pid`; `threads` are its
/// threads' registers at the stop (threads that already ended count with their last ones, as
/// valgrind counts a thread killed by another's exit).
pub fn scan(
    pid: u32,
    threads: &[ThreadState],
    blocks: &mut Extents,
    heap_as_roots: bool,
) -> Result<(Vec<LeakKind>, ScanStats), ScanError> {
    let started = Instant::now();
    let maps = maps::read(pid).map_err(|cause| ScanError::Maps { pid, cause })?;
    let memory = procfs::process::Process::new(pid as i32)
        .and_then(|process| process.mem())
        .map_err(|error| ScanError::Memory { pid, cause: io::Error::other(error.to_string()) })?;
    let mut reader = BlockReader::new(&memory);
    reader.fill_next_chunks(blocks);
    let blocks = &*blocks;
    let mut stats = ScanStats::default();
    let explain = log::log_enabled!(log::Level::Debug);
    let mut classifier = Classifier::new(blocks);
    if explain {
        classifier = classifier.keeping_witnesses();
    }
    for thread in threads {
        for (index, &register) in thread.registers.iter().enumerate() {
            classifier.root_register(register, thread.tid, index);
        }
    }
    // Each thread's stack is live from its stack pointer (less the red zone) up, or from the
    // frame that called exit, above glibc's exit path (see exit_frame).
    let exits = exit_functions(pid, &maps);
    let stack_starts: Vec<u64> = threads
        .iter()
        .map(|thread| {
            exits
                .iter()
                .find_map(|functions| caller_stack_pointer(&memory, &maps, thread.stack_pointer, functions))
                .unwrap_or(thread.stack_pointer.saturating_sub(RED_ZONE))
        })
        .collect();
    for (start, end) in root_ranges(&maps, &stack_starts, blocks, |addr| read_word(&memory, addr), heap_as_roots) {
        log::debug!("process {pid}: root {start:#x}-{end:#x}");
        let mut buffer = vec![0u8; CHUNK];
        let mut at = start;
        while at < end {
            let length = ((end - at) as usize).min(CHUNK);
            match read_fully(&memory, &mut buffer[..length], at) {
                Ok(()) => {
                    classifier.root_bytes(&buffer[..length], at);
                    stats.root_bytes += length as u64;
                }
                Err(_) => stats.unreadable_bytes += length as u64,
            }
            at += length as u64;
        }
    }
    let (kinds, witnesses) = classifier.classify_with_witnesses(&mut reader.contents(blocks));
    stats.unreadable_blocks = reader.unreadable_blocks();
    if explain {
        for ((block, kind), witness) in blocks.iter_from(0).zip(&kinds).zip(&witnesses) {
            log::debug!(
                "process {pid}: block {:#x} ({} bytes) {}, first marked by {witness:?}",
                block.addr,
                block.size,
                kind.words()
            );
        }
        for thread in threads {
            log::debug!("process {pid}: thread {} stack pointer {:#x}", thread.tid, thread.stack_pointer);
        }
    }
    stats.micros = started.elapsed().as_micros() as u64;
    Ok((kinds, stats))
}

/// The address ranges to scan as roots, 8-aligned; `stack_starts` are the lowest live address
/// of each thread's stack. `read_word` reads one word of the target (to recognize glibc's arena
/// heaps).
pub fn root_ranges(
    maps: &[Mapping],
    stack_starts: &[u64],
    blocks: &Extents,
    read_word: impl Fn(u64) -> Option<u64>,
    heap_as_roots: bool,
) -> Vec<(u64, u64)> {
    let arena_heap = |mapping: &Mapping| {
        mapping.path.is_none()
            && mapping.start.is_multiple_of(GLIBC_HEAP_ALIGNMENT)
            && read_word(mapping.start).is_some_and(|arena| {
                maps.iter().any(|other| {
                    other.contains(arena) && other.path.is_none() && other.start.is_multiple_of(GLIBC_HEAP_ALIGNMENT)
                })
            })
    };
    let holds_block = |mapping: &Mapping| {
        let first = blocks.first_at_or_after(mapping.start);
        first < blocks.len() && blocks.addr(first) < mapping.end
    };
    let mut ranges = Vec::new();
    for mapping in maps {
        if !(mapping.readable && mapping.writable) {
            continue;
        }
        let special = mapping.path.as_deref() == Some("[heap]");
        let device = mapping.path.as_deref().is_some_and(|path| path.starts_with("/dev/"));
        if device || matches!(mapping.path.as_deref(), Some("[vvar]" | "[vvar_vclock]" | "[vsyscall]")) {
            continue;
        }
        let heap = special || holds_block(mapping) || arena_heap(mapping);
        if heap && !heap_as_roots {
            continue;
        }
        // A stack: only from the lowest live address in it upwards.
        let lowest = stack_starts.iter().copied().filter(|&start| mapping.contains(start)).min();
        let start = lowest.map_or(mapping.start, |start| start.max(mapping.start) & !7);
        if heap {
            ranges.extend(outside_blocks(start, mapping.end, blocks));
        } else {
            ranges.push((start, mapping.end));
        }
    }
    ranges
}

/// The parts of [start, end) outside every block, 8-aligned.
fn outside_blocks(start: u64, end: u64, blocks: &Extents) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    let mut at = start;
    // The first block ending after `start`: the one before the first starting at or after it,
    // if it reaches past `start` (blocks are disjoint and sorted).
    let mut first = blocks.first_at_or_after(start);
    if first > 0 && blocks.get(first - 1).end() > start {
        first -= 1;
    }
    for block in blocks.iter_from(first).take_while(|block| block.addr < end) {
        if block.addr > at {
            ranges.push((at, block.addr & !7));
        }
        at = at.max((block.addr + block.size + 7) & !7);
    }
    if at < end {
        ranges.push((at, end));
    }
    ranges.retain(|(start, end)| start < end);
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::reachability::extents::Extent;

    fn mapping(start: u64, end: u64, perms: &str, path: Option<&str>) -> Mapping {
        Mapping {
            start,
            end,
            readable: perms.starts_with('r'),
            writable: perms.as_bytes()[1] == b'w',
            executable: perms.as_bytes()[2] == b'x',
            shared: perms.as_bytes()[3] == b's',
            offset: 0,
            device: (0, 0),
            inode: u64::from(path.is_some_and(|path| path.starts_with('/'))),
            path: path.map(str::to_owned),
            deleted: false,
        }
    }

    #[test]
    fn roots_are_writable_mappings_but_the_heap_and_stacks_start_at_their_pointer() {
        let maps = vec![
            mapping(0x1000, 0x2000, "r-xp", Some("/bin/prog")),
            mapping(0x2000, 0x3000, "rw-p", Some("/bin/prog")),
            mapping(0x3000, 0x5000, "rw-p", None), // bss
            mapping(0x10000, 0x20000, "rw-p", Some("[heap]")),
            mapping(0x30000, 0x40000, "rw-p", None), // a large block's own mapping
            mapping(0x8000000, 0x8100000, "rw-p", None), // glibc arena heap (64 MiB aligned)
            mapping(0x8100000, 0xc000000, "---p", None),
            mapping(0x50000, 0x60000, "rw-p", None), // a thread's stack
            mapping(0x7000_0000, 0x7001_0000, "rw-p", Some("[stack]")),
            mapping(0x7100_0000, 0x7100_1000, "r--p", Some("[vvar]")),
        ];
        let threads = [0x7000_8000 - 128, 0x5f000 - 128];
        let blocks: Extents = [
            Extent { addr: 0x10010, size: 16, next_chunk: None },
            Extent { addr: 0x30010, size: 0xf000, next_chunk: None },
        ]
        .into_iter()
        .collect();
        // The arena's first word points into its own mapping.
        let read = |addr: u64| (addr == 0x8000000).then_some(0x8000020);
        assert_eq!(
            root_ranges(&maps, &threads, &blocks, read, false),
            vec![(0x2000, 0x3000), (0x3000, 0x5000), (0x5f000 - 128, 0x60000), (0x7000_8000 - 128, 0x7001_0000)]
        );
        // record --scan: the heap is a root too, less the blocks known.
        assert_eq!(
            root_ranges(&maps, &threads, &blocks, read, true),
            vec![
                (0x2000, 0x3000),
                (0x3000, 0x5000),
                (0x10000, 0x10010),
                (0x10020, 0x20000),
                (0x30000, 0x30010),
                (0x3f010, 0x40000),
                (0x8000000, 0x8100000),
                (0x5f000 - 128, 0x60000),
                (0x7000_8000 - 128, 0x7001_0000)
            ]
        );
    }
}
