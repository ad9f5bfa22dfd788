//! Types shared by memtrace's eBPF programs and its agent.
//!
//! Everything here is `#[repr(C)]` and plain data: the kernel side writes these bytes into the
//! ring buffer and maps, the agent reads them back. Keep the layout stable and explicit.
#![no_std]

mod counters;
pub mod unwind;

pub use counters::{COUNTER_SLOTS, Counter, CounterInfo, LOSSES, UNDECODABLE};

/// What an [`Event`] reports. Stored as a `u32` in the event so both sides agree on the layout.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A block was handed out: `addr`, `size`, `stack_id` are set.
    Alloc = 1,
    /// A block was given back: `addr` is set.
    Free = 2,
    /// `realloc(old_addr, size)` returned `addr` (0 when it failed or freed).
    Realloc = 3,
    /// `mmap` mapped `size` bytes at `addr`; `flags` has the [`mapping`] bits.
    Mmap = 4,
    /// `munmap(addr, size)` succeeded.
    Munmap = 5,
    /// `mremap(old_addr, old_size, size)` moved or resized a mapping to `addr`.
    Mremap = 6,
    /// `brk(old_addr)` set the break to `addr` (`old_addr` 0: a query).
    Brk = 7,
    /// `shmat(old_addr = shmid)` attached a System V segment at `addr`.
    Shmat = 8,
    /// `shmdt(addr)` detached a System V segment.
    Shmdt = 9,
    /// A page fault at `addr` (`flags`: [`fault`] bits); `size` is the sampling period, the
    /// number of faults this one sample stands for.
    Fault = 10,
}

impl EventKind {
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::Alloc),
            2 => Some(Self::Free),
            3 => Some(Self::Realloc),
            4 => Some(Self::Mmap),
            5 => Some(Self::Munmap),
            6 => Some(Self::Mremap),
            7 => Some(Self::Brk),
            8 => Some(Self::Shmat),
            9 => Some(Self::Shmdt),
            10 => Some(Self::Fault),
            _ => None,
        }
    }
}

/// Bits of [`Event::flags`] for mapping events.
pub mod mapping {
    /// `MAP_SHARED`: memory shared with other processes (or a file).
    pub const SHARED: u32 = 1;
    /// `MAP_ANONYMOUS`: no file behind it.
    pub const ANONYMOUS: u32 = 2;
    /// Made inside an allocator call (malloc's own mmap or brk): the block the caller asked
    /// for is what counts, not this.
    pub const INTERNAL: u32 = 4;
    /// `PROT_EXEC`: code was mapped (`old_size` then holds the process's count of them so far,
    /// see `unwind::ProcessMappings::exec_mmaps_applied`).
    pub const EXECUTABLE: u32 = 8;
}

/// Bits of [`Event::flags`] for fault events.
pub mod fault {
    /// A major fault (the page had to be read from disk); otherwise minor.
    pub const MAJOR: u32 = 1;
}

/// One allocator call, as it completed in the traced process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    /// The process (thread group) id of the caller.
    pub tgid: u32,
    /// Frames of user stack that follow this event in its ring-buffer record (innermost
    /// first); negative (`-errno`) when the capture failed. The agent replaces it with the id it
    /// gives that stack.
    pub stack_id: i32,
    /// For mapping events, [`mapping`] bits.
    pub flags: u32,
    /// Bytes requested by the caller.
    pub size: u64,
    /// The block returned (alloc, realloc) or passed in (free).
    pub addr: u64,
    /// For realloc: the block passed in.
    pub old_addr: u64,
    /// For mremap: the old length.
    pub old_size: u64,
    /// `bpf_ktime_get_ns()` when the call returned.
    pub timestamp_ns: u64,
}

/// How an allocator call in flight returns its block; decides the event it becomes.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// Returns the new block (malloc, calloc, memalign, operator new, ...).
    Alloc = 1,
    /// Returns the new block and releases `old_addr` (realloc, reallocarray).
    Realloc = 2,
    /// Returns 0 and stores the new block through `out_ptr` (posix_memalign).
    PosixMemalign = 3,
}

