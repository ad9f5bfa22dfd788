//! Leak kinds as valgrind memcheck defines them, computed from words already read: the roots'
//! words and each outstanding block's contents. Knows nothing about processes, so it is tested
//! on synthetic memory.
//!
//! The algorithm is memcheck's (`mc_leakcheck.c`), so that the numbers agree with valgrind's:
//! 1. Every aligned word of the roots that points into a block marks it: a pointer to its start
//!    makes it *still reachable*, a pointer inside it *possibly lost*. Blocks marked are scanned
//!    in turn: a start pointer from a reachable block makes the target reachable; any other
//!    pointer from a marked block makes it possibly lost (unless it is reachable already).
//! 2. The blocks still unmarked are lost. In address order, each one still unmarked is a clique
//!    leader: every unmarked block reachable from it (by any pointer) is *indirectly lost*. The
//!    leaders are *definitely lost*. So a lost cycle is one definitely lost block (the lowest
//!    address) and the rest indirectly lost, as valgrind reports it.
//!
//! Not modelled: valgrind's `--leak-check-heuristics` (on by default), which count some
//! interior pointers as start pointers (std::string, new[] array cookies, length-prefixed
//! blocks, C++ multiple inheritance). memtrace counts those blocks as possibly lost.
use std::collections::BTreeMap;

use super::{
    extents::Extents,
    memory::{BlockContents, READ_WINDOW},
};
use crate::report::LeakKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum State {
    Unreached,
    Indirect,
    Possible,
    Reachable,
}

/// The first pointer that marked a block from the roots, for `-vv` (why is this block not
/// lost?).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Witness {
    /// Register `index` (in [`crate::analyze::reachability::ThreadState::registers`]) of thread `tid`.
    Register { tid: u32, index: usize },
    /// The root word at this address.
    Root(u64),
    /// A word of this block (by index).
    Block(usize),
}

/// Marks blocks from roots, then classifies. Blocks must be sorted by address and disjoint.
pub struct Classifier<'a> {
    blocks: &'a Extents,
    state: Vec<State>,
    pending: Pending,
    /// Kept only when asked for (`-vv`): 24 bytes per block otherwise spent for nothing.
    witness: Option<Vec<Option<Witness>>>,
}

impl<'a> Classifier<'a> {
    pub fn new(blocks: &'a Extents) -> Self {
        Self { blocks, state: vec![State::Unreached; blocks.len()], pending: Pending::default(), witness: None }
    }

    /// Also keep what first marked each block, for [`Classifier::classify_with_witnesses`].
    pub fn keeping_witnesses(mut self) -> Self {
        self.witness = Some(vec![None; self.blocks.len()]);
        self
    }

    /// A register's value.
    pub fn root_register(&mut self, word: u64, tid: u32, index: usize) {
        self.mark(word, true, Witness::Register { tid, index });
    }

    /// Every aligned 8-byte word of `bytes`, read at `addr` (8-aligned) in the target, is a root.
    pub fn root_bytes(&mut self, bytes: &[u8], addr: u64) {
        for (index, word) in words(bytes).enumerate() {
            self.mark(word, true, Witness::Root(addr + 8 * index as u64));
        }
    }

    /// Like [`Classifier::classify`], and says what first marked each block (for `-vv`: why is
    /// this block not lost?) when built [`Classifier::keeping_witnesses`]; empty otherwise.
    pub fn classify_with_witnesses(
        mut self,
        contents: &mut impl BlockContents,
    ) -> (Vec<LeakKind>, Vec<Option<Witness>>) {
        self.mark_from_blocks(contents);
        let witness = self.witness.take().unwrap_or_default();
        (self.classify(contents), witness)
    }

    fn mark_from_blocks(&mut self, contents: &mut impl BlockContents) {
        while let Some(index) = self.pending.pop() {
            let definite = self.state[index] == State::Reachable;
            contents.each_chunk(index, &mut |bytes| {
                for word in words(bytes) {
                    self.mark(word, definite, Witness::Block(index));
                }
            });
        }
    }

    /// Finishes marking from the roots and classifies every block.
    pub fn classify(mut self, contents: &mut impl BlockContents) -> Vec<LeakKind> {
        // Phase 1: from the roots, through reachable and possibly lost blocks.
        self.mark_from_blocks(contents);
        // Phase 2: cliques of lost blocks, leaders in address order.
        for leader in 0..self.blocks.len() {
            if self.state[leader] != State::Unreached {
                continue;
            }
            self.wait(leader);
            while let Some(index) = self.pending.pop() {
                contents.each_chunk(index, &mut |bytes| {
                    for word in words(bytes) {
                        if let Some(target) = self.blocks.containing(word)
                            && target != leader
                            && self.state[target] == State::Unreached
                        {
                            self.state[target] = State::Indirect;
                            self.wait(target);
                        }
                    }
                });
            }
        }
        self.state
            .into_iter()
            .map(|state| match state {
                State::Unreached => LeakKind::DefinitelyLost,
                State::Indirect => LeakKind::IndirectlyLost,
                State::Possible => LeakKind::PossiblyLost,
                State::Reachable => LeakKind::StillReachable,
            })
            .collect()
    }

