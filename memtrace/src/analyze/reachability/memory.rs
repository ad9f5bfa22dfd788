//! Reading the stopped process's memory: a word at a time for roots and chunk headers, a
//! window at a time for blocks (`contents`), and the one interface the classifier reads blocks
//! through, so that it needs neither.
use std::{fs::File, io, os::unix::fs::FileExt};

/// Address space per window: blocks starting in the same aligned megabyte are read together.
pub const READ_WINDOW: u64 = 1 << 20;

/// Where the classifier gets each block's bytes from: the whole block, in one or more pieces
/// whose lengths are multiples of 8 but the last (as many bytes as could be read; a block that
/// could not be read points nowhere).
pub trait BlockContents {
    fn each_chunk(&mut self, index: usize, chunk: &mut dyn FnMut(&[u8]));
}

/// Bytes already in memory: `contents(i)` is block i's.
impl<'c, F: FnMut(usize) -> &'c [u8]> BlockContents for F {
    fn each_chunk(&mut self, index: usize, chunk: &mut dyn FnMut(&[u8])) {
        chunk(self(index));
    }
}

/// The 8-byte word at `addr` in the target, if it can be read.
pub fn read_word(memory: &File, addr: u64) -> Option<u64> {
    let mut bytes = [0u8; 8];
    read_fully(memory, &mut bytes, addr).ok()?;
    Some(u64::from_ne_bytes(bytes))
}

pub fn read_fully(memory: &File, buffer: &mut [u8], addr: u64) -> io::Result<()> {
    memory.read_exact_at(buffer, addr)
}