/// Entry state of an allocator call whose return has not been seen yet, one per thread (see
/// the kernel's `by_id`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InFlight {
    /// Bytes requested.
    pub size: u64,
    /// realloc's input pointer.
    pub old_addr: u64,
    /// posix_memalign's `void **memptr`.
    pub out_ptr: u64,
    /// User stack pointer at entry. A nested call runs below it and a tail call at it; the
    /// outer call's return is the only one seen above it. This is how nested allocator calls
    /// (realloc calling malloc) are told apart without clobbering the outer call's state.
    pub entry_sp: u64,
    /// A [`CallKind`] as `u32`.
    pub kind: u32,
    /// 1 when the block this call returns is one to record: always, unless `--sample-bytes`
    /// or a size filter passed it over.
    pub record: u32,
}

/// A system call's arguments between its entry and exit tracepoints, keyed by pid_tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallArgs {
    pub args: [u64; 4],
    /// Made inside an allocator call.
    pub internal: u32,
    /// The system call's number (the exit only has the result).
    pub number: u32,
}

/// A libc memory-mapping wrapper (mmap, mremap, shmat, brk, sbrk) in flight, keyed by
/// pid_tgid. The system call's event waits here for the wrapper's return, where the user stack
/// is whole: inside the frameless wrapper, a frame-pointer walk skips the caller.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WrapperCall {
    pub entry_sp: u64,
    /// 1 when `event` holds a system call's event waiting for its stack.
    pub armed: u32,
    pub _padding: u32,
    pub event: Event,
}

/// The last block a thread released through an outer free-type function (operator delete),
/// keyed by pid_tgid: the inner `free` of the same block, called from it or tail-called by
/// it, at or below `sp`, is the same release and is not reported twice.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FreeMark {
    pub addr: u64,
    pub sp: u64,
}

/// Deepest user stack captured (the kernel's `PERF_MAX_STACK_DEPTH`).
pub const MAX_STACK_DEPTH: usize = 127;

/// A ring-buffer record that carries a user stack: the event, then `event.stack_id` frames.
/// Only the frames captured are sent, so the record's length varies. Stacks travel whole
/// instead of through a kernel stack map, whose hash buckets collide and drop stacks.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EventWithStack {
    pub event: Event,
    pub frames: [u64; MAX_STACK_DEPTH],
}

/// A block tracked in the kernel (the block table, `BlockSlot`, or past it `LIVE_BLOCKS`):
/// in-kernel aggregation (`--combined`) keeps every outstanding block's size and stack there;
/// sampling (`--sample-bytes`) keeps the sampled blocks, so that only their frees are sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub tgid: u32,
    pub _padding: u32,
    pub addr: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LiveBlock {
    pub size: u64,
    /// `--combined`: the hash of its stack (the key in `STACKS`).
    pub stack_hash: u64,
}

/// One slot of the kernel's block table (`BLOCK_SLOTS`, see the kernel's `block_table`): a
/// block tracked in the kernel, found by its (process, address). `addr` is `EMPTY_SLOT` when
/// the slot is free and `CLAIMED_SLOT` while a probe fills it in; the other fields mean
/// something only when `addr` is neither.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockSlot {
    pub addr: u64,
    pub tgid: u32,
    pub _padding: u32,
    pub size: u64,
    /// `--combined`: the hash of its stack (the key in `STACKS`).
    pub stack_hash: u64,
}

/// `BlockSlot::addr` of a free slot (no block is at address 0).
pub const EMPTY_SLOT: u64 = 0;
/// `BlockSlot::addr` of a slot being filled in (no block is at the last address).
pub const CLAIMED_SLOT: u64 = u64::MAX;
/// Consecutive slots, from a block's home slot, in which it may be kept (see `block_table`).
pub const BLOCK_WINDOW: u32 = 8;

/// What the allocator left in a block's first words when it handed the block out: which words
/// looked like pointers then (glibc's free-list links, its own records' pointers, the data of a
/// block that lived there before), and a short hash of every word. An `Alloc` event carries the
/// summary in `old_addr` and `old_size` when the agent scans for leak kinds (`HANDOUT_WORDS`).
/// At the scan, a word that looked like a pointer and still hashes the same was never written
/// by the program: valgrind, which knows which words are defined, never reads it, so it is not
/// a pointer (see the agent's `reachability::contents`). A word the program wrote is taken for
/// unwritten only if its new value's hash collides: 1 in 16,384 (words 0 to 3) or 65,536.
pub mod handout {
    /// Words looked at, from the block's start.
    pub const WORDS: usize = 8;

