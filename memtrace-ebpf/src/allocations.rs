//! Allocation entry points: each entry probe remembers the request per thread, the shared
//! return probe turns it into one event with the caller's user stack.
//!
//! Nested calls (realloc calling malloc, operator new calling malloc, or tail-calling it) must
//! count once and must not clobber the outer call's state, a known fault of BCC's memleak. The
//! rule: an entry whose stack pointer is at or below a live in-flight entry's belongs to that
//! outer call and is ignored; only a return seen above the outer entry's stack pointer is the
//! outer call's return.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use aya_log_ebpf::warn;
use memtrace_common::{CallKind, Counter, Event, EventKind, InFlight};

use crate::{
    frees::forget_mark,
    maps::{IN_FLIGHT, count, emit, emit_with_stack, traced},
    regs::stack_pointer,
};

/// `f(size)`: malloc, valloc, pvalloc and every operator new.
#[uprobe]
pub fn size_enter(ctx: ProbeContext) -> u32 {
    let size: u64 = ctx.arg(0).unwrap_or(0);
    enter(&ctx, CallKind::Alloc, size, 0, 0);
    0
}

#[uprobe]
pub fn calloc_enter(ctx: ProbeContext) -> u32 {
    let count: u64 = ctx.arg(0).unwrap_or(0);
    let each: u64 = ctx.arg(1).unwrap_or(0);
    enter(&ctx, CallKind::Alloc, product(count, each), 0, 0);
    0
}

/// `f(alignment, size)`: aligned_alloc, memalign.
#[uprobe]
pub fn aligned_enter(ctx: ProbeContext) -> u32 {
    let size: u64 = ctx.arg(1).unwrap_or(0);
    enter(&ctx, CallKind::Alloc, size, 0, 0);
    0
}

#[uprobe]
pub fn realloc_enter(ctx: ProbeContext) -> u32 {
    let old_addr: u64 = ctx.arg(0).unwrap_or(0);
    let size: u64 = ctx.arg(1).unwrap_or(0);
    enter(&ctx, CallKind::Realloc, size, old_addr, 0);
    0
}

#[uprobe]
pub fn reallocarray_enter(ctx: ProbeContext) -> u32 {
    let old_addr: u64 = ctx.arg(0).unwrap_or(0);
    let count: u64 = ctx.arg(1).unwrap_or(0);
    let each: u64 = ctx.arg(2).unwrap_or(0);
    enter(&ctx, CallKind::Realloc, product(count, each), old_addr, 0);
    0
}

#[uprobe]
pub fn posix_memalign_enter(ctx: ProbeContext) -> u32 {
    let out_ptr: u64 = ctx.arg(0).unwrap_or(0);
    let size: u64 = ctx.arg(2).unwrap_or(0);
    enter(&ctx, CallKind::PosixMemalign, size, 0, out_ptr);
    0
}

/// `count * each`. An overflowing calloc or reallocarray fails and returns NULL, so a wrapped
/// product never becomes an event. (An overflow check compiles to a 128-bit multiply, which
/// BPF programs cannot call.)
#[inline(always)]
fn product(count: u64, each: u64) -> u64 {
    count.wrapping_mul(each)
}

/// True when this thread is inside an allocator call whose frame is at or above `sp`: the
/// current probe hit is that call's own inner work and must not be reported again.
#[inline(always)]
pub fn inside_allocator_call(pid_tgid: u64, sp: u64) -> bool {
    match IN_FLIGHT.get_ptr(pid_tgid) {
        // SAFETY: entries are only written by this thread's own probes.
        Some(outer) => unsafe { (*outer).entry_sp >= sp },
        None => false,
    }
}

#[inline(always)]
fn enter(ctx: &ProbeContext, kind: CallKind, size: u64, old_addr: u64, out_ptr: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !traced(pid_tgid) {
        return; // (the return probe then finds no entry: no check needed there)
    }
    let sp = stack_pointer(ctx.regs);
    if let Some(existing) = IN_FLIGHT.get_ptr(pid_tgid) {
        // SAFETY: as above.
        if unsafe { (*existing).entry_sp } >= sp {
            return; // nested in (or tail-called from) an outer allocator call
        }
        // The old entry's frame is gone without a return: that allocation was missed.
        count(Counter::StaleInFlight);
    }
    let call = InFlight { size, old_addr, out_ptr, entry_sp: sp, kind: kind as u32, _padding: 0 };
    if IN_FLIGHT.insert(pid_tgid, call, 0).is_err() {
        count(Counter::InFlightFull);
        warn!(ctx, "memtrace: in-flight table full, an allocation is not recorded");
    }
}

#[uretprobe]
pub fn alloc_exit(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(call) = IN_FLIGHT.get_ptr(pid_tgid) else {
        return 0;
    };
    // SAFETY: as above; copied out before the entry is removed.
    let call = unsafe { *call };
    if stack_pointer(ctx.regs) <= call.entry_sp {
        return 0; // the return of a nested call, not of the outer one
    }
    let _ = IN_FLIGHT.remove(pid_tgid);

    let (kind, addr) = if call.kind == CallKind::Realloc as u32 {
        (EventKind::Realloc, ctx.ret::<u64>())
    } else if call.kind == CallKind::PosixMemalign as u32 {
        if ctx.ret::<i32>() != 0 {
            return 0; // failed: nothing was stored
        }
        // SAFETY: reading the caller's pointer variable from user memory, checked by the helper.
        match unsafe { bpf_probe_read_user(call.out_ptr as *const u64) } {
            Ok(addr) => (EventKind::Alloc, addr),
            Err(_) => {
                count(Counter::ArgumentUnreadable);
                warn!(&ctx, "memtrace: could not read posix_memalign's result");
                return 0;
            }
        }
    } else {
        (EventKind::Alloc, ctx.ret::<u64>())
    };
    if addr == 0 && kind == EventKind::Alloc {
        return 0; // a failed allocation changes nothing
    }
    // A block handed out again may carry a stale operator-delete mark on this thread.
    forget_mark(pid_tgid, addr);
    let event = Event {
        kind: kind as u32,
        tgid: (pid_tgid >> 32) as u32,
        stack_id: 0,
        flags: 0,
        size: call.size,
        addr,
        old_addr: call.old_addr,
        old_size: 0,
        // SAFETY: helper without preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
    };
    // The stack is only worth capturing for a block that is now outstanding.
    if addr == 0 { emit(event) } else { emit_with_stack(&ctx, event) }
    0
}
