//! The blocks tracked in the kernel (every outstanding one with `--combined`, the sampled ones
//! with `--sample-bytes`), by (process, address): an open-addressed table in an array.
//!
//! A kernel hash map costs a hashed, locked insert at every allocation and a locked delete at
//! every free: about 170 ns per malloc+free pair together (`--program-stats`), more than the
//! empty probes themselves. Here a block lives in one of `BLOCK_WINDOW` consecutive slots
//! from its home slot; array slots are reached without a helper call, a slot is claimed with
//! one compare-and-exchange and given back with one store.
//!
//! - A lookup always scans the whole window (never stopping at an empty slot), so a free
//!   simply empties its slot: no tombstones.
//! - A slot is claimed by swapping its address word from empty to `CLAIMED_SLOT`, filled in,
//!   then published by storing the address. A probe of another process never matches a half
//!   filled slot; one of the same process cannot look for the block before the allocator has
//!   returned it, which is after the slot was published.
//! - A block whose window is full goes to `LIVE_BLOCKS`, a hash map that only then costs
//!   anything: frees look there only once something has overflowed.
//! - While sampling, most frees are of blocks never tracked, and scanning a whole window (four
//!   cache lines) to find nothing made such a free cost about 200 ns in the kernel, twice one
//!   that finds its block at home (`--program-stats`).
//!   `BLOCK_GROUPS` counts the blocks in each aligned group of `BLOCK_WINDOW` slots; a window
//!   spans at most two groups, and when both are empty the scan is skipped. A count only errs
//!   high (the agent empties slots of exec'd processes without touching it), which costs a scan,
//!   never a block.
//!
//! The agent reads the slots through a shared mapping of the array (`BPF_F_MMAPABLE`) and
//! empties the slots of a process that exec'd with the same compare-and-exchange.
use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd};

use aya_ebpf::{
    Global,
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, HashMap},
};
use memtrace_common::{BLOCK_WINDOW, BlockKey, BlockSlot, CLAIMED_SLOT, EMPTY_SLOT, LiveBlock, home_slot, table_mask};

use crate::state::sampling;

/// Blocks tracked in the kernel that found no room in the table. Entries are allocated as
/// needed (nothing is used until the table overflows); sized by the agent: one entry when no
/// block is tracked.
#[map(name = "LIVE_BLOCKS")]
static LIVE_BLOCKS: HashMap<BlockKey, LiveBlock> = HashMap::with_max_entries(1, BPF_F_NO_PREALLOC);

/// The slots; sized by the agent to `1 << BLOCK_SLOT_BITS`, twice the blocks it should hold.
#[map(name = "BLOCK_SLOTS")]
static BLOCK_SLOTS: Array<BlockSlot> = Array::with_max_entries(2, BPF_F_MMAPABLE);

/// Set at load time: the table has `1 << BLOCK_SLOT_BITS` slots.
#[unsafe(no_mangle)]
static BLOCK_SLOT_BITS: Global<u32> = Global::new(1);

/// Slot 0 becomes 1 once a block went to `LIVE_BLOCKS`; frees look there only then.
#[map(name = "BLOCKS_OVERFLOWED")]
static BLOCKS_OVERFLOWED: Array<u32> = Array::with_max_entries(1, 0);

/// `--sample-bytes`: the blocks held in each group of `BLOCK_WINDOW` slots (slot / BLOCK_WINDOW);
/// sized by the agent to match the table. 64-bit, because the oldest instruction set has an
/// atomic add for 64-bit words that needs nothing newer.
#[map(name = "BLOCK_GROUPS")]
static BLOCK_GROUPS: Array<u64> = Array::with_max_entries(1, 0);

/// Remembers a block handed out; false when neither the table nor the overflow map has room.
#[inline(always)]
pub fn insert(tgid: u32, addr: u64, block: LiveBlock) -> bool {
    let (home, mask) = home_and_mask(tgid, addr);
    for step in 0..BLOCK_WINDOW {
        let index = home.wrapping_add(step) & mask;
        let Some(slot) = BLOCK_SLOTS.get_ptr_mut(index) else { break };
        let word = address_word(slot);
        let held = read(word);
        // The same block still there (its free was missed) is replaced, as a hash map's update
        // would. It is met before any empty slot unless a block nearer home was freed since;
        // scanning the whole window to rule that out would cost every allocation.
        // SAFETY: published by this process; only this thread has this block in hand.
        if held == addr && unsafe { (*slot).tgid } == tgid {
            unsafe { fill(slot, tgid, block) };
            return true;
        }
        if held == EMPTY_SLOT && claim(word) {
            // SAFETY: the slot is claimed: no other probe writes it until it is published.
            unsafe { fill(slot, tgid, block) };
            publish(word, addr);
            count_in_group(index, 1);
            return true;
        }
    }
    if let Some(flag) = BLOCKS_OVERFLOWED.get_ptr_mut(0) {
        // SAFETY: a plain flag; every writer stores the same value.
        unsafe { *flag = 1 };
    }
    LIVE_BLOCKS.insert(BlockKey { tgid, _padding: 0, addr }, block, 0).is_ok()
}

