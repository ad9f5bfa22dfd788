//! Which blocks to record: all of them by default; with `--min-size`/`--max-size` only those
//! in range; with `--sample-bytes N` a Poisson sample of the bytes allocated, as tcmalloc and
//! jemalloc sample their heaps: a block is recorded when the running byte count crosses the
//! next sampling point, and the points are exponentially distributed with mean N apart. A block
//! of `size` bytes is thus recorded with probability 1 - exp(-size / N), and the agent scales
//! each recorded block by the inverse. Blocks not recorded skip the stack and the ring buffer.
use aya_ebpf::{
    Global,
    helpers::bpf_get_prandom_u32,
    macros::map,
    maps::{Array, PerCpuArray},
};
use memtrace_common::SAMPLE_GAPS as GAP_COUNT;

/// Bytes left before the next sample, per CPU (seeded by the agent).
#[map(name = "SAMPLE_COUNTDOWN")]
static SAMPLE_COUNTDOWN: PerCpuArray<i64> = PerCpuArray::with_max_entries(1, 0);

/// Exponentially distributed gaps between samples, written by the agent.
#[map(name = "SAMPLE_GAPS")]
static SAMPLE_GAPS: Array<u64> = Array::with_max_entries(GAP_COUNT, 0);

/// Set at load time: mean bytes between samples; 0 records every block.
#[unsafe(no_mangle)]
static SAMPLE_BYTES: Global<u64> = Global::new(0);

/// Set at load time: the size range recorded.
#[unsafe(no_mangle)]
static MIN_SIZE: Global<u64> = Global::new(0);
#[unsafe(no_mangle)]
static MAX_SIZE: Global<u64> = Global::new(u64::MAX);

#[inline(always)]
pub fn sampling() -> bool {
    SAMPLE_BYTES.load() != 0
}

/// Whether a block of `size` bytes is to be recorded.
#[inline(always)]
pub fn record(size: u64) -> bool {
    if size < MIN_SIZE.load() || size > MAX_SIZE.load() {
        return false;
    }
    if !sampling() {
        return true;
    }
    let Some(countdown) = SAMPLE_COUNTDOWN.get_ptr_mut(0) else { return true };
    // SAFETY: this CPU's own slot; a BPF program is not preempted on its CPU. Per CPU rather
    // than per thread is as good: exponential gaps have no memory.
    unsafe {
        let left = *countdown - size as i64;
        if left > 0 {
            *countdown = left;
            return false;
        }
        // SAFETY: helper without preconditions.
        let index = bpf_get_prandom_u32() % GAP_COUNT;
        *countdown = SAMPLE_GAPS.get(index).map_or(SAMPLE_BYTES.load(), |gap| *gap) as i64;
    }
    true
}