    /// A pointer `word` found in a root (`definite`) or in a block of the given state.
    fn mark(&mut self, word: u64, definite: bool, witness: Witness) {
        let Some(target) = self.blocks.containing(word) else { return };
        if let Some(witnesses) = &mut self.witness {
            witnesses[target].get_or_insert(witness);
        }
        let state = &mut self.state[target];
        if *state == State::Reachable {
            return;
        }
        let to_start = word == self.blocks.addr(target);
        if to_start && definite {
            *state = State::Reachable;
            self.wait(target); // (re)scanned: what it points to may be reachable now
        } else if *state == State::Unreached {
            *state = State::Possible;
            self.wait(target);
        }
    }

    /// Block `index` is to be scanned (again).
    fn wait(&mut self, index: usize) {
        self.pending.push(index, self.blocks.addr(index));
    }
}

/// Blocks waiting to be scanned, taken a read window at a time: all those waiting in the
/// window at hand first, then those of the lowest window waiting. Blocks are read a window at
/// a time with a bounded cache (see `contents.rs`); taken in the order they were found, a
/// heap larger than the cache with pointers all over it would be read a window per block.
/// The classification does not depend on the order: marks only rise, and a block whose mark
/// rises is scanned again.
#[derive(Default)]
struct Pending {
    /// The window at hand and its blocks waiting.
    window: u64,
    here: Vec<usize>,
    /// Blocks waiting in the other windows.
    elsewhere: BTreeMap<u64, Vec<usize>>,
}

impl Pending {
    fn push(&mut self, index: usize, addr: u64) {
        let window = addr / READ_WINDOW;
        if window == self.window {
            self.here.push(index);
        } else {
            self.elsewhere.entry(window).or_default().push(index);
        }
    }

    fn pop(&mut self) -> Option<usize> {
        if let Some(index) = self.here.pop() {
            return Some(index);
        }
        let (window, waiting) = self.elsewhere.pop_first()?;
        self.window = window;
        self.here = waiting;
        self.here.pop()
    }
}

/// The whole native-endian 8-byte words of `bytes`.
fn words(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes.chunks_exact(8).map(|chunk| u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8])))
}

#[cfg(test)]
mod tests {
    use LeakKind::*;

    use super::*;
    use crate::analyze::reachability::extents::Extent;

    /// Synthetic memory: blocks at 0x1000, 0x2000, ... each `size` bytes, with contents given
    /// as words.
    struct Memory {
        extents: Vec<Extent>,
        contents: Vec<Vec<u8>>,
    }

    impl Memory {
        fn new(blocks: &[(u64, &[u64])]) -> Self {
            let extents = blocks
                .iter()
                .enumerate()
                .map(|(index, (size, _))| Extent { addr: addr(index), size: *size, next_chunk: None })
                .collect();
            let contents =
                blocks.iter().map(|(_, words)| words.iter().flat_map(|word| word.to_ne_bytes()).collect()).collect();
            Self { extents, contents }
        }

        fn classify(&self, roots: &[u64]) -> Vec<LeakKind> {
            let extents: Extents = self.extents.iter().copied().collect();
            let mut classifier = Classifier::new(&extents);
            let bytes: Vec<u8> = roots.iter().flat_map(|word| word.to_ne_bytes()).collect();
            classifier.root_bytes(&bytes, 0x100);
            classifier.classify(&mut |index: usize| self.contents[index].as_slice())
        }
    }

    fn addr(index: usize) -> u64 {
        0x1000 * (index as u64 + 1)
    }

    #[test]
    fn no_pointer_is_definitely_lost_and_a_root_start_pointer_reachable() {
        let memory = Memory::new(&[(16, &[0, 0]), (16, &[0, 0])]);
        assert_eq!(memory.classify(&[addr(1)]), vec![DefinitelyLost, StillReachable]);
    }

    #[test]
    fn a_lost_list_has_one_definite_head_and_indirect_nodes() {
        // head -> n1 -> n2, nothing points to head.
        let memory = Memory::new(&[(16, &[addr(1), 0]), (16, &[addr(2), 0]), (16, &[0, 0])]);
        assert_eq!(memory.classify(&[]), vec![DefinitelyLost, IndirectlyLost, IndirectlyLost]);
        // With the head in a root, all are reachable.
        assert_eq!(memory.classify(&[addr(0)]), vec![StillReachable; 3]);
    }

    #[test]
    fn a_lost_cycle_is_led_by_its_lowest_address() {
        // 0 -> 1 -> 2 -> 0, and a list 3 -> 1 that joins the cycle later in address order.
        let memory = Memory::new(&[(8, &[addr(1)]), (8, &[addr(2)]), (8, &[addr(0)]), (8, &[addr(1)])]);
        // Leader 0 takes 1 and 2; then 3 leads alone (1 is already indirect).
        assert_eq!(memory.classify(&[]), vec![DefinitelyLost, IndirectlyLost, IndirectlyLost, DefinitelyLost]);
    }

