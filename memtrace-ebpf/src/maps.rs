//! The maps shared with the agent, and the one helper that counts what was dropped.
use aya_ebpf::{
    Global,
    bindings::{BPF_F_NO_PREALLOC, BPF_F_USER_STACK, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    EbpfContext,
    bindings::pt_regs,
    helpers::bpf_get_stack,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
#[cfg(bpf_target_arch = "x86_64")]
use crate::{unwind, unwound, user_stack};
#[cfg(bpf_target_arch = "x86_64")]
use memtrace_common::unwind::Registers;
use memtrace_common::{
    BlockKey, COUNTER_SLOTS, Counter, Event, EventWithStack, LiveBlock, SAMPLE_GAPS as GAP_COUNT,
    StackFrames, SyscallArgs, WrapperCall,
};

/// Completed allocator calls, read by the agent. Sized by the agent at load time.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Per-CPU room to assemble an event and its stack before it is copied to `EVENTS`.
#[map(name = "SCRATCH")]
pub static SCRATCH: PerCpuArray<EventWithStack> = PerCpuArray::with_max_entries(1, 0);

/// Mapping system calls entered but not yet returned, by pid_tgid.
#[map(name = "SYSCALLS")]
pub static SYSCALLS: HashMap<u64, SyscallArgs> = HashMap::with_max_entries(16 * 1024, 0);

/// libc mapping wrappers in flight, by pid_tgid (see `mappings.rs`).
#[map(name = "WRAPPERS")]
pub static WRAPPERS: HashMap<u64, WrapperCall> = HashMap::with_max_entries(16 * 1024, 0);

/// Blocks tracked in the kernel that found no room in the block table (see `block_table`).
/// Entries are allocated as needed (nothing is used until the table overflows); sized by the
/// agent: one entry when no block is tracked.
#[map(name = "LIVE_BLOCKS")]
pub static LIVE_BLOCKS: HashMap<BlockKey, LiveBlock> = HashMap::with_max_entries(1, BPF_F_NO_PREALLOC);

/// `--combined`: the stacks of the blocks tracked in the kernel, by the hash of their frames. Sized
/// by the agent (one entry when not combined).
#[map(name = "STACKS")]
pub static STACKS: HashMap<u64, StackFrames> = HashMap::with_max_entries(1, 0);

/// `--combined`: per-CPU room to walk a stack before it is hashed and perhaps stored.
#[map(name = "STACK_SCRATCH")]
pub static STACK_SCRATCH: PerCpuArray<StackFrames> = PerCpuArray::with_max_entries(1, 0);

/// `--sample-bytes`: bytes left before the next sample, per CPU (seeded by the agent).
#[map(name = "SAMPLE_COUNTDOWN")]
pub static SAMPLE_COUNTDOWN: PerCpuArray<i64> = PerCpuArray::with_max_entries(1, 0);

/// `--sample-bytes`: exponentially distributed gaps between samples, written by the agent.
#[map(name = "SAMPLE_GAPS")]
pub static SAMPLE_GAPS: Array<u64> = Array::with_max_entries(GAP_COUNT, 0);

/// Set to 1 at load time when the probes are attached for every process: then only the
/// processes in `TRACED` count. Otherwise the kernel already filters by process.
#[unsafe(no_mangle)]
static FILTER_BY_MAP: Global<u8> = Global::new(0);

/// Whether the calling process is one memtrace traces.
#[inline(always)]
pub fn traced(pid_tgid: u64) -> bool {
    FILTER_BY_MAP.load() == 0 || crate::by_id::is_traced(pid_tgid)
}

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

/// Bytes waiting in `EVENTS` past which an event wakes the agent. Below it events are
/// published without a wake-up, and the agent drains on a short timer: one wake-up per batch
/// instead of one per event. Set at load time to a quarter of the ring.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: Global<u64> = Global::new(0);

/// Sends one event to the agent, or counts it lost when the ring buffer is full.
#[inline(always)]
pub fn emit(event: Event) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count(Counter::RingBufferFull);
        return;
    };
    entry.write(event);
    entry.submit(wakeup_flags());
}

