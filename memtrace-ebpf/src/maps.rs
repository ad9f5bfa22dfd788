//! The maps shared with the agent, and the one helper that counts what was dropped.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
};
use memtrace_common::{COUNTER_SLOTS, Counter, FreeMark, InFlight};

/// Completed allocator calls, read by the agent. Sized by the agent at load time.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// User stacks of allocations, by id. Sized by the agent at load time.
#[map(name = "STACKS")]
pub static STACKS: StackTrace = StackTrace::with_max_entries(16 * 1024, 0);

/// Allocator calls entered but not yet returned, by pid_tgid (one per thread at most:
/// nested calls keep the outer entry, see `InFlight::entry_sp`).
#[map(name = "IN_FLIGHT")]
pub static IN_FLIGHT: HashMap<u64, InFlight> = HashMap::with_max_entries(16 * 1024, 0);

/// The last block each thread released through operator delete (see `frees.rs`).
#[map(name = "FREE_MARKS")]
pub static FREE_MARKS: LruHashMap<u64, FreeMark> = LruHashMap::with_max_entries(16 * 1024, 0);

/// What was dropped or degraded, per CPU; indexes are `Counter` values.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, and a BPF program is not preempted on its CPU.
        unsafe { *slot += 1 };
    }
}
