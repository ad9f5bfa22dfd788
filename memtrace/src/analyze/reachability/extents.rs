//! Where the blocks scanned lie, sorted by address, in as little memory as the scan can do
//! with: the scan runs while the heap table still holds every block, so what it adds per block
//! is paid on top of that at the agent's peak.
//!
//! 13 bytes a block where a vector of [`Extent`]s took 24: the addresses (8 bytes, handed on to
//! the leak kinds afterwards instead of copied), the sizes in 4 bytes (a block of 4 GiB or more
//! is looked up aside), and the allocator's next chunk as a distance back from the block's end
//! in 1 byte (glibc's lies in the block's last 8 bytes).
use std::{num::NonZeroU64, ops::Range};

/// Where a block lies in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub addr: u64,
    pub size: u64,
    /// An address inside the block that is not a pointer to it: the header of the allocator's
    /// next chunk, which overlaps the block's last bytes (glibc lends a chunk's first word to
    /// the block before it). The allocator's own records (glibc's `main_arena` in libc's data:
    /// the top chunk, free lists) point there; valgrind, which replaces the allocator, never
    /// sees them.
    pub next_chunk: Option<NonZeroU64>,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// `sizes` entry of a block whose size is in `huge`.
const HUGE: u32 = u32::MAX;

/// Blocks sorted by address, disjoint.
#[derive(Debug, Default)]
pub struct Extents {
    addrs: Vec<u64>,
    sizes: Vec<u32>,
    /// (index, size) of the blocks of `HUGE` bytes or more, by index.
    huge: Vec<(usize, u64)>,
    /// How far before the block's end its next chunk starts; 0 for none.
    next_chunk_back: Vec<u8>,
    /// (index, summary) of the blocks whose first words held pointer-like values when they
    /// were handed out, by index: see [`Extents::set_first_words`].
    first_words: Vec<(usize, (u64, u64))>,
}

impl Extents {
    /// The blocks at `addrs` (sorted here), of the sizes `size_of` gives.
    pub fn new(mut addrs: Vec<u64>, mut size_of: impl FnMut(u64) -> u64) -> Self {
        addrs.sort_unstable();
        let mut huge = Vec::new();
        let sizes = addrs
            .iter()
            .enumerate()
            .map(|(index, &addr)| {
                let size = size_of(addr);
                u32::try_from(size).ok().filter(|&small| small != HUGE).unwrap_or_else(|| {
                    huge.push((index, size));
                    HUGE
                })
            })
            .collect();
        let next_chunk_back = vec![0; addrs.len()];
        Self { addrs, sizes, huge, next_chunk_back, first_words: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    pub fn addr(&self, index: usize) -> u64 {
        self.addrs[index]
    }

    pub fn size(&self, index: usize) -> u64 {
        match self.sizes[index] {
            HUGE => self.huge.binary_search_by_key(&index, |&(at, _)| at).map_or(0, |found| self.huge[found].1),
            size => u64::from(size),
        }
    }

    pub fn get(&self, index: usize) -> Extent {
        let (addr, size) = (self.addr(index), self.size(index));
        let back = u64::from(self.next_chunk_back[index]);
        let next_chunk = if back == 0 { None } else { NonZeroU64::new(addr + size - back) };
        Extent { addr, size, next_chunk }
    }

    /// Records block `index`'s next chunk; one not within the block's last 255 bytes is
    /// dropped (glibc's is within its last 8).
    pub fn set_next_chunk(&mut self, index: usize, next_chunk: Option<NonZeroU64>) {
        let end = self.addr(index) + self.size(index);
        self.next_chunk_back[index] = next_chunk
            .and_then(|next| end.checked_sub(next.get()))
            .and_then(|back| u8::try_from(back).ok())
            .unwrap_or(0);
    }

    /// What the allocator left in blocks' first words when it handed them out, by address
    /// (`memtrace_common::handout`): words that still hold it were never written by the
    /// program, and are not read as pointers.
    pub fn set_first_words<'m>(&mut self, by_addr: impl Iterator<Item = (&'m u64, &'m (u64, u64))>) {
        let mut first_words: Vec<(usize, (u64, u64))> = by_addr
            .filter_map(|(addr, &summary)| self.addrs.binary_search(addr).ok().map(|index| (index, summary)))
            .collect();
        first_words.sort_unstable_by_key(|&(index, _)| index);
        self.first_words = first_words;
    }

    /// Block `index`'s first words as handed out, summarized, if any looked like pointers.
    pub fn first_words(&self, index: usize) -> Option<(u64, u64)> {
        let found = self.first_words.binary_search_by_key(&index, |&(at, _)| at).ok()?;
        Some(self.first_words[found].1)
    }

    /// The blocks from `index` on.
    pub fn iter_from(&self, index: usize) -> impl Iterator<Item = Extent> + '_ {
        (index..self.len()).map(|index| self.get(index))
    }

