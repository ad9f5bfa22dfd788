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
        MAX_EXEC_MAPPINGS, NO_TABLE, PagePair, ProcessMappings, Registers, RowPair, Step, UnwindCounter, UnwindRow,
        UnwindTable, UserMemory, find_mapping, row_for, stack_flags, step_frame,
    },
};

use super::{SCRATCH, STACK_SCRATCH};

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

/// A walk in progress, on the walking function's stack; `bpf_loop` hands it to each round.
/// The process's mappings and the frames array are looked up once per walk.
#[repr(C)]
struct Walk {
    process: *const ProcessMappings,
    frames: *mut [u64; MAX_STACK_DEPTH],
    state: *mut WalkState,
}

/// The scalars of a walk in progress, in this CPU's `UNWIND_WALK`. The verifier knows nothing
/// of what a map value holds, so every round of the loop looks alike to it and it checks one;
/// on the stack the depth would differ from round to round, and it would check up to 127
/// rounds for every program that walks.
#[repr(C)]
#[derive(Clone, Copy)]
struct WalkState {
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

#[map(name = "UNWIND_WALK")]
static UNWIND_WALK: PerCpuArray<WalkState> = PerCpuArray::with_max_entries(1, 0);

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

/// Where a walk writes its frames: the frames array of one of the per-CPU scratch records.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Destination {
    /// `SCRATCH`: an event's record.
    Event = 0,
    /// `STACK_SCRATCH`: `--combined`'s stack.
    Combined = 1,
}

/// Walks the stack of process `tgid` from `start` by tables, writing up to `limit` frames
/// (innermost first) into `destination`'s frames. `return_address`: `start.pc` is a return
/// address (a return probe's), not the address of the instruction interrupted. `None` when
/// stacks are not walked by tables, or the agent has not given this process its mappings: then
/// by frame pointer, as before.
#[inline(always)]
pub fn walk(
    tgid: u32,
    start: Registers,
    return_address: bool,
    destination: Destination,
    limit: usize,
) -> Option<Walked> {
    if !by_tables() {
        return None;
    }
    let mut request = WalkRequest {
        pc: start.pc,
        sp: start.sp,
        bp: start.bp,
        tgid,
        limit: limit.min(MAX_STACK_DEPTH) as u32,
        return_address: u32::from(return_address),
        destination: destination as u32,
        depth: 0,
        outcome: RUNNING,
    };
    if memtrace_walk_stack(&mut request) == 0 {
        return None;
    }
    let depth = request.depth as usize;
    Some(match request.outcome {
        HAND_OVER => {
            let regs = Registers { pc: request.pc, sp: request.sp, bp: request.bp };
            let hand_over = HandOver { regs, return_address: request.return_address != 0 };
            Walked { depth, flags: stack_flags::COPY_FOLLOWS, hand_over: Some(hand_over) }
        }
        TRUNCATED => Walked { depth, flags: stack_flags::TRUNCATED, hand_over: None },
        _ => Walked { depth, flags: 0, hand_over: None },
    })
}

/// A walk asked of `memtrace_walk_stack`, and what it found: the start registers (on return,
/// where the agent is to go on when it hands the walk over), the frames written, the outcome.
#[repr(C)]
pub struct WalkRequest {
    pc: u64,
    sp: u64,
    bp: u64,
    tgid: u32,
    limit: u32,
    return_address: u32,
    destination: u32,
    depth: u32,
    outcome: u32,
}

