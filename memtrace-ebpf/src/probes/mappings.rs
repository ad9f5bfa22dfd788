//! Memory outside malloc: mmap, munmap, mremap, brk and System V shmat/shmdt, from the
//! syscall tracepoints (so calls that bypass libc's wrappers count too). Entry tracepoints keep
//! the arguments per thread; exit tracepoints send one event with the result and, for memory
//! gained, the user stack. A call made inside an allocator call (malloc's own mmap or brk) is
//! marked internal: the block the caller asked for is what counts.
//!
//! Tracepoints fire for every process; each program here checks the traced set
//! (`by_id::is_traced`).
//!
//! Called through libc's wrappers (mmap, mremap, shmat, brk, sbrk), the event waits for the
//! wrapper's return (a uretprobe) to take the user stack there: inside a frameless wrapper a
//! frame-pointer walk would skip the function that called it.
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, tracepoint, uprobe, uretprobe},
    maps::HashMap,
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};
use memtrace_common::{Counter, Event, EventKind, SyscallArgs, WrapperCall, mapping};

use crate::{
    emit::{count, emit, emit_with_stack, emit_with_user_stack},
    regs::stack_pointer,
    state::by_id,
};

/// Mapping system calls entered but not yet returned, by pid_tgid.
#[map(name = "SYSCALLS")]
static SYSCALLS: HashMap<u64, SyscallArgs> = HashMap::with_max_entries(16 * 1024, 0);

/// libc mapping wrappers in flight, by pid_tgid.
#[map(name = "WRAPPERS")]
static WRAPPERS: HashMap<u64, WrapperCall> = HashMap::with_max_entries(16 * 1024, 0);

/// Offsets in the syscall tracepoints' records (see their `format` files): arguments are
/// 8-byte slots from offset 16; an exit's return value is at 16.
const ARGUMENTS: usize = 16;
const RETURN_VALUE: usize = 16;

const MAP_SHARED: u64 = 0x01;
const MAP_ANONYMOUS: u64 = 0x20;
const PROT_EXEC: u64 = 0x4;

#[tracepoint]
pub fn mmap_enter(ctx: TracePointContext) -> u32 {
    remember(&ctx, 4); // addr, len, prot, flags
    0
}

#[tracepoint]
pub fn mmap_exit(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, call, result)) = recall(&ctx) else { return 0 };
    let [_, len, prot, map_flags] = call.args;
    let mut flags = internal_bit(&call);
    if map_flags & MAP_SHARED != 0 {
        flags |= mapping::SHARED;
    }
    if map_flags & MAP_ANONYMOUS != 0 {
        flags |= mapping::ANONYMOUS;
    }
    // Code mapped: counted now, before it can run (see `unwind`), and sent with the count.
    let mut exec_mmaps = 0;
    if prot & PROT_EXEC != 0 {
        flags |= mapping::EXECUTABLE;
        exec_mmaps = crate::stack::unwind::count_exec_mmap((pid_tgid >> 32) as u32);
    }
    send(&ctx, pid_tgid, EventKind::Mmap, flags, result, len, 0, exec_mmaps, true);
    0
}

#[tracepoint]
pub fn munmap_enter(ctx: TracePointContext) -> u32 {
    remember(&ctx, 2); // addr, len
    0
}

#[tracepoint]
pub fn munmap_exit(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, call, result)) = recall(&ctx) else { return 0 };
    if result == 0 {
        send(&ctx, pid_tgid, EventKind::Munmap, internal_bit(&call), call.args[0], call.args[1], 0, 0, false);
    }
    0
}

#[tracepoint]
pub fn mremap_enter(ctx: TracePointContext) -> u32 {
    remember(&ctx, 3); // addr, old_len, new_len
    0
}

#[tracepoint]
pub fn mremap_exit(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, call, result)) = recall(&ctx) else { return 0 };
    let [old_addr, old_len, new_len, _] = call.args;
    send(&ctx, pid_tgid, EventKind::Mremap, internal_bit(&call), result, new_len, old_addr, old_len, true);
    0
}

#[tracepoint]
pub fn brk_enter(ctx: TracePointContext) -> u32 {
    remember(&ctx, 1); // requested break
    0
}

#[tracepoint]
pub fn brk_exit(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, call, result)) = recall(&ctx) else { return 0 };
    // brk returns the (possibly unchanged) break, never an error code.
    send(&ctx, pid_tgid, EventKind::Brk, internal_bit(&call), result, 0, call.args[0], 0, call.args[0] != 0);
    0
}

#[tracepoint]
pub fn shmat_enter(ctx: TracePointContext) -> u32 {
    remember(&ctx, 1); // shmid
    0
}

#[tracepoint]
pub fn shmat_exit(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, call, result)) = recall(&ctx) else { return 0 };
    send(&ctx, pid_tgid, EventKind::Shmat, internal_bit(&call) | mapping::SHARED, result, 0, call.args[0], 0, true);
    0
}

