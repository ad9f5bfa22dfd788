//! `--combined`: in-kernel aggregation. Each outstanding block's size and stack live in
//! `LIVE_BLOCKS`, and running sums per (process, stack) in `STACK_SUMS`; no event crosses the
//! ring buffer per call. The agent reads the sums and the stacks once, at the end.
//!
//! A stack is walked by hand (`user_stack`) and kept in `STACKS` under a 64-bit hash of its
//! frames, stored the first time its process's sums are created. The price: no per-block time,
//! so the trace window is the probes' lifetime.
use aya_ebpf::{Global, bindings::{BPF_NOEXIST, pt_regs}};
use memtrace_common::{BlockKey, Counter, LiveBlock, StackKey, StackSums, stack_hash};

use crate::{
    maps::{LIVE_BLOCKS, STACK_SCRATCH, STACK_SUMS, STACKS, count, stack_depth},
    user_stack,
};

/// Set to 1 at load time for in-kernel aggregation.
#[unsafe(no_mangle)]
static COMBINED: Global<u8> = Global::new(0);

#[inline(always)]
pub fn enabled() -> bool {
    COMBINED.load() != 0
}

/// A block handed out: remember it and add it to its stack's sums.
#[inline(always)]
pub fn acquire(regs: *const pt_regs, tgid: u32, addr: u64, size: u64) {
    let Some(stack) = STACK_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's own scratch slot; a BPF program is not preempted on its CPU.
    let stack = unsafe { &mut *stack };
    let depth = user_stack::walk(regs, &mut stack.frames, stack_depth());
    stack.depth = depth as u64;
    let hash = stack_hash(&stack.frames[..depth.min(memtrace_common::MAX_STACK_DEPTH)]);
    let Some(sums) = sums_of(StackKey { tgid, _padding: 0, stack_hash: hash }, stack) else {
        count(Counter::StackSumsFull);
        return;
    };
    let key = BlockKey { tgid, _padding: 0, addr };
    if LIVE_BLOCKS.insert(&key, &LiveBlock { size, stack_hash: hash }, 0).is_err() {
        count(Counter::LiveBlocksFull);
        return;
    }
    // SAFETY: this CPU's own copy of the sums; a BPF program is not preempted on its CPU.
    unsafe {
        (*sums).outstanding_bytes = (*sums).outstanding_bytes.wrapping_add(size);
        (*sums).outstanding_blocks = (*sums).outstanding_blocks.wrapping_add(1);
        (*sums).allocated_bytes = (*sums).allocated_bytes.wrapping_add(size);
        (*sums).allocations = (*sums).allocations.wrapping_add(1);
    }
}

/// A block given back: take it off its stack's sums. One never handed out during the trace
/// is counted as an unknown free.
#[inline(always)]
pub fn release(tgid: u32, addr: u64) {
    let key = BlockKey { tgid, _padding: 0, addr };
    let Some(block) = LIVE_BLOCKS.get_ptr(&key) else {
        count(Counter::UnknownFree);
        return;
    };
    // SAFETY: copied out before the entry is removed.
    let block = unsafe { *block };
    let _ = LIVE_BLOCKS.remove(&key);
    if let Some(sums) = STACK_SUMS.get_ptr_mut(&StackKey { tgid, _padding: 0, stack_hash: block.stack_hash }) {
        // SAFETY: as above. A block freed on another CPU than it was allocated on leaves this
        // CPU's copy below zero: the copies add up right, wrapping, in the agent.
        unsafe {
            (*sums).outstanding_bytes = (*sums).outstanding_bytes.wrapping_sub(block.size);
            (*sums).outstanding_blocks = (*sums).outstanding_blocks.wrapping_sub(1);
        }
    }
}

/// This CPU's copy of one (process, stack)'s sums, created on first use; the stack's frames
/// are stored then.
#[inline(always)]
fn sums_of(key: StackKey, stack: &memtrace_common::StackFrames) -> Option<*mut StackSums> {
    if let Some(sums) = STACK_SUMS.get_ptr_mut(&key) {
        return Some(sums);
    }
    // Another process may have stored the same frames: the same key, the same value.
    if STACKS.insert(&key.stack_hash, stack, 0).is_err() {
        return None;
    }
    // Another CPU may create the sums first; either way the entry then exists (with zeroed
    // copies for the other CPUs).
    let _ = STACK_SUMS.insert(&key, &StackSums::default(), BPF_NOEXIST as u64);
    STACK_SUMS.get_ptr_mut(&key)
}
