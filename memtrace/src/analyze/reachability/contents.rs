//! The outstanding blocks' contents, read from the stopped process as the classifier asks for
//! them, with the memory this takes bounded.
//!
//! Holding every block's bytes at once would cost as much memory as the target's heap (a
//! service with 10 GB outstanding would need 10 GB more at its exit). Instead blocks are read a
//! window of address space at a time (one read for the many small blocks in a megabyte rather
//! than one each), and the windows read last are kept up to a fixed budget: a heap smaller
//! than the budget is read once, a larger one again where the marking comes back to it (the
//! classifier takes its waiting blocks a window at a time, so that is seldom). A block larger
//! than a window is read in window-sized chunks and never kept.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs::File,
    num::NonZeroU64,
    os::unix::fs::FileExt,
};

use memtrace_common::handout;

use super::{
    extents::{Extent, Extents},
    memory::{BlockContents, READ_WINDOW, read_word},
};

const WINDOW: u64 = READ_WINDOW;
/// Bytes of windows kept for blocks read again (the classifier takes the blocks waiting a
/// window at a time, so that few windows are needed again once dropped).
const CACHE_BUDGET: usize = 16 << 20;
/// Blocks in one window further apart than this are read separately (the memory between them
/// may not be mapped, which would spoil the read).
const GAP: u64 = 4096;

/// Reads blocks of a stopped process through its `/proc/PID/mem`, keeping recent windows.
pub struct BlockReader<'a> {
    memory: &'a File,
    /// Kept windows by number, and the order they were read in (the oldest goes first).
    cache: HashMap<u64, Window>,
    order: VecDeque<u64>,
    cached_bytes: usize,
    budget: usize,
    /// Blocks whose bytes could not be read, each counted once: the windows and the large
    /// blocks whose failures were counted.
    unreadable: u64,
    counted_windows: HashSet<u64>,
    counted_large: HashSet<u64>,
}

/// The bytes of a window's small blocks: `parts` are (start address, bytes) of each run of
/// blocks read in one piece, from the word before its first block (glibc's chunk size); a run
/// that could not be read is left out (its blocks point nowhere).
struct Window {
    parts: Vec<(u64, Vec<u8>)>,
}

impl Window {
    fn bytes(&self) -> usize {
        self.parts.iter().map(|(_, bytes)| bytes.len()).sum()
    }

    /// The bytes at [addr, addr + size), if read.
    fn slice(&self, addr: u64, size: u64) -> Option<&[u8]> {
        let index = self.parts.partition_point(|(start, _)| *start <= addr).checked_sub(1)?;
        let (start, bytes) = &self.parts[index];
        let at = (addr - start) as usize;
        bytes.get(at..at + size as usize)
    }
}

impl<'a> BlockReader<'a> {
    pub fn new(memory: &'a File) -> Self {
        Self {
            memory,
            cache: HashMap::new(),
            order: VecDeque::new(),
            cached_bytes: 0,
            budget: CACHE_BUDGET,
            unreadable: 0,
            counted_windows: HashSet::new(),
            counted_large: HashSet::new(),
        }
    }

    /// Fills in every block's next chunk (see [`Extent::next_chunk`]) from the word before it:
    /// marking from the roots needs them all before any block is read for its pointers. The
    /// blocks (sorted by address) are read a window at a time for it, and the windows kept
    /// within the budget for [`BlockReader::contents`].
    pub fn fill_next_chunks(&mut self, blocks: &mut Extents) {
        let mut first = 0;
        while first < blocks.len() {
            let number = blocks.addr(first) / WINDOW;
            let last = window_blocks(blocks, number).end;
            let window = self.window(blocks, number);
            let headers: Vec<Option<u64>> = (first..last)
                .map(|index| {
                    let bytes = window.slice(blocks.addr(index).checked_sub(8)?, 8)?;
                    Some(u64::from_ne_bytes(bytes.try_into().ok()?))
                })
                .collect();
            for (index, header) in (first..last).zip(headers) {
                let block = blocks.get(index);
                // A large block is not in its window: its word is read on its own.
                let header = header.or_else(|| read_word(self.memory, block.addr.checked_sub(8)?));
                blocks.set_next_chunk(index, next_chunk(header, block.addr, block.size));
            }
            first = last;
        }
    }

    /// The contents of `blocks` (the ones the next chunks were filled in for), for the
    /// classifier.
    pub fn contents<'r>(&'r mut self, blocks: &'r Extents) -> impl BlockContents + 'r {
        ReaderContents { reader: self, blocks }
    }

    /// Blocks whose contents could not be read, among those read so far.
    pub fn unreadable_blocks(&self) -> u64 {
        self.unreadable
    }