    /// Whether a word could be a pointer into a user-space heap: 8-aligned, above the first
    /// 64 KiB, below the 47-bit user address space's top.
    #[inline(always)]
    pub fn looks_like_pointer(word: u64) -> bool {
        word & 7 == 0 && (0x1_0000..(1 << 47)).contains(&word)
    }

    /// The summary of a block's first words (the first `count` of `words` are the block's):
    /// the low word holds the pointer-like words' mask (bits 0 to 7) and 14-bit hashes of words
    /// 0 to 3, the high word 16-bit hashes of words 4 to 7.
    #[inline(always)]
    pub fn summarize(words: &[u64; WORDS], count: usize) -> (u64, u64) {
        let (mut low, mut high) = (0u64, 0u64);
        let mut index = 0;
        while index < WORDS {
            if index < count && looks_like_pointer(words[index]) {
                low |= 1 << index;
            }
            let (shift, bits) = hash_place(index);
            let hash = (hash(words[index]) & ((1 << bits) - 1)) << shift;
            if index < 4 {
                low |= hash
            } else {
                high |= hash
            }
            index += 1;
        }
        (low, high)
    }

    /// Whether word `index`, now `word`, looked like a pointer when the block was handed out
    /// and still holds what it held then (by its hash).
    #[inline(always)]
    pub fn left_by_allocator(summary: (u64, u64), index: usize, word: u64) -> bool {
        let (low, high) = summary;
        if index >= WORDS || low & (1 << index) == 0 {
            return false;
        }
        let (shift, bits) = hash_place(index);
        let kept = if index < 4 { low } else { high };
        (kept >> shift) & ((1 << bits) - 1) == hash(word) & ((1 << bits) - 1)
    }

    /// Where word `index`'s hash sits in its half of the summary, and how many bits it has.
    #[inline(always)]
    fn hash_place(index: usize) -> (u32, u32) {
        if index < 4 { (8 + 14 * index as u32, 14) } else { (16 * (index as u32 - 4), 16) }
    }

    #[inline(always)]
    fn hash(word: u64) -> u64 {
        word.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 48
    }
}

/// The slot index mask of an open-addressed kernel table of `1 << bits` slots (the block table,
/// the per-stack totals); `bits` is kept within 1..=31 as the agent sizes them.
#[inline(always)]
pub fn table_mask(bits: u32) -> u32 {
    ((1u64 << bits.clamp(1, 31)) - 1) as u32
}

/// The home slot of a (process, address) in a block table of `1 << bits` slots.
///
/// Blocks next to each other in memory get slots next to each other: an address's 8-byte word
/// number picks the slot within a stretch of the table, so blocks at least 8 bytes apart never
/// share a home, and the blocks a program is busy with (its heap's hot end, chunks malloc hands
/// out again) stay in a few cache lines and pages of the table instead of one each. Where the
/// word number wraps around the table, each region of memory (and each process) starts at a
/// hashed offset, so that two heaps seldom land on the same slots.
#[inline(always)]
pub fn home_slot(tgid: u32, addr: u64, bits: u32) -> u32 {
    let word = addr >> 3;
    let region = (word >> bits.clamp(1, 31)) ^ (u64::from(tgid) << 40);
    let offset = region.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33;
    word.wrapping_add(offset) as u32 & table_mask(bits)
}

/// `--combined`: one (process, stack), as the agent adds up its totals.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StackKey {
    pub tgid: u32,
    pub _padding: u32,
    /// The hash of the stack's frames (the key in `STACKS`).
    pub stack_hash: u64,
}

/// `--combined`: a stack as kept in `STACKS`, by the hash of its frames.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StackFrames {
    /// Frames used, innermost first.
    pub depth: u64,
    pub frames: [u64; MAX_STACK_DEPTH],
}

