//! `--combined`: in-kernel aggregation. Each outstanding block's size and stack id live in
//! `LIVE_BLOCKS`, and running sums per (process, stack) in `STACK_SUMS`; no event crosses the
//! ring buffer per call. The agent reads the sums and the stacks once, at the end.
//!
//! The price: stacks go through a kernel stack map, where two stacks hashing to one bucket
//! cannot both be kept (the second is counted as a failed capture), and there is no per-block
//! time, so the trace window is the probes' lifetime.
use aya_ebpf::{Global, bindings::{BPF_F_USER_STACK, BPF_NOEXIST}, programs::tracing::StackIdContext};
use memtrace_common::{BlockKey, Counter, LiveBlock, StackKey, StackSums};

use crate::maps::{LIVE_BLOCKS, STACK_IDS, STACK_SUMS, count};

/// Set to 1 at load time for in-kernel aggregation.
#[unsafe(no_mangle)]
static COMBINED: Global<u8> = Global::new(0);

#[inline(always)]
pub fn enabled() -> bool {
    COMBINED.load() != 0
}

/// A block handed out: remember it and add it to its stack's sums.
#[inline(always)]
pub fn acquire<C: StackIdContext>(ctx: &C, tgid: u32, addr: u64, size: u64) {
    let stack_id = ctx.get_stackid(&STACK_IDS, BPF_F_USER_STACK as u64).unwrap_or_else(|error| {
        count(Counter::StackCaptureFailed);
        i64::from(error)
    });
    let Some(sums) = sums_of(StackKey { tgid, stack_id: stack_id as i32 }) else {
        count(Counter::StackSumsFull);
        return;
    };
    let key = BlockKey { tgid, _padding: 0, addr };
    if LIVE_BLOCKS.insert(&key, &LiveBlock { size, stack_id }, 0).is_err() {
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
    if let Some(sums) = STACK_SUMS.get_ptr_mut(&StackKey { tgid, stack_id: block.stack_id as i32 }) {
        // SAFETY: as above. A block freed on another CPU than it was allocated on leaves this
        // CPU's copy below zero: the copies add up right, wrapping, in the agent.
        unsafe {
            (*sums).outstanding_bytes = (*sums).outstanding_bytes.wrapping_sub(block.size);
            (*sums).outstanding_blocks = (*sums).outstanding_blocks.wrapping_sub(1);
        }
    }
}

/// This CPU's copy of one (process, stack)'s sums, created on first use.
#[inline(always)]
fn sums_of(key: StackKey) -> Option<*mut StackSums> {
    if let Some(sums) = STACK_SUMS.get_ptr_mut(&key) {
        return Some(sums);
    }
    // Another CPU may create it first; either way the entry then exists (with zeroed copies
    // for the other CPUs).
    let _ = STACK_SUMS.insert(&key, &StackSums::default(), BPF_NOEXIST as u64);
    STACK_SUMS.get_ptr_mut(&key)
}
