//! The user stack walked by unwind tables (`--unwind auto|tables`), for code built without
//! frame pointers.
//!
//! The agent turns each module's call-frame information into rows (`UNWIND_ROWS`, with a page
//! index in `UNWIND_PAGES` and each module's place in `UNWIND_TABLES`) and tells the kernel
//! where each traced process has which module (`UNWIND_PROCESSES`). A walk repeats, one frame
//! per round of `bpf_loop`: find the mapping of the pc, find its row, apply the row (the step
//! function in `memtrace_common::unwind`, the one the agent's tests run). A module without a
//! table is stepped by frame pointer.
//!
//! The walk ends complete at the outermost frame (a row saying so, a zero return address or
//! frame pointer) or at the depth asked for. It ends truncated, and says so, when it cannot go
//! on: a pc in no known executable mapping (never sent as a frame), a rule it does not
//! implement, an unreadable stack, a frame not above the one before. A pc in no known mapping
//! while the process has mapped code the agent has not applied yet is the agent's to place:
//! the walk stops there and the caller sends the registers and a copy of the stack above them
//! (`HandOver`).
use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_xadd},
};

use aya_ebpf::{
    Global,
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{bpf_probe_read_user, generated::bpf_loop},
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use memtrace_common::{
    MAX_STACK_DEPTH,
    unwind::{
        MAX_EXEC_MAPPINGS, NO_TABLE, ProcessMappings, Registers, PagePair, RowPair, Step, UnwindCounter, UnwindRow, UnwindTable,
        UserMemory, find_mapping, row_for, stack_flags, step_frame,
    },
};


/// Set at load time: 1 walks by unwind tables where the agent gave a process its mappings.
#[unsafe(no_mangle)]
static UNWIND_MODE: Global<u8> = Global::new(0);

/// Every table's rows, one after another; sized by the agent (`--unwind-memory`) and written
/// through a shared mapping.
#[map(name = "UNWIND_ROWS")]
static UNWIND_ROWS: Array<RowPair> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Every table's page index, one after another; sized and written as `UNWIND_ROWS`.
#[map(name = "UNWIND_PAGES")]
static UNWIND_PAGES: Array<PagePair> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Each table's place in the arrays above, by table id.
#[map(name = "UNWIND_TABLES")]
static UNWIND_TABLES: Array<UnwindTable> = Array::with_max_entries(1, 0);

/// Each traced process's executable mappings, by process id; allocated as used.
#[map(name = "UNWIND_PROCESSES")]
static UNWIND_PROCESSES: HashMap<u32, ProcessMappings> = HashMap::with_max_entries(4096, BPF_F_NO_PREALLOC);

/// Executable mmaps each traced process made, by process id (see `mappings.rs`).
#[map(name = "EXEC_MMAPS")]
static EXEC_MMAPS: HashMap<u32, u64> = HashMap::with_max_entries(64 * 1024, 0);

#[map(name = "UNWIND_COUNTERS")]
static UNWIND_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(UnwindCounter::ALL.len() as u32, 0);

/// Whether stacks are walked by tables at all (otherwise by frame pointer, as before).
#[inline(always)]
pub fn by_tables() -> bool {
    UNWIND_MODE.load() != 0
}

/// Whether the agent has given this process its mappings: its stacks can be walked by tables.
#[inline(always)]
pub fn knows(tgid: u32) -> bool {
    by_tables() && UNWIND_PROCESSES.get_ptr(tgid).is_some()
}

#[inline(always)]
pub fn count(counter: UnwindCounter) {
    add(counter, 1);
}

#[inline(always)]
fn add(counter: UnwindCounter, amount: u32) {
    if let Some(slot) = UNWIND_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, and a BPF program is not preempted on its CPU.
        unsafe { *slot += u64::from(amount) };
    }
}

/// How a walk ended.
const RUNNING: u32 = 0;
const COMPLETE: u32 = 1;
const TRUNCATED: u32 = 2;
const HAND_OVER: u32 = 3;

/// A walk in progress, on the program's stack; `bpf_loop` hands it to each round. The
/// process's mappings and the frames array are looked up once, by `walk`.
#[repr(C)]
struct Walk {
    process: *const ProcessMappings,
    frames: *mut [u64; MAX_STACK_DEPTH],
    pc: u64,
    sp: u64,
    bp: u64,
    tgid: u32,
    /// Frames written so far, and at most.
    depth: u32,
    limit: u32,
    /// 1 when `pc` is a return address: its row is that of the byte before (the call).
    return_address: u32,
    /// The mapping of the last frame placed: the next is often in the same module.
    last_mapping: u32,
    /// Frames stepped by table row and by frame pointer, counted once at the end.
    table_steps: u32,
    frame_pointer_steps: u32,
    /// `RUNNING` until a round ends the walk.
    outcome: u32,
}