    /// The index of the first block starting at or after `addr`.
    pub fn first_at_or_after(&self, addr: u64) -> usize {
        self.addrs.partition_point(|&start| start < addr)
    }

    /// The blocks starting in [start, end), by index.
    pub fn starting_in(&self, start: u64, end: u64) -> Range<usize> {
        self.first_at_or_after(start)..self.first_at_or_after(end)
    }

    /// The block `word` points into. A block of size 0 counts as one byte long, as in
    /// valgrind, or nothing could point to it; its allocator's next chunk is not in it.
    pub fn containing(&self, word: u64) -> Option<usize> {
        let index = self.addrs.partition_point(|&start| start <= word).checked_sub(1)?;
        let block = self.get(index);
        (word - block.addr < block.size.max(1) && block.next_chunk.map(NonZeroU64::get) != Some(word)).then_some(index)
    }

    /// The addresses, in order, for what outlives the scan.
    pub fn into_addrs(self) -> Vec<u64> {
        self.addrs
    }
}

/// From blocks already sorted by address: synthetic blocks in tests.
#[cfg(test)]
impl FromIterator<Extent> for Extents {
    fn from_iter<I: IntoIterator<Item = Extent>>(blocks: I) -> Self {
        let blocks: Vec<Extent> = blocks.into_iter().collect();
        debug_assert!(blocks.windows(2).all(|pair| pair[0].addr < pair[1].addr), "blocks sorted by address");
        let mut extents = Extents::new(blocks.iter().map(|block| block.addr).collect(), |addr| {
            blocks.binary_search_by_key(&addr, |block| block.addr).map_or(0, |found| blocks[found].size)
        });
        for (index, block) in blocks.iter().enumerate() {
            extents.set_next_chunk(index, block.next_chunk);
        }
        extents
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_keep_their_sizes_and_next_chunks_in_less_room() {
        let blocks = [
            (0x9000u64, 24u64),
            (0x1000, 0),
            (0x1_0000_0000, 5 << 30),
            (0x3_0000_0000, 4096),
            (0x4_0000_0000, u64::from(u32::MAX)),
        ];
        // Given out of order, taken in address order.
        let size_of = |addr: u64| blocks.iter().find(|(at, _)| *at == addr).map_or(0, |(_, size)| *size);
        let mut extents = Extents::new(blocks.iter().map(|(addr, _)| *addr).collect(), size_of);
        let got: Vec<(u64, u64)> = extents.iter_from(0).map(|block| (block.addr, block.size)).collect();
        let mut sorted = blocks.to_vec();
        sorted.sort_unstable();
        assert_eq!(got, sorted);
        // glibc's next chunk, 8 bytes before a 24-byte block's end; one too far back is dropped.
        extents.set_next_chunk(1, NonZeroU64::new(0x9000 + 16));
        extents.set_next_chunk(3, NonZeroU64::new(0x3_0000_0000 + 16));
        assert_eq!(extents.get(1).next_chunk, NonZeroU64::new(0x9010));
        assert_eq!(extents.get(3).next_chunk, None);
        assert_eq!(extents.containing(0x9008), Some(1));
        assert_eq!(extents.containing(0x9010), None);
        assert_eq!(extents.containing(0x9018), None);
        assert_eq!(extents.containing(0x1000), Some(0));
        assert_eq!(extents.containing(0x1001), None);
        assert_eq!(extents.containing(0x1_0000_0000 + (5 << 30) - 1), Some(2));
        assert_eq!(extents.containing(0x1_0000_0000 + (5 << 30)), None);
        assert_eq!(extents.containing(0x4_0000_0000 + u64::from(u32::MAX) - 1), Some(4));
        assert_eq!(extents.starting_in(0x2000, 0x3_0000_0000), 1..3);
        assert_eq!(extents.into_addrs(), sorted.iter().map(|(addr, _)| *addr).collect::<Vec<_>>());
    }
}
