//! The stack walk of the return probes, as a program of its own: `alloc_exit` and
//! `wrapper_exit` leave their event in this CPU's `PENDING_EVENT` and tail-call
//! `return_stack`, which walks the user stack from the same registers and sends the event with
//! it. The walk is most of what the verifier checks; inlined in each return probe it was
//! checked once per probe, and the verifier's time was most of memtrace's start.
//!
//! A tail call runs in the caller's context (the same registers) and does not return, so the
//! walk sees exactly what the return probe saw. The raw `sys_exit` tracepoint keeps its own
//! walk: a tail call only reaches programs of the caller's type.
use aya_ebpf::{
    macros::{map, uretprobe},
    maps::{PerCpuArray, ProgramArray},
    programs::RetProbeContext,
};
use memtrace_common::{Counter, Event};

use crate::emit::{count, emit, emit_with_user_stack};

/// Index 0: `return_stack`, set by the agent after loading it.
#[map(name = "RETURN_STACK_PROGRAM")]
static RETURN_STACK_PROGRAM: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// The event handed from a return probe to `return_stack`, per CPU: a BPF program is not
/// preempted on its CPU, and a tail call runs on the caller's.
#[map(name = "PENDING_EVENT")]
static PENDING_EVENT: PerCpuArray<Event> = PerCpuArray::with_max_entries(1, 0);

/// Sends `event` with the user stack of the return probe that owns `ctx`.
#[inline(always)]
pub fn emit_with_return_stack(ctx: &RetProbeContext, event: Event) {
    let Some(pending) = PENDING_EVENT.get_ptr_mut(0) else {
        count(Counter::StackCaptureFailed);
        return emit(event);
    };
    // SAFETY: this CPU's own slot; read by the tail-called program on the same CPU.
    unsafe { *pending = event };
    // SAFETY: index 0 holds `return_stack`, a return probe of this program's type; on success
    // the call does not return.
    unsafe { RETURN_STACK_PROGRAM.tail_call(ctx, 0) };
    // Only reached when the slot is empty: the event goes without its stack, counted.
    count(Counter::StackCaptureFailed);
    emit(Event { stack_id: -(ENOENT as i32), ..event });
}

const ENOENT: u32 = 2;

#[uretprobe]
pub fn return_stack(ctx: RetProbeContext) -> u32 {
    let Some(pending) = PENDING_EVENT.get_ptr(0) else { return 0 };
    // SAFETY: this CPU's own slot, written by the return probe that tail-called this one.
    let event = unsafe { *pending };
    emit_with_user_stack(&ctx, ctx.regs, event);
    0
}