    /// Window `number` of `blocks`, read unless it is kept.
    fn window(&mut self, blocks: &Extents, number: u64) -> &Window {
        if !self.cache.contains_key(&number) {
            let window = self.read_window(blocks, number);
            self.cached_bytes += window.bytes();
            self.cache.insert(number, window);
            self.order.push_back(number);
            // Keep the newest window even past the budget: it is about to be used.
            while self.cached_bytes > self.budget && self.order.len() > 1 {
                if let Some(oldest) = self.order.pop_front()
                    && let Some(evicted) = self.cache.remove(&oldest)
                {
                    self.cached_bytes -= evicted.bytes();
                }
            }
        }
        &self.cache[&number]
    }

    /// The small blocks starting in window `number`, read in runs of nearby blocks.
    fn read_window(&mut self, blocks: &Extents, number: u64) -> Window {
        let small: Vec<Extent> =
            window_blocks(blocks, number).map(|index| blocks.get(index)).filter(|block| block.size <= WINDOW).collect();
        let first_visit = self.counted_windows.insert(number);
        let mut parts = Vec::new();
        for run in runs(&small) {
            let run = &small[run];
            let start = run[0].addr.saturating_sub(8);
            let end = run.iter().map(|block| block.addr + block.size).max().unwrap_or(start);
            let mut bytes = vec![0u8; (end - start) as usize];
            if self.memory.read_exact_at(&mut bytes, start).is_ok() {
                parts.push((start, bytes));
                continue;
            }
            // One unreadable page spoils the run: its blocks are read one by one.
            for block in run {
                let start = block.addr.saturating_sub(8);
                let mut bytes = vec![0u8; (block.addr + block.size - start) as usize];
                if self.memory.read_exact_at(&mut bytes, start).is_ok() {
                    parts.push((start, bytes));
                } else if first_visit {
                    self.unreadable += 1;
                }
            }
        }
        Window { parts }
    }

    /// Block `block`'s bytes, in pieces.
    fn each_chunk(&mut self, blocks: &Extents, block: Extent, chunk: &mut dyn FnMut(&[u8])) {
        if block.size <= WINDOW {
            if let Some(bytes) = self.window(blocks, block.addr / WINDOW).slice(block.addr, block.size) {
                chunk(bytes);
            }
            return;
        }
        // A large block is read a window's worth at a time (8-aligned pieces: the classifier
        // reads whole words) and never kept.
        let mut buffer = vec![0u8; WINDOW as usize];
        let mut at = 0;
        while at < block.size {
            let length = (block.size - at).min(WINDOW) as usize;
            if self.memory.read_exact_at(&mut buffer[..length], block.addr + at).is_err() {
                if at == 0 && self.counted_large.insert(block.addr) {
                    self.unreadable += 1;
                }
                return;
            }
            chunk(&buffer[..length]);
            at += length as u64;
        }
    }
}

/// A reader and the blocks it reads, as the classifier sees them.
struct ReaderContents<'r, 'a> {
    reader: &'r mut BlockReader<'a>,
    blocks: &'r Extents,
}

impl BlockContents for ReaderContents<'_, '_> {
    fn each_chunk(&mut self, index: usize, chunk: &mut dyn FnMut(&[u8])) {
        let block = self.blocks.get(index);
        let Some(summary) = self.blocks.first_words(index) else {
            return self.reader.each_chunk(self.blocks, block, chunk);
        };
        // The first piece holds the first words (a block is read whole, or a window at a time).
        let mut first = true;
        self.reader.each_chunk(self.blocks, block, &mut |bytes| match std::mem::take(&mut first) {
            true => without_handout_words(bytes, summary, chunk),
            false => chunk(bytes),
        });
    }
}

/// Passes `bytes` (a block's first piece) on, with the first words the allocator left and the
/// program never wrote zeroed (see `memtrace_common::handout`).
fn without_handout_words(bytes: &[u8], summary: (u64, u64), chunk: &mut dyn FnMut(&[u8])) {
    const HEAD: usize = handout::WORDS * 8;
    let head_length = bytes.len().min(HEAD) & !7;
    let mut head = [0u8; HEAD];
    for (index, (piece, from)) in head[..head_length].chunks_exact_mut(8).zip(bytes.chunks_exact(8)).enumerate() {
        let word = u64::from_ne_bytes(from.try_into().unwrap_or_default());
        if !handout::left_by_allocator(summary, index, word) {
            piece.copy_from_slice(from);
        }
    }
    chunk(&head[..head_length]);
    if head_length < bytes.len() {
        chunk(&bytes[head_length..]);
    }
}

/// The blocks (sorted by address) starting in window `number`, by index range.
fn window_blocks(blocks: &Extents, number: u64) -> std::ops::Range<usize> {
    blocks.starting_in(number * WINDOW, (number + 1).saturating_mul(WINDOW))
}

/// Runs of blocks (by index range) near enough to read in one piece.
fn runs(blocks: &[Extent]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut first = 0;
    while first < blocks.len() {
        let mut end = blocks[first].addr + blocks[first].size;
        let mut last = first + 1;
        while let Some(block) = blocks.get(last) {
            if block.addr.saturating_sub(8) > end + GAP {
                break;
            }
            end = end.max(block.addr + block.size);
            last += 1;
        }
        runs.push(first..last);
        first = last;
    }
    runs
}