/// The hash a stack is kept under with `--combined` (64-bit FNV-1a over the frames, a word at a
/// time): both sides compute it the same way.
#[inline(always)]
pub fn stack_hash(frames: &[u64]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &frame in frames {
        hash = (hash ^ frame).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// `--combined`: what one (process, stack) allocated in all, per CPU in `TOTALS_SLOTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackTotals {
    pub allocated_bytes: u64,
    pub allocations: u64,
}

/// `--combined`: one slot of a CPU's table of per-stack totals (`TOTALS_SLOTS`, a per-CPU
/// array used as an open-addressed table): what one (process, stack) allocated in all on that
/// CPU. Each CPU's copy is its own table; the agent adds up the slots of the same key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TotalsSlot {
    pub stack_hash: u64,
    pub tgid: u32,
    /// 0 while the slot is free.
    pub used: u32,
    pub totals: StackTotals,
}

/// Consecutive slots, from a key's home slot, in which its totals may be kept.
pub const TOTALS_WINDOW: u32 = 8;

/// The home slot of a (process, stack) in a totals table of `1 << bits` slots.
#[inline(always)]
pub fn totals_home(tgid: u32, stack_hash: u64, bits: u32) -> u32 {
    let mixed = (stack_hash ^ u64::from(tgid).wrapping_mul(0xff51_afd7_ed55_8ccd)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> (64 - bits.clamp(1, 31))) as u32
}

/// `--combined`: one (process, stack)'s figures as the agent assembles them: the totals from
/// every CPU's `TOTALS_SLOTS`, the outstanding ones summed over that stack's tracked blocks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackSums {
    pub outstanding_bytes: u64,
    pub outstanding_blocks: u64,
    pub allocated_bytes: u64,
    pub allocations: u64,
}

/// `--sample-bytes`: entries in the table of exponentially distributed gaps between samples.
pub const SAMPLE_GAPS: u32 = 1024;