/// The walk, as a global BPF function: the verifier checks a global function once, on its
/// own, where an inlined walk (its `bpf_loop` callback with it) is checked again for every
/// distinct state a program reaches it in (82 in `mmap_exit`). With the walk's scalars in a
/// map value (`WalkState`) too, `mmap_exit` loads in 14,000 verified instructions and 12 ms
/// instead of 103,000 and 110 ms. Returns 0 when the process has no mappings here (the caller
/// walks by frame pointer), 1 when it walked.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn memtrace_walk_stack(request: *mut WalkRequest) -> u32 {
    if request.is_null() {
        return 0;
    }
    // SAFETY: the caller's request, on its stack (the verifier checks its size).
    let request = unsafe { &mut *request };
    let Some(process) = UNWIND_PROCESSES.get_ptr(request.tgid) else { return 0 };
    let frames = if request.destination == Destination::Combined as u32 {
        // SAFETY: this CPU's own scratch record; a BPF program is not preempted on its CPU.
        STACK_SCRATCH.get_ptr_mut(0).map(|stack| unsafe { &raw mut (*stack).frames })
    } else {
        // SAFETY: as above.
        SCRATCH.get_ptr_mut(0).map(|record| unsafe { &raw mut (*record).frames })
    };
    let Some(frames) = frames else { return 0 };
    let Some(state) = UNWIND_WALK.get_ptr_mut(0) else { return 0 };
    count(UnwindCounter::Walks);
    let limit = request.limit.min(MAX_STACK_DEPTH as u32);
    // SAFETY: this CPU's own slot; a BPF program is not preempted on its CPU.
    unsafe {
        *state = WalkState {
            pc: request.pc,
            sp: request.sp,
            bp: request.bp,
            tgid: request.tgid,
            depth: 0,
            limit,
            return_address: request.return_address,
            last_mapping: 0,
            table_steps: 0,
            frame_pointer_steps: 0,
            outcome: RUNNING,
        };
    }
    let mut walk = Walk { process, frames, state };
    // SAFETY: the callback is a BPF function taking (index, context); the context is this
    // walk, on this function's stack, alive until bpf_loop returns.
    unsafe {
        bpf_loop(limit, next_frame as *mut c_void, (&raw mut walk).cast(), 0);
    }
    // SAFETY: as above.
    let walk = unsafe { *state };
    add(UnwindCounter::TableSteps, walk.table_steps);
    add(UnwindCounter::FramePointerSteps, walk.frame_pointer_steps);
    match walk.outcome {
        HAND_OVER => count(UnwindCounter::HandedToAgent),
        TRUNCATED => count(UnwindCounter::Truncated),
        _ => {}
    }
    request.pc = walk.pc;
    request.sp = walk.sp;
    request.bp = walk.bp;
    request.return_address = walk.return_address;
    request.depth = walk.depth;
    request.outcome = walk.outcome;
    1
}

/// One round of `bpf_loop`: places the current frame and steps to its caller. Returns 1 to end
/// the loop.
extern "C" fn next_frame(_round: u64, context: *mut c_void) -> i64 {
    // SAFETY: `context` is the `Walk` that `memtrace_walk_stack` passed to bpf_loop; its state
    // is this CPU's own slot.
    let walk = unsafe { &*context.cast::<Walk>() };
    let state = unsafe { &mut *walk.state };
    state.outcome = advance(walk, state);
    i64::from(state.outcome != RUNNING)
}

#[inline(always)]
fn advance(walk: &Walk, state: &mut WalkState) -> u32 {
    // SAFETY: a map value looked up for this walk, valid for this program's run; the agent
    // replaces it whole.
    let process = unsafe { &*walk.process };
    let pc = state.pc;
    let Some(index) = mapping_of(process, pc, state.last_mapping) else {
        return if pending_for(state.tgid, process) { HAND_OVER } else { TRUNCATED };
    };
    let Some(mapping) = process.mappings.get(opaque(index) & (MAX_EXEC_MAPPINGS - 1)) else { return TRUNCATED };
    state.last_mapping = index;
    // SAFETY: the frames array of this walk, this CPU's own scratch memory.
    let Some(slot) = (unsafe { &mut *walk.frames }).get_mut(state.depth as usize) else { return COMPLETE };
    *slot = pc;
    state.depth += 1;
    let regs = Registers { pc, sp: state.sp, bp: state.bp };
    if mapping.table == NO_TABLE {
        state.frame_pointer_steps += 1;
    } else {
        state.table_steps += 1;
    }
    let step = step_frame(mapping, regs, state.return_address != 0, row_in, &mut TracedProcess);
    if state.depth >= state.limit {
        // The depth asked for (`--stack-depth`): cut short unless this was the outermost frame.
        return if matches!(step, Step::End) { COMPLETE } else { TRUNCATED };
    }
    match step {
        Step::Caller(caller) => {
            state.pc = caller.pc;
            state.sp = caller.sp;
            state.bp = caller.bp;
            state.return_address = 1;
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
        let mapping = process.mappings.get(opaque(index) & (MAX_EXEC_MAPPINGS - 1))?;
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
    Some(unsafe { pair.cast::<T>().add(opaque(index) & 1).read() })
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
fn opaque(value: u32) -> usize {
    let Some(slot) = UNWIND_OPAQUE.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's own slot; a BPF program is not preempted on its CPU. Read back whole,
    // so that a bounds check and the use that follows it are of one register.
    unsafe {
        core::ptr::write_volatile(slot, u64::from(value));
        core::ptr::read_volatile(slot) as usize
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
    by_tables()
        && UNWIND_PROCESSES.get_ptr(tgid).is_some_and(|process| {
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
