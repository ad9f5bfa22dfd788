//! Sending an event with a stack walked by unwind tables (see `unwind`): its frames, and when
//! the walk met code the agent has yet to tell the kernel about, the registers there and a
//! copy of the stack above them, for the agent to finish the walk.
use aya_ebpf::{
    bindings::pt_regs,
    helpers::generated::{bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_probe_read_user, bpf_task_pt_regs},
    macros::map,
    maps::PerCpuArray,
};
use memtrace_common::{
    Event, EventWithStack, MAX_STACK_DEPTH,
    unwind::{EventWithCopy, Registers, STACK_COPY_BYTES, STACK_COPY_PIECE, StackCopy},
};

use crate::{
    maps::{EVENTS, count, send_record, stack_depth, wakeup_flags},
    unwind::{self, Destination, HandOver},
};

/// Per-CPU room to assemble a record with a stack copy.
#[map(name = "COPY_SCRATCH")]
static COPY_SCRATCH: PerCpuArray<EventWithCopy> = PerCpuArray::with_max_entries(1, 0);

/// Walks the stack from `start` by tables and sends `event` with it, from `record` (this CPU's
/// `SCRATCH`). `return_address`: `start.pc` is a return probe's. False, and nothing sent, when
/// the stack is not to be walked by tables (see `unwind::walk`).
#[inline(always)]
pub fn send(record: &mut EventWithStack, event: Event, start: Registers, return_address: bool) -> bool {
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

/// `--combined`: walks the stack from a return probe's registers into `frames` (this CPU's
/// `STACK_SCRATCH`), by tables when the process has them, else by frame pointer. Returns the
/// frames written and whether the stack is truncated (a walk the agent would have had to
/// finish is: nothing can finish it later).
#[inline(always)]
pub fn walk_combined(regs: *const pt_regs, tgid: u32, frames: &mut [u64; MAX_STACK_DEPTH]) -> (usize, bool) {
    // SAFETY: the probe context points at the kernel's saved user registers.
    let start = unsafe { Registers { pc: (*regs).rip, sp: (*regs).rsp, bp: (*regs).rbp } };
    match unwind::walk(tgid, start, true, Destination::Combined, stack_depth()) {
        Some(walked) => (walked.depth, walked.flags != 0),
        None => (crate::user_stack::walk(regs, frames, stack_depth()), false),
    }
}

/// The current task's user registers, as saved when it entered the kernel (a system call, or
/// a fault taken in user mode; one taken in the kernel, such as on a user buffer in a system
/// call, finds those of the system call).
#[inline(always)]
pub fn task_user_registers() -> Option<Registers> {
    // SAFETY: helpers without preconditions in a tracing program; the registers are read with
    // a checked kernel read.
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs;
        if regs.is_null() {
            return None;
        }
        let mut saved = core::mem::MaybeUninit::<pt_regs>::uninit();
        let read = bpf_probe_read_kernel(saved.as_mut_ptr().cast(), size_of::<pt_regs>() as u32, regs.cast());
        if read != 0 {
            return None;
        }
        let saved = saved.assume_init();
        Some(Registers { pc: saved.rip, sp: saved.rsp, bp: saved.rbp })
    }
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