/// Map and program names, written once here so both sides agree.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    /// Whether `Alloc` events carry the block's first words' [`super::handout`] summary.
    pub const HANDOUT_WORDS: &str = "HANDOUT_WORDS";
    pub const IN_FLIGHT: &str = "IN_FLIGHT";
    pub const FREE_MARKS: &str = "FREE_MARKS";
    pub const TRACED: &str = "TRACED";
    /// Arrays indexed by thread or process id, below `ID_SLOTS` (see the kernel's `by_id`).
    pub const TRACED_SLOTS: &str = "TRACED_SLOTS";
    pub const CALL_SLOTS: &str = "CALL_SLOTS";
    pub const MARK_SLOTS: &str = "MARK_SLOTS";
    /// Global set at load time: ids below it have a slot in the `*_SLOTS` arrays.
    pub const ID_SLOTS: &str = "ID_SLOTS";
    pub const SYSCALLS: &str = "SYSCALLS";
    pub const WRAPPERS: &str = "WRAPPERS";
    /// Blocks tracked in the kernel that overflowed the block table (`BLOCK_SLOTS`).
    pub const LIVE_BLOCKS: &str = "LIVE_BLOCKS";
    /// The block table's slots (`BlockSlot`), and the global giving their number as a power of 2.
    pub const BLOCK_SLOTS: &str = "BLOCK_SLOTS";
    pub const BLOCK_SLOT_BITS: &str = "BLOCK_SLOT_BITS";
    /// Slot 0 set to 1 by the kernel once a block went to `LIVE_BLOCKS`, past the table.
    pub const BLOCKS_OVERFLOWED: &str = "BLOCKS_OVERFLOWED";
    /// `--sample-bytes`: blocks held in each group of `BLOCK_WINDOW` slots of the block table.
    pub const BLOCK_GROUPS: &str = "BLOCK_GROUPS";
    /// `--combined`: the stacks, by the hash of their frames.
    pub const STACKS: &str = "STACKS";
    /// `--combined`: what each (process, stack) allocated in all, per CPU (`TotalsSlot`), and
    /// the global giving the number of slots as a power of 2.
    pub const TOTALS_SLOTS: &str = "TOTALS_SLOTS";
    pub const TOTALS_SLOT_BITS: &str = "TOTALS_SLOT_BITS";
    /// `--sample-bytes`: exponentially distributed gaps (bytes) between samples, filled in by
    /// the agent; the kernel picks one at random after each sample.
    pub const SAMPLE_GAPS: &str = "SAMPLE_GAPS";
    /// `--sample-bytes`: bytes left before the next sample, per CPU.
    pub const SAMPLE_COUNTDOWN: &str = "SAMPLE_COUNTDOWN";

    /// Global set at load time: 1 for in-kernel aggregation (`--combined`).
    pub const COMBINED: &str = "COMBINED";
    /// Global set at load time: mean bytes between samples, 0 when every block is recorded.
    pub const SAMPLE_BYTES: &str = "SAMPLE_BYTES";
    /// Global set at load time: user stack frames captured per event.
    pub const STACK_DEPTH: &str = "STACK_DEPTH";
    /// Globals set at load time: blocks outside [MIN_SIZE, MAX_SIZE] are not recorded.
    pub const MIN_SIZE: &str = "MIN_SIZE";
    pub const MAX_SIZE: &str = "MAX_SIZE";

    /// Global set at load time: 1 when the probes are attached for every process and the
    /// `TRACED` map says which processes count (run mode following forks).
    /// Global set at load time: bytes waiting in `EVENTS` past which an event wakes the agent.
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
    pub const COUNTERS: &str = "COUNTERS";

    /// Slot 0 set to 1 once any operator delete is probed, so `free` must check marks.
    pub const OUTER_FREES: &str = "OUTER_FREES";

    /// `f(size)`: malloc, valloc, pvalloc, every operator new.
    pub const SIZE_ENTER: &str = "size_enter";
    /// `calloc(count, size)`.
    pub const CALLOC_ENTER: &str = "calloc_enter";
    /// `f(alignment, size)`: aligned_alloc, memalign.
    pub const ALIGNED_ENTER: &str = "aligned_enter";
    /// `realloc(ptr, size)`.
    pub const REALLOC_ENTER: &str = "realloc_enter";
    /// `reallocarray(ptr, count, size)`.
    pub const REALLOCARRAY_ENTER: &str = "reallocarray_enter";
    /// `posix_memalign(&ptr, alignment, size)`.
    pub const POSIX_MEMALIGN_ENTER: &str = "posix_memalign_enter";
    /// The return of every function above.
    pub const ALLOC_EXIT: &str = "alloc_exit";
    /// `free(ptr)`, the innermost release.
    pub const FREE_ENTER: &str = "free_enter";
    /// `operator delete(ptr, ...)`, every variant: a release that may call `free` itself.
    pub const DELETE_ENTER: &str = "delete_enter";

    /// perf-event programs on the software events for minor and major page faults.
    pub const FAULT_MINOR: &str = "fault_minor";
    pub const FAULT_MAJOR: &str = "fault_major";

    /// Empty programs for measuring the probes' own cost (`--empty-probes`).
    pub const FLOOR_ENTER: &str = "floor_enter";
    pub const FLOOR_EXIT: &str = "floor_exit";

    /// Entry and return of libc's mapping wrappers (mmap, mremap, shmat, brk, sbrk).
    pub const WRAPPER_ENTER: &str = "wrapper_enter";
    pub const WRAPPER_EXIT: &str = "wrapper_exit";

    /// `serve --exe`/`--cgroup`: the raw tracepoint `sched_process_exec` and the ring buffer
    /// of the process ids it sees exec.
    pub const PROCESS_EXEC: &str = "process_exec";
    pub const EXECS: &str = "EXECS";

    /// The stack walk after a return probe, reached by a tail call from `alloc_exit` and
    /// `wrapper_exit` through `RETURN_STACK_PROGRAM` (index 0), so that the verifier checks the
    /// walk once instead of once per probe. Loaded, never attached.
    pub const RETURN_STACK: &str = "return_stack";
    pub const RETURN_STACK_PROGRAM: &str = "RETURN_STACK_PROGRAM";

    /// Raw tracepoints for memory outside malloc (mmap, munmap, mremap, brk, shmat, shmdt):
    /// (program, tracepoint name).
    pub const SYSCALL_TRACEPOINTS: [(&str, &str); 2] = [("syscall_enter", "sys_enter"), ("syscall_exit", "sys_exit")];
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data with explicit padding fields; any bit pattern is valid.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::InFlight {}
    unsafe impl aya::Pod for super::FreeMark {}
    unsafe impl aya::Pod for super::SyscallArgs {}
    unsafe impl aya::Pod for super::WrapperCall {}
    unsafe impl aya::Pod for super::BlockKey {}
    unsafe impl aya::Pod for super::LiveBlock {}
    unsafe impl aya::Pod for super::StackKey {}
    unsafe impl aya::Pod for super::StackFrames {}
    unsafe impl aya::Pod for super::StackTotals {}
    unsafe impl aya::Pod for super::TotalsSlot {}
}

