//! Releases: `free(ptr)` and every `operator delete`, one event with the address, sent at
//! entry (no return probe needed).
//!
//! A release must count once even when one releasing function calls another: realloc(p, 0)
//! calling free (seen through the in-flight realloc), and operator delete calling or tail-calling
//! free (seen through the mark delete leaves: same block, at or below delete's stack pointer).
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, uprobe},
    maps::Array,
    programs::ProbeContext,
};
use memtrace_common::{Counter, Event, EventKind, FreeMark};

use crate::{
    emit::{count, emit, new_event},
    regs::stack_pointer,
    state::{
        aggregate, block_table,
        by_id::{self, inside_allocator_call},
        sampling,
    },
};

/// Slot 0 is set to 1 by the agent before it probes any operator delete; until then `free`
/// skips the marks entirely (a C program never pays for them, even while memtrace follows its
/// forks in case one execs a C++ program).
#[map(name = "OUTER_FREES")]
static OUTER_FREES: Array<u32> = Array::with_max_entries(1, 0);

#[inline(always)]
fn has_outer_frees() -> bool {
    OUTER_FREES.get(0).is_some_and(|flag| *flag != 0)
}

#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    let Some((pid_tgid, addr, sp)) = release(&ctx) else { return 0 };
    if has_outer_frees() && inside_delete(pid_tgid, addr, sp) {
        // The free inside operator delete, already reported; the mark has served.
        by_id::clear_mark(pid_tgid);
        return 0;
    }
    release_block(pid_tgid, addr);
    0
}

#[uprobe]
pub fn delete_enter(ctx: ProbeContext) -> u32 {
    let Some((pid_tgid, addr, sp)) = release(&ctx) else { return 0 };
    // Sized delete calling (or tail-calling) plain delete: one release, already reported.
    if inside_delete(pid_tgid, addr, sp) {
        return 0;
    }
    by_id::set_mark(pid_tgid, FreeMark { addr, sp });
    release_block(pid_tgid, addr);
    0
}

/// Whether this release of `addr` runs inside an operator delete of the same block on this
/// thread (at or below its stack pointer).
#[inline(always)]
fn inside_delete(pid_tgid: u64, addr: u64, sp: u64) -> bool {
    by_id::mark(pid_tgid).is_some_and(|mark| mark.addr == addr && mark.sp >= sp)
}

/// The block a release probe sees, unless it is NULL or the inner work of an allocator call.
#[inline(always)]
fn release(ctx: &ProbeContext) -> Option<(u64, u64, u64)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // As for allocations (see `alloc::enter`).
    if !by_id::is_traced(pid_tgid) {
        return None;
    }
    let addr: u64 = ctx.arg(0).unwrap_or(0);
    if addr == 0 {
        count(Counter::NullFree);
        return None;
    }
    let sp = stack_pointer(ctx.regs);
    // realloc(p, 0) frees through free(): the realloc's own return reports it, once.
    if inside_allocator_call(pid_tgid, sp) {
        return None;
    }
    Some((pid_tgid, addr, sp))
}

/// Drops this thread's delete mark for `addr`, which was just handed out again.
#[inline(always)]
pub fn forget_mark(pid_tgid: u64, addr: u64) {
    if !has_outer_frees() {
        return;
    }
    if by_id::mark(pid_tgid).is_some_and(|mark| mark.addr == addr) {
        by_id::clear_mark(pid_tgid);
    }
}

/// A block was given back: sent to the agent, or (in-kernel aggregation) taken off its stack's
/// sums. When sampling, only the frees of sampled blocks are sent.
#[inline(always)]
pub fn release_block(pid_tgid: u64, addr: u64) {
    let tgid = (pid_tgid >> 32) as u32;
    if aggregate::enabled() {
        aggregate::release(tgid, addr);
        return;
    }
    if sampling::sampling() && !block_table::remove(tgid, addr) {
        return;
    }
    emit(Event { kind: EventKind::Free as u32, addr, ..new_event(pid_tgid, 0) });
}