/// glibc's malloc chunk header: the word before a block (`header`) holds its chunk's size (low
/// 3 bits are flags), the chunk starts 16 bytes before the block, and the next chunk's header
/// follows it. Returned only when it lies inside the block (the block uses the next chunk's
/// first word).
fn next_chunk(header: Option<u64>, addr: u64, size: u64) -> Option<NonZeroU64> {
    let chunk_size = header? & !7;
    let next = addr.checked_sub(16)?.checked_add(chunk_size)?;
    NonZeroU64::new(next).filter(|_| next > addr && next < addr + size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_left_by_the_allocator_are_zeroed_and_the_programs_kept() {
        let heap = 0x5555_5555_9000u64;
        let handed_out = [heap, heap + 0x20, 0, heap + 0x40, 0, 0, 0, 0];
        let summary = handout::summarize(&handed_out, 5);
        // At the scan: word 1 was overwritten with another pointer; 0 and 3 were not touched;
        // word 2 got a pointer; a sixth word follows the first five.
        let now = [heap, heap + 0x60, heap + 0x80, heap + 0x40, 0, heap + 0xa0];
        let bytes: Vec<u8> = now.iter().flat_map(|word| word.to_ne_bytes()).collect();
        let mut seen = Vec::new();
        without_handout_words(&bytes[..44], summary, &mut |piece| seen.push(piece.to_vec()));
        let words: Vec<u64> =
            seen.concat().chunks_exact(8).map(|word| u64::from_ne_bytes(word.try_into().unwrap())).collect();
        assert_eq!(words, [0, heap + 0x60, heap + 0x80, 0, 0]);
        // The partial last word is passed on as it was.
        assert_eq!(seen.concat().len(), 44);
    }

    /// This test process's own memory stands in for a stopped target's.
    fn own_memory() -> File {
        File::open("/proc/self/mem").expect("/proc/self/mem")
    }

    /// The bytes the reader gives for each block, in the order asked.
    fn read_all(reader: &mut BlockReader, blocks: &Extents, order: &[usize]) -> Vec<Vec<u8>> {
        let mut contents = reader.contents(blocks);
        order
            .iter()
            .map(|&index| {
                let mut bytes = Vec::new();
                contents.each_chunk(index, &mut |chunk| bytes.extend_from_slice(chunk));
                bytes
            })
            .collect()
    }

    #[test]
    fn blocks_read_in_any_order_through_a_small_cache_are_their_bytes() {
        // Blocks of many sizes over a few megabytes: runs, windows, and a block of 3 MiB
        // read in pieces. With a 2 MiB budget windows are dropped and read again.
        let mut owned: Vec<Vec<u8>> = (0..8_000usize)
            .map(|index| {
                let size = if index == 5_000 { 3 << 20 } else { 16 + (index * 37) % 600 };
                (0..size).map(|byte| (byte * 131 + index) as u8).collect()
            })
            .collect();
        owned.push(Vec::new());
        let mut blocks: Vec<Extent> = owned
            .iter()
            .map(|bytes| Extent { addr: bytes.as_ptr() as u64, size: bytes.len() as u64, next_chunk: None })
            .filter(|block| block.size > 0)
            .collect();
        blocks.sort_unstable_by_key(|block| block.addr);
        let mut blocks: Extents = blocks.into_iter().collect();
        let memory = own_memory();
        let mut reader = BlockReader::new(&memory);
        reader.budget = 2 << 20;
        reader.fill_next_chunks(&mut blocks);
        // Forwards, backwards, then strided: each order evicts windows the next one needs.
        let count = blocks.len();
        let order: Vec<usize> =
            (0..count).chain((0..count).rev()).chain((0..count).map(|index| index * 7_919 % count)).collect();
        let got = read_all(&mut reader, &blocks, &order);
        for (&index, bytes) in order.iter().zip(&got) {
            let block = blocks.get(index);
            // SAFETY: the block is one of `owned`'s vectors, alive and unchanged.
            let expected = unsafe { std::slice::from_raw_parts(block.addr as *const u8, block.size as usize) };
            assert_eq!(bytes.as_slice(), expected, "block {index} at {:#x}", block.addr);
        }
        assert!(reader.cached_bytes <= 2 << 20 || reader.order.len() == 1);
        assert_eq!(reader.unreadable_blocks(), 0);
    }

    #[test]
    fn a_block_that_cannot_be_read_points_nowhere_and_is_counted_once() {
        // Address 0x1000 is never mapped.
        let blocks: Extents = [
            Extent { addr: 0x1000, size: 64, next_chunk: None },
            Extent { addr: 0x10_0000_0000, size: 2 << 20, next_chunk: None },
        ]
        .into_iter()
        .collect();
        let memory = own_memory();
        let mut reader = BlockReader::new(&memory);
        let got = read_all(&mut reader, &blocks, &[0, 1, 0, 1]);
        assert!(got.iter().all(Vec::is_empty));
        assert_eq!(reader.unreadable_blocks(), 2);
    }
}
