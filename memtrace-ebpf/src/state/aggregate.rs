//! `--combined`: in-kernel aggregation. Each outstanding block's size and stack live in the
//! block table (`block_table`), and what each (process, stack) allocated in all in
//! `TOTALS_SLOTS`; no event crosses the ring buffer per call. The agent reads both when it
//! reports, summing the outstanding blocks per stack then: a free only empties a slot.
//!
//! A stack is walked (`stack`: by unwind tables or frame pointers) and kept in `STACKS` under a 64-bit hash of its
//! frames, stored the first time a CPU counts it for a process. The price: no per-block time,
//! so the trace window is the probes' lifetime.
use aya_ebpf::{
    Global,
    bindings::pt_regs,
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use memtrace_common::{
    Counter, LiveBlock, StackFrames, StackTotals, TOTALS_WINDOW, TotalsSlot, table_mask, totals_home,
    unwind::{COMBINED_TRUNCATED, combined_hash},
};

use crate::{
    emit::count,
    stack::{self, STACK_SCRATCH},
    state::block_table,
};

/// The stacks of the blocks tracked in the kernel, by the hash of their frames. Sized by the
/// agent (one entry when not combined).
#[map(name = "STACKS")]
static STACKS: HashMap<u64, StackFrames> = HashMap::with_max_entries(1, 0);

/// Set to 1 at load time for in-kernel aggregation.
#[unsafe(no_mangle)]
static COMBINED: Global<u8> = Global::new(0);

/// What each (process, stack) allocated in all: per CPU, so that no update needs an atomic
/// operation, and an open-addressed table in an array, so that finding a stack's totals is a
/// few loads instead of a hash-map lookup. Sized by the agent to `1 << TOTALS_SLOT_BITS`.
#[map(name = "TOTALS_SLOTS")]
static TOTALS_SLOTS: PerCpuArray<TotalsSlot> = PerCpuArray::with_max_entries(2, 0);

/// Set at load time: each CPU's totals table has `1 << TOTALS_SLOT_BITS` slots.
#[unsafe(no_mangle)]
static TOTALS_SLOT_BITS: Global<u32> = Global::new(1);

#[inline(always)]
pub fn enabled() -> bool {
    COMBINED.load() != 0
}

/// A block handed out: remember it with its stack, and add it to the stack's totals.
#[inline(always)]
pub fn acquire(regs: *const pt_regs, tgid: u32, addr: u64, size: u64) {
    let Some(stack) = STACK_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's own scratch slot; a BPF program is not preempted on its CPU.
    let stack = unsafe { &mut *stack };
    let (depth, truncated) = stack::walk_combined(regs, tgid, &mut stack.frames);
    stack.depth = depth as u64 | if truncated { COMBINED_TRUNCATED } else { 0 };
    let hash = combined_hash(&stack.frames[..depth.min(memtrace_common::MAX_STACK_DEPTH)], truncated);
    let Some(totals) = totals_of(tgid, hash, stack) else {
        count(Counter::StackSumsFull);
        return;
    };
    if !block_table::insert(tgid, addr, LiveBlock { size, stack_hash: hash }) {
        count(Counter::LiveBlocksFull);
        return;
    }
    // SAFETY: this CPU's own slot; a BPF program is not preempted on its CPU.
    unsafe {
        (*totals).allocated_bytes = (*totals).allocated_bytes.wrapping_add(size);
        (*totals).allocations = (*totals).allocations.wrapping_add(1);
    }
}

/// A block given back. One never handed out during the trace is counted as an unknown free.
#[inline(always)]
pub fn release(tgid: u32, addr: u64) {
    if !block_table::remove(tgid, addr) {
        count(Counter::UnknownFree);
    }
}

/// This CPU's totals of one (process, stack), in the first slot of its window that holds them
/// or is free; the stack's frames are stored when a slot is taken. None when the window is full
/// or the frames cannot be stored.
#[inline(always)]
fn totals_of(tgid: u32, hash: u64, stack: &StackFrames) -> Option<*mut StackTotals> {
    let bits = TOTALS_SLOT_BITS.load();
    let mask = table_mask(bits);
    let home = totals_home(tgid, hash, bits);
    for step in 0..TOTALS_WINDOW {
        let slot = TOTALS_SLOTS.get_ptr_mut(home.wrapping_add(step) & mask)?;
        // SAFETY: this CPU's own slot; a BPF program is not preempted on its CPU.
        let slot = unsafe { &mut *slot };
        if slot.used != 0 {
            if slot.stack_hash == hash && slot.tgid == tgid {
                return Some(&raw mut slot.totals);
            }
            continue;
        }
        // Another CPU or process may have stored the same frames: the same key, the same value.
        if STACKS.insert(hash, stack, 0).is_err() {
            return None;
        }
        *slot = TotalsSlot { stack_hash: hash, tgid, used: 1, totals: StackTotals::default() };
        return Some(&raw mut slot.totals);
    }
    None
}