// The kernel writes these bytes and the agent reads them back: a field added, moved or
// resized on one side only must not compile.
const _: () = {
    assert!(size_of::<Event>() == 56);
    assert!(size_of::<EventWithStack>() == 56 + 8 * MAX_STACK_DEPTH);
    assert!(size_of::<InFlight>() == 40);
    assert!(size_of::<SyscallArgs>() == 40);
    assert!(size_of::<WrapperCall>() == 72);
    assert!(size_of::<FreeMark>() == 16);
    assert!(size_of::<BlockKey>() == 16);
    assert!(size_of::<LiveBlock>() == 16);
    assert!(size_of::<BlockSlot>() == 32);
    assert!(size_of::<StackKey>() == 16);
    assert!(size_of::<StackFrames>() == 8 + 8 * MAX_STACK_DEPTH);
    assert!(size_of::<StackTotals>() == 16);
    assert!(size_of::<TotalsSlot>() == 32);
    assert!(size_of::<StackSums>() == 32);
    // The agent maps the block table and reads a slot's address word atomically.
    assert!(core::mem::offset_of!(BlockSlot, addr) == 0);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_hash_is_fnv1a_over_the_frames_a_word_at_a_time() {
        assert_eq!(stack_hash(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stack_hash(&[0]), 0xcbf2_9ce4_8422_2325u64.wrapping_mul(0x0000_0100_0000_01b3));
        assert_ne!(stack_hash(&[1, 2]), stack_hash(&[2, 1]), "frame order matters");
    }

    #[test]
    fn neighbouring_blocks_get_neighbouring_home_slots() {
        let bits = 10;
        let home = home_slot(7, 0x5555_0000_1000, bits);
        assert_eq!(home_slot(7, 0x5555_0000_1008, bits), (home + 1) & table_mask(bits));
        assert_eq!(home_slot(7, 0x5555_0000_1010, bits), (home + 2) & table_mask(bits));
        // Another process's heap at the same address starts elsewhere.
        assert_ne!(home_slot(8, 0x5555_0000_1000, bits), home);
        for addr in (0..4096u64).map(|word| 0x7f00_0000_0000 + word * 8) {
            assert!(home_slot(1, addr, bits) <= table_mask(bits));
        }
    }

    #[test]
    fn table_sizes_are_clamped_to_what_an_array_index_holds() {
        assert_eq!(table_mask(0), 1);
        assert_eq!(table_mask(10), 1023);
        assert_eq!(table_mask(40), u32::MAX >> 1);
        for hash in [0, 1, u64::MAX, 0x1234_5678_9abc_def0] {
            assert!(totals_home(3, hash, 12) <= table_mask(12));
            assert!(totals_home(3, hash, 0) <= table_mask(0));
        }
    }

    #[test]
    fn only_pointer_like_words_unchanged_since_the_handout_are_the_allocators() {
        let heap = 0x5555_5555_9000u64;
        // A free-list link, an id, a link, nothing, a misaligned word, and three more.
        let words = [heap, 7, heap + 0x40, 0, heap + 3, heap + 0x80, 0x10, u64::MAX];
        let summary = handout::summarize(&words, 6);
        // Words 0, 2 and 5 looked like pointers; 6 and 7 are past the block (count 6).
        assert_eq!(summary.0 & 0xff, 0b0010_0101);
        assert!(handout::left_by_allocator(summary, 0, heap));
        assert!(handout::left_by_allocator(summary, 2, heap + 0x40));
        assert!(handout::left_by_allocator(summary, 5, heap + 0x80));
        // Overwritten by the program, with a pointer or anything else.
        assert!(!handout::left_by_allocator(summary, 0, heap + 0x10));
        assert!(!handout::left_by_allocator(summary, 5, 42));
        // Never pointer-like: always the program's to decide.
        assert!(!handout::left_by_allocator(summary, 1, 7));
        assert!(!handout::left_by_allocator(summary, 4, heap + 3));
        assert!(!handout::left_by_allocator(summary, handout::WORDS, heap));
    }
}