    #[test]
    fn a_later_leader_absorbs_an_earlier_one() {
        // 1 -> 0: leader 0 reaches nothing; leader 1 then takes 0, which is no leader any more.
        let memory = Memory::new(&[(8, &[0]), (8, &[addr(0)])]);
        assert_eq!(memory.classify(&[]), vec![IndirectlyLost, DefinitelyLost]);
    }

    #[test]
    fn interior_pointers_make_possibly_lost_and_spread_it() {
        // root -> 0+16 (interior); 0 -> 1 (start): 1 is possibly lost too, from a possible block.
        let memory = Memory::new(&[(32, &[addr(1), 0, 0, 0]), (16, &[0, 0])]);
        assert_eq!(memory.classify(&[addr(0) + 16]), vec![PossiblyLost, PossiblyLost]);
        // A start pointer from a root as well makes both reachable, whatever the order.
        assert_eq!(memory.classify(&[addr(0) + 16, addr(0)]), vec![StillReachable, StillReachable]);
        assert_eq!(memory.classify(&[addr(0), addr(0) + 16]), vec![StillReachable, StillReachable]);
    }

    #[test]
    fn an_interior_pointer_from_a_reachable_block_is_possible() {
        let memory = Memory::new(&[(16, &[addr(1) + 8, 0]), (16, &[0, 0])]);
        assert_eq!(memory.classify(&[addr(0)]), vec![StillReachable, PossiblyLost]);
    }

    #[test]
    fn the_end_of_a_block_is_outside_it_and_empty_blocks_are_one_byte() {
        let memory = Memory::new(&[(16, &[0, 0]), (0, &[])]);
        assert_eq!(memory.classify(&[addr(0) + 16]), vec![DefinitelyLost, DefinitelyLost]);
        assert_eq!(memory.classify(&[addr(1)]), vec![DefinitelyLost, StillReachable]);
    }

    #[test]
    fn a_partial_last_word_is_not_a_pointer() {
        // Block 0 is 12 bytes: its second word is cut off and not scanned (valgrind scans whole
        // words inside the block only).
        let mut memory = Memory::new(&[(12, &[0, addr(1)]), (16, &[0, 0])]);
        memory.contents[0].truncate(12);
        assert_eq!(memory.classify(&[addr(0)]), vec![StillReachable, DefinitelyLost]);
    }

    #[test]
    fn blocks_waiting_in_other_read_windows_are_marked_alike() {
        // Blocks a few read windows apart, found out of address order: a root points to the
        // one at 5 MiB, which points to the start of the one at 1 MiB, which points into the
        // one at 3 MiB (possibly lost), which points back to 5 MiB. A second root to 3 MiB's
        // start makes it reachable, whichever order the blocks are scanned in.
        let mib = 1u64 << 20;
        let extents: Extents =
            [1, 3, 5].map(|at| Extent { addr: at * mib, size: 16, next_chunk: None }).into_iter().collect();
        let words = |first: u64| [first.to_ne_bytes(), 0u64.to_ne_bytes()].concat();
        let contents = [words(3 * mib + 8), words(5 * mib), words(mib)];
        let classify = |roots: &[u64]| {
            let mut classifier = Classifier::new(&extents);
            let bytes: Vec<u8> = roots.iter().flat_map(|word| word.to_ne_bytes()).collect();
            classifier.root_bytes(&bytes, 0x100);
            classifier.classify(&mut |index: usize| contents[index].as_slice())
        };
        assert_eq!(classify(&[5 * mib]), vec![StillReachable, PossiblyLost, StillReachable]);
        assert_eq!(classify(&[5 * mib, 3 * mib]), vec![StillReachable; 3]);
        // Unreached, the cycle is one clique led by its lowest block.
        assert_eq!(classify(&[]), vec![DefinitelyLost, IndirectlyLost, IndirectlyLost]);
    }

    #[test]
    fn the_allocators_pointer_to_the_next_chunk_is_not_a_pointer_to_the_block() {
        let mut memory = Memory::new(&[(24, &[0, 0, 0]), (16, &[0, 0])]);
        memory.extents[0].next_chunk = std::num::NonZeroU64::new(addr(0) + 16);
        assert_eq!(memory.classify(&[addr(0) + 16]), vec![DefinitelyLost, DefinitelyLost]);
        assert_eq!(memory.classify(&[addr(0) + 8]), vec![PossiblyLost, DefinitelyLost]);
    }

    #[test]
    fn kinds_parse_from_long_and_short_names() {
        assert_eq!(LeakKind::parse("definite"), Some(DefinitelyLost));
        assert_eq!(LeakKind::parse("indirectly-lost"), Some(IndirectlyLost));
        assert_eq!(LeakKind::parse("possibly_lost"), Some(PossiblyLost));
        assert_eq!(LeakKind::parse("reachable"), Some(StillReachable));
        assert_eq!(LeakKind::parse("lost"), None);
    }
}