/// A finished walk: the frames written, `stack_flags` for the event, and with
/// `COPY_FOLLOWS` the registers where the agent is to go on.
pub struct Walked {
    pub depth: usize,
    pub flags: u32,
    pub hand_over: Option<HandOver>,
}

/// Where the kernel stopped for the agent to go on.
pub struct HandOver {
    pub regs: Registers,
    pub return_address: bool,
}

/// Walks the stack of process `tgid` (one the agent gave its mappings: see `knows`) from
/// `start` by tables, writing up to `limit` frames (innermost first) into `frames`.
/// `return_address`: `start.pc` is a return address (a return probe's), not the address of
/// the instruction interrupted.
#[inline(always)]
pub fn walk(tgid: u32, start: Registers, return_address: bool, frames: &mut [u64; MAX_STACK_DEPTH], limit: usize) -> Walked {
    let Some(process) = UNWIND_PROCESSES.get_ptr(tgid) else {
        return Walked { depth: 0, flags: stack_flags::TRUNCATED, hand_over: None };
    };
    count(UnwindCounter::Walks);
    let limit = limit.min(MAX_STACK_DEPTH) as u32;
    let mut walk = Walk {
        process,
        frames,
        pc: start.pc,
        sp: start.sp,
        bp: start.bp,
        tgid,
        depth: 0,
        limit,
        return_address: u32::from(return_address),
        last_mapping: 0,
        table_steps: 0,
        frame_pointer_steps: 0,
        outcome: RUNNING,
    };
    // SAFETY: the callback is a BPF function taking (index, context); the context is this
    // walk, on this program's stack, alive until bpf_loop returns.
    unsafe {
        bpf_loop(limit, next_frame as *mut c_void, (&raw mut walk).cast(), 0);
    }
    add(UnwindCounter::TableSteps, walk.table_steps);
    add(UnwindCounter::FramePointerSteps, walk.frame_pointer_steps);
    let depth = walk.depth as usize;
    match walk.outcome {
        HAND_OVER => {
            count(UnwindCounter::HandedToAgent);
            let regs = Registers { pc: walk.pc, sp: walk.sp, bp: walk.bp };
            Walked { depth, flags: stack_flags::COPY_FOLLOWS, hand_over: Some(HandOver { regs, return_address: walk.return_address != 0 }) }
        }
        TRUNCATED => {
            count(UnwindCounter::Truncated);
            Walked { depth, flags: stack_flags::TRUNCATED, hand_over: None }
        }
        // Complete, or the depth asked for was reached.
        _ => Walked { depth, flags: 0, hand_over: None },
    }
}

/// One round of `bpf_loop`: places the current frame and steps to its caller. Returns 1 to end
/// the loop.
extern "C" fn next_frame(_round: u64, context: *mut c_void) -> i64 {
    // SAFETY: `context` is the `Walk` that `walk` passed to bpf_loop.
    let walk = unsafe { &mut *context.cast::<Walk>() };
    walk.outcome = advance(walk);
    i64::from(walk.outcome != RUNNING)
}

#[inline(always)]
fn advance(walk: &mut Walk) -> u32 {
    // SAFETY: a map value looked up by `walk`, valid for this program's run; the agent
    // replaces it whole.
    let process = unsafe { &*walk.process };
    let pc = walk.pc;
    let Some(index) = mapping_of(process, pc, walk.last_mapping) else {
        return if pending_for(walk.tgid, process) { HAND_OVER } else { TRUNCATED };
    };
    let Some(mapping) = process.mappings.get(opaque(index) as usize & (MAX_EXEC_MAPPINGS - 1)) else { return TRUNCATED };
    walk.last_mapping = index;
    // SAFETY: the frames array `walk` was given, this CPU's own scratch memory.
    let Some(slot) = (unsafe { &mut *walk.frames }).get_mut(walk.depth as usize) else { return COMPLETE };
    *slot = pc;
    walk.depth += 1;
    if walk.depth >= walk.limit {
        return COMPLETE;
    }
    let regs = Registers { pc, sp: walk.sp, bp: walk.bp };
    if mapping.table == NO_TABLE {
        walk.frame_pointer_steps += 1;
    } else {
        walk.table_steps += 1;
    }
    match step_frame(mapping, regs, walk.return_address != 0, row_in, &mut TracedProcess) {
        Step::Caller(caller) => {
            walk.pc = caller.pc;
            walk.sp = caller.sp;
            walk.bp = caller.bp;
            walk.return_address = 1;
            RUNNING
        }
        Step::End => COMPLETE,
        Step::Truncated => TRUNCATED,
    }
}

