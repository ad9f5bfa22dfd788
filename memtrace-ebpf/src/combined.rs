//! `--combined`: in-kernel aggregation. Each outstanding block's size and stack live in
//! `LIVE_BLOCKS`, and what each (process, stack) allocated in all in `STACK_TOTALS`; no event
//! crosses the ring buffer per call. The agent reads the maps when it reports, summing the
//! outstanding blocks per stack then: a free is a single map operation, the delete.
//!
//! A stack is walked by hand (`user_stack`) and kept in `STACKS` under a 64-bit hash of its
//! frames, stored the first time its process's totals are created. The price: no per-block
//! time, so the trace window is the probes' lifetime.
use aya_ebpf::{Global, bindings::{BPF_NOEXIST, pt_regs}};
use memtrace_common::{BlockKey, Counter, LiveBlock, StackFrames, StackKey, StackTotals, stack_hash};

use crate::{
    maps::{LIVE_BLOCKS, STACK_SCRATCH, STACK_TOTALS, STACKS, count, stack_depth},
    user_stack,
};

/// Set to 1 at load time for in-kernel aggregation.
#[unsafe(no_mangle)]
static COMBINED: Global<u8> = Global::new(0);

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
    let depth = user_stack::walk(regs, &mut stack.frames, stack_depth());
    stack.depth = depth as u64;
    let hash = stack_hash(&stack.frames[..depth.min(memtrace_common::MAX_STACK_DEPTH)]);
    let Some(totals) = totals_of(StackKey { tgid, _padding: 0, stack_hash: hash }, stack) else {
        count(Counter::StackSumsFull);
        return;
    };
    let key = BlockKey { tgid, _padding: 0, addr };
    if LIVE_BLOCKS.insert(&key, &LiveBlock { size, stack_hash: hash }, 0).is_err() {
        count(Counter::LiveBlocksFull);
        return;
    }
    // SAFETY: this CPU's own copy of the totals; a BPF program is not preempted on its CPU.
    unsafe {
        (*totals).allocated_bytes = (*totals).allocated_bytes.wrapping_add(size);
        (*totals).allocations = (*totals).allocations.wrapping_add(1);
    }
}

/// A block given back. One never handed out during the trace is counted as an unknown free.
#[inline(always)]
pub fn release(tgid: u32, addr: u64) {
    if LIVE_BLOCKS.remove(&BlockKey { tgid, _padding: 0, addr }).is_err() {
        count(Counter::UnknownFree);
    }
}

/// This CPU's copy of one (process, stack)'s totals, created on first use; the stack's frames
/// are stored then.
#[inline(always)]
fn totals_of(key: StackKey, stack: &StackFrames) -> Option<*mut StackTotals> {
    if let Some(totals) = STACK_TOTALS.get_ptr_mut(&key) {
        return Some(totals);
    }
    // Another process may have stored the same frames: the same key, the same value.
    if STACKS.insert(&key.stack_hash, stack, 0).is_err() {
        return None;
    }
    // Another CPU may create the totals first; either way the entry then exists (with zeroed
    // copies for the other CPUs).
    let _ = STACK_TOTALS.insert(&key, &StackTotals::default(), BPF_NOEXIST as u64);
    STACK_TOTALS.get_ptr_mut(&key)
}
