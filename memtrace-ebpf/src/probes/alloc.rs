//! Allocation entry points: each entry probe remembers the request per thread, the shared
//! return probe turns it into one event with the caller's user stack.
//!
//! Nested calls (realloc calling malloc, operator new calling malloc, or tail-calling it) must
//! count once and must not clobber the outer call's state, a known fault of BCC's memleak. The
//! rule: an entry whose stack pointer is at or below a live in-flight entry's belongs to that
//! outer call and is ignored; only a return seen above the outer entry's stack pointer is the
//! outer call's return.
use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use aya_log_ebpf::warn;
use memtrace_common::{CallKind, Counter, Event, EventKind, InFlight, LiveBlock, handout};

use crate::{
    emit::{count, emit, new_event},
    probes::{
        free::{forget_mark, release_block},
        return_stack::emit_with_return_stack,
    },
    regs::stack_pointer,
    state::{aggregate, block_table, by_id, sampling},
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

#[inline(always)]
fn enter(ctx: &ProbeContext, kind: CallKind, size: u64, old_addr: u64, out_ptr: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // The kernel runs this only in processes it was attached for, but a vfork child shares
    // its parent's memory (and breakpoints) until it execs, and a process memtrace stopped
    // tracing keeps its probes until their removal completes: the traced set decides.
    if !by_id::is_traced(pid_tgid) {
        return; // (the return probe then finds no entry: no check needed there)
    }
    let sp = stack_pointer(ctx.regs);
    if let Some(existing) = by_id::call(pid_tgid) {
        if existing.entry_sp >= sp {
            return; // nested in (or tail-called from) an outer allocator call
        }
        // The old entry's frame is gone without a return: that allocation was missed.
        count(Counter::StaleInFlight);
    }
    // Entered even when its block will not be recorded, so that its nested calls stay quiet.
    let record = u32::from(sampling::record(size));
    let call = InFlight { size, old_addr, out_ptr, entry_sp: sp, kind: kind as u32, record };
    if !by_id::begin_call(pid_tgid, call) {
        count(Counter::InFlightFull);
        warn!(ctx, "memtrace: in-flight table full, an allocation is not recorded");
    }
}

#[uretprobe]
pub fn alloc_exit(ctx: RetProbeContext) -> u32 {
    if let Some(event) = block_handed_out(&ctx) {
        emit_with_return_stack(&ctx, event);
    }
    0
}

/// What an allocating call's return did; the event to send with the caller's stack, if any.
#[inline(always)]
fn block_handed_out(ctx: &RetProbeContext) -> Option<Event> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let call = by_id::call(pid_tgid)?;
    if stack_pointer(ctx.regs) <= call.entry_sp {
        return None; // the return of a nested call, not of the outer one
    }
    by_id::end_call(pid_tgid);
    if call.record == 0 && call.kind != CallKind::Realloc as u32 {
        return None; // passed over by sampling or a size filter
    }

    let (kind, addr) = if call.kind == CallKind::Realloc as u32 {
        (EventKind::Realloc, ctx.ret::<u64>())
    } else if call.kind == CallKind::PosixMemalign as u32 {
        if ctx.ret::<i32>() != 0 {
            return None; // failed: nothing was stored
        }
        // SAFETY: reading the caller's pointer variable from user memory, checked by the helper.
        match unsafe { bpf_probe_read_user(call.out_ptr as *const u64) } {
            Ok(addr) => (EventKind::Alloc, addr),
            Err(_) => {
                count(Counter::ArgumentUnreadable);
                warn!(ctx, "memtrace: could not read posix_memalign's result");
                return None;
            }
        }
    } else {
        (EventKind::Alloc, ctx.ret::<u64>())
    };
    if kind == EventKind::Realloc && (aggregate::enabled() || sampling::sampling() || call.record == 0) {
        // The old block is tracked in the kernel, or the new one is not to be recorded: the
        // realloc is sent as what it did, a release and perhaps a new block.
        return realloc_in_parts(ctx, pid_tgid, &call, addr);
    }
    if addr == 0 && kind == EventKind::Alloc {
        return None; // a failed allocation changes nothing
    }
    // A block handed out again may carry a stale operator-delete mark on this thread.
    forget_mark(pid_tgid, addr);
    if kind == EventKind::Alloc {
        return acquire(ctx, pid_tgid, addr, call.size);
    }
    let event = Event { kind: kind as u32, addr, old_addr: call.old_addr, ..new_event(pid_tgid, call.size) };
    // The stack is only worth capturing for a block that is now outstanding.
    if addr == 0 {
        emit(event);
        return None;
    }
    Some(event)
}

/// realloc's four cases (see the agent's heap table) as a release and an acquisition.
#[inline(always)]
fn realloc_in_parts(ctx: &RetProbeContext, pid_tgid: u64, call: &InFlight, addr: u64) -> Option<Event> {
    match (call.old_addr, addr) {
        (0, 0) => None,
        (_, 0) if call.size != 0 => {
            count(Counter::FailedRealloc);
            None
        }
        (old, _) => {
            if old != 0 {
                release_block(pid_tgid, old);
            }
            if addr == 0 {
                return None;
            }
            forget_mark(pid_tgid, addr);
            if call.record == 0 {
                return None;
            }
            acquire(ctx, pid_tgid, addr, call.size)
        }
    }
}

/// A block to record was handed out: the event to send, unless the kernel keeps it.
#[inline(always)]
fn acquire(ctx: &RetProbeContext, pid_tgid: u64, addr: u64, size: u64) -> Option<Event> {
    let tgid = (pid_tgid >> 32) as u32;
    if aggregate::enabled() {
        aggregate::acquire(ctx.regs, tgid, addr, size);
        return None;
    }
    // A sampled block is remembered so that its free, and only its, is sent. One that cannot
    // be remembered is not sent either: the agent would hold it forever.
    if sampling::sampling() && !block_table::insert(tgid, addr, LiveBlock { size, stack_hash: 0 }) {
        count(Counter::LiveBlocksFull);
        return None;
    }
    let (low, high) = handout_words(addr, size);
    Some(Event { kind: EventKind::Alloc as u32, addr, old_addr: low, old_size: high, ..new_event(pid_tgid, size) })
}

/// The agent scans for leak kinds: `Alloc` events carry what the allocator left in the block's
/// first words (see `memtrace_common::handout`). Set at load time.
#[unsafe(no_mangle)]
static HANDOUT_WORDS: Global<u8> = Global::new(0);

/// The block's first words as the allocator hands it out, summarized; (0, 0) when not asked
/// for or unreadable.
#[inline(always)]
fn handout_words(addr: u64, size: u64) -> (u64, u64) {
    if HANDOUT_WORDS.load() == 0 {
        return (0, 0);
    }
    let count = (size / 8).min(handout::WORDS as u64) as usize;
    // SAFETY: reading user memory into a local array, checked by the helper. The whole array
    // is read: the bytes past a small block are the allocator's next chunk, readable, and not
    // summarized.
    match unsafe { bpf_probe_read_user(addr as *const [u64; handout::WORDS]) } {
        Ok(words) => handout::summarize(&words, count),
        Err(_) => (0, 0),
    }
}
