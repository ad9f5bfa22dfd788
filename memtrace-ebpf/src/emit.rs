//! What reaches the agent: events through the ring buffer (`EVENTS`), each with the user stack
//! when it has one, and the per-CPU counters of everything dropped or degraded (`COUNTERS`).
use aya_ebpf::{
    EbpfContext, Global,
    bindings::{BPF_F_USER_STACK, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, pt_regs},
    helpers::{
        bpf_get_stack, bpf_ktime_get_ns,
        generated::{bpf_probe_read_kernel, bpf_probe_read_user},
    },
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use memtrace_common::{
    COUNTER_SLOTS, Counter, Event, EventWithStack, MAX_STACK_DEPTH,
    unwind::{EventWithCopy, Registers, STACK_COPY_BYTES, STACK_COPY_PIECE, StackCopy},
};

#[cfg(bpf_target_arch = "x86_64")]
use crate::stack::frame_pointer;
use crate::stack::{
    SCRATCH, stack_depth,
    unwind::{self, Destination, HandOver},
};

/// Completed allocator calls, read by the agent. Sized by the agent at load time.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Per-CPU room to assemble a record with a stack copy (see `send_with_copy`).
#[map(name = "COPY_SCRATCH")]
static COPY_SCRATCH: PerCpuArray<EventWithCopy> = PerCpuArray::with_max_entries(1, 0);

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

/// Sends one event followed by the user stack, captured by the kernel's stack walker (for
/// tracepoints, where the user registers are not at hand).
#[inline(always)]
pub fn emit_with_stack<C: EbpfContext>(ctx: &C, event: Event) {
    let Some(record) = SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's own scratch slot; a BPF program is not preempted on its CPU.
    let record = unsafe { &mut *record };
    #[cfg(bpf_target_arch = "x86_64")]
    if unwind::by_tables()
        && let Some(start) = crate::stack::task_user_registers()
        && send_walked(record, event, start, false)
    {
        return;
    }
    let room = (stack_depth() * 8) as u32;
    // SAFETY: the helper writes at most `room` bytes into the frames array, which holds more.
    let written =
        unsafe { bpf_get_stack(ctx.as_ptr(), record.frames.as_mut_ptr().cast(), room, BPF_F_USER_STACK as u64) };
    let captured = if written < 0 {
        count(Counter::StackCaptureFailed);
        Err(written as i32)
    } else {
        Ok((written as usize / 8).min(memtrace_common::MAX_STACK_DEPTH))
    };
    send_record(record, event, captured);
}

/// Sends one event followed by the user stack walked from a uprobe's registers (see
/// `stack`).
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
pub fn emit_with_user_stack<C: EbpfContext>(_ctx: &C, regs: *const pt_regs, event: Event) {
    let Some(record) = SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: as above.
    let record = unsafe { &mut *record };
    // SAFETY: the probe context points at the kernel's saved user registers.
    let start = unsafe { Registers { pc: (*regs).rip, sp: (*regs).rsp, bp: (*regs).rbp } };
    if send_walked(record, event, start, true) {
        return;
    }
    let depth = frame_pointer::walk(regs, &mut record.frames, stack_depth());
    send_record(record, event, Ok(depth));
}

/// Elsewhere the kernel's walker serves.
#[cfg(not(bpf_target_arch = "x86_64"))]
#[inline(always)]
pub fn emit_with_user_stack<C: EbpfContext>(ctx: &C, _regs: *const pt_regs, event: Event) {
    emit_with_stack(ctx, event)
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

/// Wake the agent when the bytes waiting cross a quarter of the ring (see `WAKEUP_BYTES`), and
/// not on every event past it: a wake-up is an interrupt to another CPU (a VM exit under a
/// hypervisor), and once the agent is awake more of them only slow the traced threads and
/// steal the CPU the agent needs to catch up. The band is one of the largest record; a crossing
/// that jumps it (records from several CPUs at once) is caught by the agent's drain timer.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let threshold = WAKEUP_BYTES.load();
    let crossing = waiting >= threshold && waiting < threshold + WAKEUP_BAND_BYTES;
    (if crossing { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP }) as u64
}

/// The largest record sent (an event with a stack copy).
const WAKEUP_BAND_BYTES: u64 = core::mem::size_of::<EventWithCopy>() as u64;

/// An event of this thread's process, stamped now; the caller fills in kind and addresses.
#[inline(always)]
pub fn new_event(pid_tgid: u64, size: u64) -> Event {
    Event {
        kind: 0,
        tgid: (pid_tgid >> 32) as u32,
        stack_id: 0,
        flags: 0,
        size,
        addr: 0,
        old_addr: 0,
        old_size: 0,
        // SAFETY: helper without preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
    }
}

/// Walks the stack from `start` by tables and sends `event` with it, from `record` (this CPU's
/// `SCRATCH`). `return_address`: `start.pc` is a return probe's. False, and nothing sent, when
/// the stack is not to be walked by tables (see `unwind::walk`).
#[inline(always)]
fn send_walked(record: &mut EventWithStack, event: Event, start: Registers, return_address: bool) -> bool {
    let Some(walked) = unwind::walk(event.tgid, start, return_address, Destination::Event, stack_depth()) else {
        return false;
    };
    let event = Event { flags: event.flags | walked.flags, ..event };
    match walked.hand_over {
        Some(hand_over) => send_with_copy(record, event, walked.depth, hand_over),
        None => send_record(record, event, Ok(walked.depth)),
    }
    true
}

/// Sends the event, the frames placed so far, and the registers where the walk stopped with the
/// stack above them (up to `STACK_COPY_BYTES`, from the piece holding sp).
#[inline(always)]
fn send_with_copy(placed: &mut EventWithStack, event: Event, depth: usize, hand_over: HandOver) {
    let Some(record) = COPY_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's own scratch record; a BPF program is not preempted on its CPU.
    let record = unsafe { &mut *record };
    record.event = Event { stack_id: depth.min(MAX_STACK_DEPTH) as i32, ..event };
    // SAFETY: kernel-to-kernel copy between two per-CPU records of the same frames type.
    unsafe {
        bpf_probe_read_kernel(
            record.frames.as_mut_ptr().cast(),
            size_of::<[u64; MAX_STACK_DEPTH]>() as u32,
            placed.frames.as_ptr().cast(),
        );
    }
    let copy: &mut StackCopy = &mut record.copy;
    let regs = hand_over.regs;
    copy.pc = regs.pc;
    copy.sp = regs.sp;
    copy.bp = regs.bp;
    copy.return_address = u32::from(hand_over.return_address);
    copy.base = regs.sp & !(STACK_COPY_PIECE as u64 - 1);
    copy.length = 0;
    // Aligned pieces: only the one past the stack's end fails.
    for piece in 0..STACK_COPY_BYTES / STACK_COPY_PIECE {
        let offset = piece * STACK_COPY_PIECE;
        // SAFETY: `offset + STACK_COPY_PIECE` is within `bytes`; a checked user read.
        let read = unsafe {
            bpf_probe_read_user(
                copy.bytes.as_mut_ptr().add(offset).cast(),
                STACK_COPY_PIECE as u32,
                (copy.base + offset as u64) as *const _,
            )
        };
        if read != 0 {
            break;
        }
        copy.length += STACK_COPY_PIECE as u32;
    }
    if EVENTS.output::<EventWithCopy>(record, wakeup_flags()).is_err() {
        count(memtrace_common::Counter::RingBufferFull);
    }
}
