//! Page faults: perf-event programs on the software events for minor and major faults. They
//! are attached per CPU for every process (one event per CPU covers every thread and every
//! child, present and future), so each keeps only the processes in `TRACED`, and sends the
//! faulting address with the user stack that touched it.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::perf_event,
    programs::PerfEventContext,
};
use memtrace_common::{Event, EventKind, fault};

use crate::{emit::emit_with_stack, state::by_id};

#[perf_event]
pub fn fault_minor(ctx: PerfEventContext) -> u32 {
    fault(&ctx, 0);
    0
}

#[perf_event]
pub fn fault_major(ctx: PerfEventContext) -> u32 {
    fault(&ctx, fault::MAJOR);
    0
}

#[inline(always)]
fn fault(ctx: &PerfEventContext, flags: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // Always filtered here, whatever `FILTER_BY_MAP` says: these events fire machine-wide.
    if !by_id::is_traced(pid_tgid) {
        return;
    }
    // SAFETY: the context is the kernel's `bpf_perf_event_data`, readable directly; `addr` is
    // the faulting address the fault handler passed to the software event, `sample_period`
    // how many faults this sample stands for.
    let (addr, period) = unsafe { ((*ctx.ctx).addr, (*ctx.ctx).sample_period) };
    let event = Event {
        kind: EventKind::Fault as u32,
        tgid,
        stack_id: 0,
        flags,
        size: period,
        addr,
        old_addr: 0,
        old_size: 0,
        // SAFETY: helper without preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
    };
    emit_with_stack(ctx, event);
}