/// The current process's memory, read with the helper that checks user reads (a fault only
/// fails the read).
struct TracedProcess;

impl UserMemory for TracedProcess {
    #[inline(always)]
    fn word(&mut self, address: u64) -> Option<u64> {
        // SAFETY: a user read checked by the helper.
        unsafe { bpf_probe_read_user(address as *const u64) }.ok()
    }

    #[inline(always)]
    fn pair(&mut self, address: u64) -> Option<[u64; 2]> {
        // SAFETY: as above.
        unsafe { bpf_probe_read_user(address as *const [u64; 2]) }.ok()
    }
}

/// The index of the mapping holding `pc`: the last frame's when it holds it, else found by
/// halving.
#[inline(always)]
fn mapping_of(process: &ProcessMappings, pc: u64, last: u32) -> Option<u32> {
    let bounds_at = |index: u32| {
        let mapping = process.mappings.get(opaque(index) as usize & (MAX_EXEC_MAPPINGS - 1))?;
        Some((mapping.start, mapping.end))
    };
    if last < process.count && bounds_at(last).is_some_and(|(start, end)| start <= pc && pc < end) {
        return Some(last);
    }
    find_mapping(process.count, pc, bounds_at)
}

/// The row of table `table` covering ELF virtual address `address`; `None` when there is no
/// such table or it is inconsistent.
#[inline(always)]
fn row_in(table: u32, address: u64) -> Option<UnwindRow> {
    let table = UNWIND_TABLES.get(table)?;
    row_for(
        table,
        address,
        |page| half_of(&UNWIND_PAGES, table.first_page.wrapping_add(page)),
        |row| half_of(&UNWIND_ROWS, table.first_row.wrapping_add(row)),
    )
}

/// Entry `index` of an array of pairs (`RowPair`, `PagePair`).
#[inline(always)]
fn half_of<T: Copy>(array: &Array<[T; 2]>, index: u32) -> Option<T> {
    let pair = array.get_ptr(index / 2)?;
    // SAFETY: a map value holding two `T`s; `& 1` picks one of them.
    Some(unsafe { pair.cast::<T>().add((opaque(index) & 1) as usize).read() })
}

/// Per-CPU room for `opaque`.
#[map(name = "UNWIND_OPAQUE")]
static UNWIND_OPAQUE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `value`, passed through memory so that the verifier no longer knows its range.
///
/// A search's index becomes a pointer offset; the verifier then tracks the exact range of the
/// bounds it came from, every halving makes them differ, and no two states of the search are
/// ever the same: 2^steps paths to walk, past its limit. Through a map value, the offset is
/// just some value (masked to its array), and the bounds stay imprecise, so the states of one
/// step match the next's.
#[inline(always)]
fn opaque(value: u32) -> u32 {
    let Some(slot) = UNWIND_OPAQUE.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's own slot; a BPF program is not preempted on its CPU.
    unsafe {
        core::ptr::write_volatile(slot, u64::from(value));
        core::ptr::read_volatile(slot) as u32
    }
}

/// Counts an executable mmap of process `tgid`; returns its count so far, this one included.
#[inline(always)]
pub fn count_exec_mmap(tgid: u32) -> u64 {
    if EXEC_MMAPS.get_ptr(tgid).is_none() {
        // Another thread may insert it first: then this fails and the add below counts.
        let _ = EXEC_MMAPS.insert(tgid, 0, BPF_NOEXIST as u64);
    }
    let Some(made) = EXEC_MMAPS.get_ptr_mut(tgid) else { return 0 };
    // SAFETY: a map value, valid for this program's run; threads of one process may count at
    // once, hence the atomic add. (The oldest instruction set cannot return the value added to:
    // it is read after, and may then include another thread's mmap, which has happened too by
    // then, so the agent reading the mappings for this one finds that one as well.)
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(made, 1);
        core::ptr::read_volatile(made)
    }
}

/// Whether process `tgid`, whose mappings the agent keeps here, mapped code since it last
/// wrote them.
#[inline(always)]
pub fn mapped_code_pending(tgid: u32) -> bool {
    by_tables() && UNWIND_PROCESSES.get_ptr(tgid).is_some_and(|process| {
        // SAFETY: a map value, valid for this program's run.
        pending_for(tgid, unsafe { &*process })
    })
}

/// Whether the process mapped code the agent has not told the kernel about yet.
#[inline(always)]
fn pending_for(tgid: u32, process: &ProcessMappings) -> bool {
    EXEC_MMAPS.get_ptr(tgid).is_some_and(|made| {
        // SAFETY: a map value, valid for this program's run.
        unsafe { *made > process.exec_mmaps_applied }
    })
}