/// Set at load time: user stack frames captured per event (`--stack-depth`); the walk stops
/// there, which is cheaper for deep stacks.
#[unsafe(no_mangle)]
static STACK_DEPTH: Global<u32> = Global::new(memtrace_common::MAX_STACK_DEPTH as u32);

/// Sends one event followed by the user stack, captured by the kernel's stack walker (for
/// tracepoints, where the user registers are not at hand).
#[inline(always)]
pub fn emit_with_stack<C: EbpfContext>(ctx: &C, event: Event) {
    let Some(record) = SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's own scratch slot; a BPF program is not preempted on its CPU.
    let record = unsafe { &mut *record };
    #[cfg(bpf_target_arch = "x86_64")]
    if unwind::by_tables()
        && let Some(start) = unwound::task_user_registers()
        && unwound::send(record, event, start, false)
    {
        return;
    }
    let room = (stack_depth() * 8) as u32;
    // SAFETY: the helper writes at most `room` bytes into the frames array, which holds more.
    let written = unsafe {
        bpf_get_stack(ctx.as_ptr(), record.frames.as_mut_ptr().cast(), room, BPF_F_USER_STACK as u64)
    };
    let captured = if written < 0 {
        count(Counter::StackCaptureFailed);
        Err(written as i32)
    } else {
        Ok((written as usize / 8).min(memtrace_common::MAX_STACK_DEPTH))
    };
    send_record(record, event, captured);
}

/// Sends one event followed by the user stack walked from a uprobe's registers (see
/// `user_stack`).
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
pub fn emit_with_user_stack<C: EbpfContext>(_ctx: &C, regs: *const pt_regs, event: Event) {
    let Some(record) = SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: as above.
    let record = unsafe { &mut *record };
    // SAFETY: the probe context points at the kernel's saved user registers.
    let start = unsafe { Registers { pc: (*regs).rip, sp: (*regs).rsp, bp: (*regs).rbp } };
    if unwound::send(record, event, start, true) {
        return;
    }
    let depth = user_stack::walk(regs, &mut record.frames, stack_depth());
    send_record(record, event, Ok(depth));
}

/// Elsewhere the kernel's walker serves.
#[cfg(not(bpf_target_arch = "x86_64"))]
#[inline(always)]
pub fn emit_with_user_stack<C: EbpfContext>(ctx: &C, _regs: *const pt_regs, event: Event) {
    emit_with_stack(ctx, event)
}

/// Frames to capture: at most the frames array; fewer when the agent asked for a shallower walk.
#[inline(always)]
pub fn stack_depth() -> usize {
    (STACK_DEPTH.load() as usize).clamp(1, memtrace_common::MAX_STACK_DEPTH)
}

/// Sends the record: the event, with the number of frames captured (or the capture's error)
/// in `stack_id`, followed by those frames only.
#[inline(always)]
pub fn send_record(record: &mut EventWithStack, event: Event, captured: Result<usize, i32>) {
    let (stack_id, depth) = match captured {
        Ok(depth) => (depth as i32, depth.min(memtrace_common::MAX_STACK_DEPTH)),
        Err(error) => (error, 0),
    };
    record.event = Event { stack_id, ..event };
    let length = size_of::<Event>() + depth * 8;
    // SAFETY: `length` is at most the size of the record it is taken from.
    let bytes = unsafe { core::slice::from_raw_parts((record as *const EventWithStack).cast::<u8>(), length) };
    if EVENTS.output::<[u8]>(bytes, wakeup_flags()).is_err() {
        count(Counter::RingBufferFull);
    }
}

/// Wake the agent only once a quarter of the ring is waiting (see `WAKEUP_BYTES`).
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES.load() {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    flags as u64
}
