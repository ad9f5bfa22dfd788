//! Per-thread and per-process state in arrays indexed by the thread or process id.
//!
//! Every probe hit asks "is this process traced?" and "is this thread inside an allocator
//! call?". In a hash map each question costs a hashed, locked lookup, and starting or ending a
//! call an insert or a delete (together about 100 ns per malloc+free pair, measured with
//! `--program-stats`). Ids are below the kernel's `pid_max`, so when that is small enough the
//! agent sizes arrays to it: a slot per id, owned by that thread alone, read and written in
//! place. An id beyond the arrays (`pid_max` raised while tracing, or larger than memtrace
//! allocates for) falls back to the hash maps, with the same meaning.
use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, HashMap, LruHashMap},
};
use memtrace_common::{FreeMark, InFlight};

/// Set at load time: ids below it have a slot in the arrays (0: none do).
#[unsafe(no_mangle)]
static ID_SLOTS: Global<u32> = Global::new(0);

/// 1 for each traced process, by process id.
#[map(name = "TRACED_SLOTS")]
static TRACED_SLOTS: Array<u8> = Array::with_max_entries(1, 0);

/// Each thread's allocator call in flight, by thread id; `entry_sp == 0` when none.
#[map(name = "CALL_SLOTS")]
static CALL_SLOTS: Array<InFlight> = Array::with_max_entries(1, 0);

/// Each thread's last operator-delete mark, by thread id; `addr == 0` when none.
#[map(name = "MARK_SLOTS")]
static MARK_SLOTS: Array<FreeMark> = Array::with_max_entries(1, 0);

/// The processes traced, by process id (beyond `TRACED_SLOTS`): every program checks it, those
/// that fire machine-wide (syscall tracepoints, page faults) and the uprobes (see
/// `alloc::enter`).
#[map(name = "TRACED")]
static TRACED: HashMap<u32, u8> = HashMap::with_max_entries(64 * 1024, 0);

/// Allocator calls entered but not yet returned, by pid_tgid (beyond `CALL_SLOTS`; one per
/// thread at most: nested calls keep the outer entry, see `InFlight::entry_sp`).
#[map(name = "IN_FLIGHT")]
static IN_FLIGHT: HashMap<u64, InFlight> = HashMap::with_max_entries(16 * 1024, 0);

/// The last block each thread released through operator delete (beyond `MARK_SLOTS`; see
/// `frees.rs`).
#[map(name = "FREE_MARKS")]
static FREE_MARKS: LruHashMap<u64, FreeMark> = LruHashMap::with_max_entries(16 * 1024, 0);

/// True when this thread is inside an allocator call whose frame is at or above `sp`: the
/// current probe hit is that call's own inner work and must not be reported again.
#[inline(always)]
pub fn inside_allocator_call(pid_tgid: u64, sp: u64) -> bool {
    call(pid_tgid).is_some_and(|outer| outer.entry_sp >= sp)
}

#[inline(always)]
fn has_slot(id: u32) -> bool {
    id < ID_SLOTS.load()
}

/// Whether the process of `pid_tgid` is in the traced set.
#[inline(always)]
pub fn is_traced(pid_tgid: u64) -> bool {
    let tgid = (pid_tgid >> 32) as u32;
    if let Some(slot) = read_slot(&TRACED_SLOTS, tgid, |flag| *flag != 0) {
        return slot.is_some();
    }
    TRACED.get_ptr(tgid).is_some()
}

/// This thread's allocator call in flight, if any.
#[inline(always)]
pub fn call(pid_tgid: u64) -> Option<InFlight> {
    if let Some(slot) = read_slot(&CALL_SLOTS, pid_tgid as u32, |call| call.entry_sp != 0) {
        return slot;
    }
    // SAFETY: entries are only written by this thread's own probes.
    IN_FLIGHT.get_ptr(pid_tgid).map(|call| unsafe { *call })
}

/// Starts this thread's allocator call; false when the hash map is full.
#[inline(always)]
pub fn begin_call(pid_tgid: u64, call: InFlight) -> bool {
    with_slot(&CALL_SLOTS, pid_tgid as u32, |slot| *slot = call) || IN_FLIGHT.insert(pid_tgid, call, 0).is_ok()
}

/// Ends this thread's allocator call.
#[inline(always)]
pub fn end_call(pid_tgid: u64) {
    if !with_slot(&CALL_SLOTS, pid_tgid as u32, |slot| slot.entry_sp = 0) {
        let _ = IN_FLIGHT.remove(pid_tgid);
    }
}

/// This thread's operator-delete mark, if any.
#[inline(always)]
pub fn mark(pid_tgid: u64) -> Option<FreeMark> {
    if let Some(slot) = read_slot(&MARK_SLOTS, pid_tgid as u32, |mark| mark.addr != 0) {
        return slot;
    }
    // SAFETY: marks are only written by this thread's own probes.
    FREE_MARKS.get_ptr(pid_tgid).map(|mark| unsafe { *mark })
}

/// Sets this thread's operator-delete mark. In the hash map (an LRU) a full map forgets the
/// oldest threads' marks, which can only make a later free of the same block count as a second
/// release (visible as an unknown free).
#[inline(always)]
pub fn set_mark(pid_tgid: u64, mark: FreeMark) {
    if !with_slot(&MARK_SLOTS, pid_tgid as u32, |slot| *slot = mark) {
        let _ = FREE_MARKS.insert(pid_tgid, mark, 0);
    }
}

/// Clears this thread's operator-delete mark.
#[inline(always)]
pub fn clear_mark(pid_tgid: u64) {
    if !with_slot(&MARK_SLOTS, pid_tgid as u32, |slot| slot.addr = 0) {
        let _ = FREE_MARKS.remove(pid_tgid);
    }
}

/// The value in the slot of `id` in `slots` if `is_set` says it holds one; `None` when the id
/// has no slot (then the hash map serves).
#[inline(always)]
fn read_slot<V: Copy>(slots: &Array<V>, id: u32, is_set: impl FnOnce(&V) -> bool) -> Option<Option<V>> {
    if !has_slot(id) {
        return None;
    }
    Some(slots.get(id).filter(|value| is_set(value)).copied())
}

/// Runs `write` on the slot of `id` in `slots`; false when the id has none (then the hash map
/// serves).
#[inline(always)]
fn with_slot<V>(slots: &Array<V>, id: u32, write: impl FnOnce(&mut V)) -> bool {
    if !has_slot(id) {
        return false;
    }
    if let Some(slot) = slots.get_ptr_mut(id) {
        // SAFETY: the slot of this thread's own id, written only by its own probes (a BPF
        // program is not preempted on its CPU, and a thread runs on one CPU at a time).
        write(unsafe { &mut *slot });
    }
    true
}
