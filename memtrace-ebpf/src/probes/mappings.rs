//! Memory outside malloc: mmap, munmap, mremap, brk and System V shmat/shmdt, from the raw
//! `sys_enter` and `sys_exit` tracepoints (so calls that bypass libc's wrappers count too). The
//! entry keeps the arguments per thread; the exit sends one event with the result and, for
//! memory gained, the user stack. A call made inside an allocator call (malloc's own mmap or
//! brk) is marked internal: the block the caller asked for is what counts.
//!
//! Raw tracepoints rather than the per-syscall ones (`syscalls/sys_enter_mmap`, ...): those are
//! perf events, and the kernel removes each one a grace period at a time under one lock, which
//! made memtrace's exit take seconds; a raw tracepoint goes at once. They fire for every system
//! call of every process, so each program first picks its six calls out by number and checks
//! the traced set (`by_id::is_traced`).
//!
//! Called through libc's wrappers (mmap, mremap, shmat, brk, sbrk), the event waits for the
//! wrapper's return (a uretprobe) to take the user stack there: inside a frameless wrapper a
//! frame-pointer walk would skip the function that called it.
use aya_ebpf::{
    EbpfContext,
    bindings::pt_regs,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, raw_tracepoint, uprobe, uretprobe},
    maps::HashMap,
    programs::{ProbeContext, RawTracePointContext, RetProbeContext},
};
use memtrace_common::{Counter, Event, EventKind, SyscallArgs, WrapperCall, mapping};

use crate::{
    emit::{count, emit, emit_with_stack},
    probes::return_stack::emit_with_return_stack,
    regs::{stack_pointer, syscall_argument},
    state::by_id,
};

/// Mapping system calls entered but not yet returned, by pid_tgid.
#[map(name = "SYSCALLS")]
static SYSCALLS: HashMap<u64, SyscallArgs> = HashMap::with_max_entries(16 * 1024, 0);

/// libc mapping wrappers in flight, by pid_tgid.
#[map(name = "WRAPPERS")]
static WRAPPERS: HashMap<u64, WrapperCall> = HashMap::with_max_entries(16 * 1024, 0);

/// The system calls followed, by number (each architecture has its own table).
#[cfg(bpf_target_arch = "x86_64")]
mod number {
    pub const MMAP: i64 = 9;
    pub const MUNMAP: i64 = 11;
    pub const BRK: i64 = 12;
    pub const MREMAP: i64 = 25;
    pub const SHMAT: i64 = 30;
    pub const SHMDT: i64 = 67;
}
#[cfg(bpf_target_arch = "aarch64")]
mod number {
    pub const SHMAT: i64 = 196;
    pub const SHMDT: i64 = 197;
    pub const BRK: i64 = 214;
    pub const MUNMAP: i64 = 215;
    pub const MREMAP: i64 = 216;
    pub const MMAP: i64 = 222;
}

const MAP_SHARED: u64 = 0x01;
const MAP_ANONYMOUS: u64 = 0x20;
const PROT_EXEC: u64 = 0x4;

/// `sys_enter(struct pt_regs *regs, long id)`: keeps the arguments of the calls followed.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn syscall_enter(ctx: RawTracePointContext) -> i32 {
    let id: i64 = ctx.arg(1);
    let arguments = match id {
        number::MMAP => 4,                // addr, len, prot, flags
        number::MREMAP => 3,              // addr, old_len, new_len
        number::MUNMAP => 2,              // addr, len
        number::BRK | number::SHMAT => 1, // requested break; shmid
        number::SHMDT => return shmdt_enter(&ctx),
        _ => return 0,
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    if !by_id::is_traced(pid_tgid) {
        return 0;
    }
    let regs: *const pt_regs = ctx.arg(0);
    let mut args = [0u64; 4];
    for (index, slot) in args.iter_mut().enumerate().take(arguments) {
        *slot = syscall_argument(regs, index);
    }
    // Inside an allocator call: malloc's own mmap, realloc's mremap, the arena's brk.
    let internal = u32::from(by_id::call(pid_tgid).is_some());
    let call = SyscallArgs { args, internal, number: id as u32 };
    if SYSCALLS.insert(pid_tgid, call, 0).is_err() {
        count(Counter::InFlightFull);
    }
    0
}

/// `sys_exit(struct pt_regs *regs, long ret)`: the event of a call kept at its entry.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn syscall_exit(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !by_id::is_traced(pid_tgid) {
        return 0;
    }
    let Some(call) = SYSCALLS.get_ptr(pid_tgid) else { return 0 };
    // SAFETY: entries are only written by this thread's own programs; copied before removal.
    let call = unsafe { *call };
    let _ = SYSCALLS.remove(pid_tgid);
    let result: i64 = ctx.arg(1);
    // Failures (-errno) change nothing.
    if (-4095..0).contains(&result) {
        return 0;
    }
    let result = result as u64;
    let internal = internal_bit(&call);
    let [first, second, third, fourth] = call.args;
    // One call of `send`, so that the stack walk inside it is verified once.
    #[rustfmt::skip]
    let (kind, flags, addr, size, old_addr, old_size, with_stack) = match i64::from(call.number) {
        number::MMAP => {
            let (flags, exec_mmaps) = mmap_flags(pid_tgid, internal, third, fourth);
            (EventKind::Mmap, flags, result, second, 0, exec_mmaps, true)
        }
        number::MUNMAP if result == 0 => (EventKind::Munmap, internal, first, second, 0, 0, false),
        number::MREMAP => (EventKind::Mremap, internal, result, third, first, second, true),
        // brk returns the (possibly unchanged) break, never an error code.
        number::BRK => (EventKind::Brk, internal, result, 0, first, 0, first != 0),
        number::SHMAT => (EventKind::Shmat, internal | mapping::SHARED, result, 0, first, 0, true),
        _ => return 0,
    };
    send(&ctx, pid_tgid, kind, flags, addr, size, old_addr, old_size, with_stack);
    0
}

/// An mmap's flags for the agent, and for code mapped the count of such mappings (counted now,
/// before the code can run: see `unwind`).
#[inline(always)]
fn mmap_flags(pid_tgid: u64, internal: u32, prot: u64, map_flags: u64) -> (u32, u64) {
    let mut flags = internal;
    if map_flags & MAP_SHARED != 0 {
        flags |= mapping::SHARED;
    }
    if map_flags & MAP_ANONYMOUS != 0 {
        flags |= mapping::ANONYMOUS;
    }
    let mut exec_mmaps = 0;
    if prot & PROT_EXEC != 0 {
        flags |= mapping::EXECUTABLE;
        exec_mmaps = crate::stack::unwind::count_exec_mmap((pid_tgid >> 32) as u32);
    }
    (flags, exec_mmaps)
}

/// shmdt needs no result: the segment's address is all the agent needs.
#[inline(always)]
fn shmdt_enter(ctx: &RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if by_id::is_traced(pid_tgid) {
        let regs: *const pt_regs = ctx.arg(0);
        let addr = syscall_argument(regs, 0);
        send(ctx, pid_tgid, EventKind::Shmdt, mapping::SHARED, addr, 0, 0, 0, false);
    }
    0
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
        emit_with_return_stack(&ctx, call.event);
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