/// Forgets a block given back; false when it was not tracked.
#[inline(always)]
pub fn remove(tgid: u32, addr: u64) -> bool {
    if let Some((index, slot)) = find(tgid, addr) {
        // SAFETY: the slot's own word; the block is this thread's to give back.
        unsafe { word_write(address_word(slot), EMPTY_SLOT) };
        count_in_group(index, u64::MAX); // minus one
        return true;
    }
    overflowed() && LIVE_BLOCKS.remove(BlockKey { tgid, _padding: 0, addr }).is_ok()
}

/// The published slot holding (`tgid`, `addr`), and its index, in the window from its home slot.
#[inline(always)]
fn find(tgid: u32, addr: u64) -> Option<(u32, *mut BlockSlot)> {
    let (home, mask) = home_and_mask(tgid, addr);
    if window_empty(home, mask) {
        return None;
    }
    for step in 0..BLOCK_WINDOW {
        let index = home.wrapping_add(step) & mask;
        let Some(slot) = BLOCK_SLOTS.get_ptr_mut(index) else { break };
        // SAFETY: the slot is in the array. The process id was written before the address was
        // published.
        if read(address_word(slot)) == addr && unsafe { (*slot).tgid } == tgid {
            return Some((index, slot));
        }
    }
    None
}

/// While sampling: adds `delta` (wrapping: `u64::MAX` takes one away) to the count of the group
/// holding slot `index`. With `--combined` nearly every window holds blocks, so nothing is
/// counted.
#[inline(always)]
fn count_in_group(index: u32, delta: u64) {
    if !sampling::sampling() {
        return;
    }
    if let Some(count) = BLOCK_GROUPS.get_ptr_mut(index / BLOCK_WINDOW) {
        // SAFETY: an aligned word of a live array slot; an atomic add, as CPUs share it.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(count, delta) };
    }
}

/// While sampling: whether the groups the window from `home` spans hold no block. A block is
/// counted before its allocator call returns, so before anyone can free it.
#[inline(always)]
fn window_empty(home: u32, mask: u32) -> bool {
    if !sampling::sampling() {
        return false;
    }
    let last = home.wrapping_add(BLOCK_WINDOW - 1) & mask;
    group_empty(home) && group_empty(last)
}

#[inline(always)]
fn group_empty(index: u32) -> bool {
    // SAFETY: an aligned word of a live array slot, read once.
    BLOCK_GROUPS.get_ptr(index / BLOCK_WINDOW).is_some_and(|count| unsafe { count.read_volatile() } == 0)
}

/// The block's home slot and the table's index mask, from one read of the table's size (a
/// global is read afresh at every use, so not inside the window's loop).
#[inline(always)]
fn home_and_mask(tgid: u32, addr: u64) -> (u32, u32) {
    let bits = BLOCK_SLOT_BITS.load();
    (home_slot(tgid, addr, bits), table_mask(bits))
}

#[inline(always)]
fn overflowed() -> bool {
    BLOCKS_OVERFLOWED.get(0).is_some_and(|flag| *flag != 0)
}

/// The slot's address word, shared with other CPUs and the agent. Plain loads and stores of it
/// go through `read_volatile`/`write_volatile`: LLVM's BPF back end cannot emit even a relaxed
/// atomic load for the kernel's oldest instruction set, which bpf-linker targets.
#[inline(always)]
fn address_word(slot: *mut BlockSlot) -> *mut u64 {
    // SAFETY: only the address is taken.
    unsafe { &raw mut (*slot).addr }
}

#[inline(always)]
fn read(word: *mut u64) -> u64 {
    // SAFETY: an aligned word of a live array slot.
    unsafe { word.read_volatile() }
}

/// # Safety
/// `word` must be a slot's address word.
#[inline(always)]
unsafe fn word_write(word: *mut u64, value: u64) {
    // SAFETY: as the caller promises.
    unsafe { word.write_volatile(value) }
}

/// Swaps an empty address word for `CLAIMED_SLOT`; false when another probe got there first.
///
/// The BPF target has no compare-and-exchange in `AtomicU64` (rustc marks it without one, as
/// the first BPF instruction sets had none); the intrinsic emits the instruction the kernel
/// has had since 5.12.
#[inline(always)]
fn claim(word: *mut u64) -> bool {
    // SAFETY: an aligned word of a live array slot.
    let (_, swapped) = unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(word, EMPTY_SLOT, CLAIMED_SLOT)
    };
    swapped
}

/// Stores a claimed slot's address once the rest is written. On x86-64 stores are seen in the
/// order they are made, so a plain store will do.
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
fn publish(word: *mut u64, addr: u64) {
    // SAFETY: the claimed slot's own word.
    unsafe { word_write(word, addr) };
}

/// Elsewhere a plain store may overtake the ones before it: an exchange, because BPF atomic
/// read-modify-write instructions are full barriers on every architecture.
#[cfg(not(bpf_target_arch = "x86_64"))]
#[inline(always)]
fn publish(word: *mut u64, addr: u64) {
    // SAFETY: as in `claim`.
    unsafe { core::intrinsics::atomic_xchg::<u64, { AtomicOrdering::SeqCst }>(word, addr) };
}

/// Writes everything but the address word.
///
/// # Safety
/// The caller must own the slot: claimed by it, or published for its own process and block.
#[inline(always)]
unsafe fn fill(slot: *mut BlockSlot, tgid: u32, block: LiveBlock) {
    // SAFETY: as the caller promises.
    unsafe {
        (*slot).tgid = tgid;
        (*slot).size = block.size;
        (*slot).stack_hash = block.stack_hash;
    }
}
