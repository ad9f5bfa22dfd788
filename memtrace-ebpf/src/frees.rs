//! `free(ptr)`: one event with the address, sent at entry (no return probe needed).
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::uprobe,
    programs::ProbeContext,
};
use memtrace_common::{Counter, Event, EventKind};

use crate::{
    allocations::inside_allocator_call,
    maps::{EVENTS, count},
    regs::stack_pointer,
};

#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    let addr: u64 = ctx.arg(0).unwrap_or(0);
    if addr == 0 {
        count(Counter::NullFree);
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    // realloc(p, 0) frees through free(): the realloc's own return reports it, once.
    if inside_allocator_call(pid_tgid, stack_pointer(ctx.regs)) {
        return 0;
    }
    send_free(pid_tgid, addr);
    0
}

#[inline(always)]
fn send_free(pid_tgid: u64, addr: u64) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count(Counter::RingBufferFull);
        return;
    };
    entry.write(Event {
        kind: EventKind::Free as u32,
        tgid: (pid_tgid >> 32) as u32,
        stack_id: 0,
        _padding: 0,
        size: 0,
        addr,
        old_addr: 0,
        // SAFETY: helper without preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
    });
    entry.submit(0);
}