#[tracepoint]
pub fn shmdt_enter(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if by_id::is_traced(pid_tgid) {
        // SAFETY: reading an argument slot inside the tracepoint's record.
        let addr = unsafe { ctx.read_at::<u64>(ARGUMENTS) }.unwrap_or(0);
        send(&ctx, pid_tgid, EventKind::Shmdt, mapping::SHARED, addr, 0, 0, 0, false);
    }
    0
}

/// Keeps the first `arguments` arguments of a traced process's system call until its exit.
#[inline(always)]
fn remember(ctx: &TracePointContext, arguments: usize) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !by_id::is_traced(pid_tgid) {
        return;
    }
    let mut args = [0u64; 4];
    for (index, slot) in args.iter_mut().enumerate().take(arguments) {
        // SAFETY: reading argument slots inside the tracepoint's record.
        *slot = unsafe { ctx.read_at::<u64>(ARGUMENTS + 8 * index) }.unwrap_or(0);
    }
    // Inside an allocator call: malloc's own mmap, realloc's mremap, the arena's brk.
    let internal = u32::from(by_id::call(pid_tgid).is_some());
    if SYSCALLS.insert(pid_tgid, SyscallArgs { args, internal, _padding: 0 }, 0).is_err() {
        count(Counter::InFlightFull);
    }
}

/// The arguments kept at entry and the return value, for a traced process's system call.
#[inline(always)]
fn recall(ctx: &TracePointContext) -> Option<(u64, SyscallArgs, u64)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let call = SYSCALLS.get_ptr(pid_tgid)?;
    // SAFETY: entries are only written by this thread's own tracepoints; copied before removal.
    let call = unsafe { *call };
    let _ = SYSCALLS.remove(pid_tgid);
    // SAFETY: reading the return value slot inside the tracepoint's record.
    let result = unsafe { ctx.read_at::<i64>(RETURN_VALUE) }.ok()?;
    // Failures (-errno) change nothing.
    if (-4095..0).contains(&result) {
        return None;
    }
    Some((pid_tgid, call, result as u64))
}

#[inline(always)]
fn internal_bit(call: &SyscallArgs) -> u32 {
    if call.internal != 0 { mapping::INTERNAL } else { 0 }
}

#[uprobe]
pub fn wrapper_enter(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !by_id::is_traced(pid_tgid) {
        return 0;
    }
    let sp = stack_pointer(ctx.regs);
    if let Some(outer) = WRAPPERS.get_ptr(pid_tgid) {
        // SAFETY: entries are only written by this thread's own probes.
        if unsafe { (*outer).entry_sp } >= sp {
            return 0; // sbrk calling brk: the outer wrapper takes the stack
        }
    }
    let empty =
        Event { kind: 0, tgid: 0, stack_id: 0, flags: 0, size: 0, addr: 0, old_addr: 0, old_size: 0, timestamp_ns: 0 };
    let call = WrapperCall { entry_sp: sp, armed: 0, _padding: 0, event: empty };
    if WRAPPERS.insert(pid_tgid, call, 0).is_err() {
        count(Counter::InFlightFull);
    }
    0
}

#[uretprobe]
pub fn wrapper_exit(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(call) = WRAPPERS.get_ptr(pid_tgid) else { return 0 };
    // SAFETY: as above; copied out before removal.
    let call = unsafe { *call };
    if stack_pointer(ctx.regs) <= call.entry_sp {
        return 0; // a nested wrapper's return
    }
    let _ = WRAPPERS.remove(pid_tgid);
    if call.armed != 0 {
        emit_with_user_stack(&ctx, ctx.regs, call.event);
    }
    0
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn send<C: EbpfContext>(
    ctx: &C,
    pid_tgid: u64,
    kind: EventKind,
    flags: u32,
    addr: u64,
    size: u64,
    old_addr: u64,
    old_size: u64,
    with_stack: bool,
) {
    let event = Event {
        kind: kind as u32,
        tgid: (pid_tgid >> 32) as u32,
        stack_id: 0,
        flags,
        size,
        addr,
        old_addr,
        old_size,
        // SAFETY: helper without preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
    };
    // Memory gained by the program's own code gets a stack; memory released or gained inside
    // the allocator needs none.
    if !with_stack || flags & mapping::INTERNAL != 0 {
        return emit(event);
    }
    // Through a libc wrapper: the wrapper's return takes the stack.
    if let Some(wrapper) = WRAPPERS.get_ptr_mut(pid_tgid) {
        // SAFETY: entries are only written by this thread's own probes.
        unsafe {
            (*wrapper).event = event;
            (*wrapper).armed = 1;
        }
        return;
    }
    // A raw system call: its own stack is whole.
    emit_with_stack(ctx, event);
}
