//! Unwinding user stacks by call-frame information (CFI), the part both sides share.
//!
//! The agent turns each module's `.eh_frame` (and `.debug_frame`) into an unwind table: rows
//! sorted by address, each saying how to find the caller's frame from anywhere in its address
//! range (x86-64 only: CFA from RSP or RBP plus an offset, the return address at CFA - 8, the
//! caller's RBP unchanged or saved near the CFA). The kernel walks a stack with these tables;
//! the agent finishes a walk the kernel could not (code mapped after the agent last told the
//! kernel). Both apply the same [`step`] and search with the same [`find_row`] and
//! [`find_mapping`], so the host's unit tests exercise the kernel's exact logic.
//!
//! Everything here is plain `#[repr(C)]` data and `#[inline(always)]` functions without
//! allocation, usable in a BPF program.

/// One row of an unwind table: from `pc` (an offset from the table's `base`) up to the next
/// row's `pc`, how to find the caller.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindRow {
    pub pc: u32,
    /// Meaning depends on `cfa_kind` (see [`cfa_kind`]).
    pub cfa_offset: i32,
    /// With [`rbp_kind::AT_CFA_OFFSET`]: where the caller's RBP is saved, from the CFA.
    pub rbp_offset: i16,
    pub cfa_kind: u8,
    pub rbp_kind: u8,
}

const _: () = assert!(size_of::<UnwindRow>() == 12);

/// A BPF array keeps each value in a slot rounded up to 8 bytes: the kernel's arrays hold rows
/// and page-index entries two to a value, so that none of their memory is padding, and the
/// agent's shared mapping of each is a plain array of rows (of entries).
pub type RowPair = [UnwindRow; 2];
pub type PagePair = [u32; 2];

const _: () = assert!(size_of::<RowPair>().is_multiple_of(8) && size_of::<PagePair>().is_multiple_of(8));

/// How a row finds the canonical frame address (the caller's stack pointer: the return
/// address is the word just below it).
pub mod cfa_kind {
    /// CFA = RSP + `cfa_offset`.
    pub const RSP: u8 = 0;
    /// CFA = RBP + `cfa_offset`.
    pub const RBP: u8 = 1;
    /// A PLT stub (the linker's one CFA expression for a whole `.plt`): CFA = RSP + 8, plus 8
    /// once the pc's offset in its 16-byte stub is at least `cfa_offset` (the stub's second
    /// half, after its `push`).
    pub const PLT: u8 = 2;
    /// The outermost frame (`DW_CFA_undefined rip`: `_start`, `clone3`): the walk is complete.
    pub const END: u8 = 3;
    /// A rule this walker does not implement (another register, an expression): the walk
    /// stops here, truncated.
    pub const UNSUPPORTED: u8 = 4;
    /// No FDE covers this address: step by frame pointer, as in a module without a table.
    pub const NO_INFO: u8 = 5;
}

/// How a row finds the caller's RBP.
pub mod rbp_kind {
    /// RBP still holds the caller's value.
    pub const UNCHANGED: u8 = 0;
    /// Saved at CFA + `rbp_offset`.
    pub const AT_CFA_OFFSET: u8 = 1;
    /// Not recoverable by this walker (kept in another register, or by an expression): the
    /// walk goes on with RBP unknown (0), and a later frame that needs it ends truncated.
    pub const LOST: u8 = 2;
}

/// One module's rows and page index within the kernel's global arrays (`UNWIND_ROWS`,
/// `UNWIND_PAGES`), indexed by table id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindTable {
    /// The ELF virtual address of the table's first row; rows and pages count from here.
    pub base: u64,
    /// Index of the first row in `UNWIND_ROWS`; the table has `rows` of them. The last row is
    /// always a [`cfa_kind::NO_INFO`] row at the end of the last FDE.
    pub first_row: u32,
    pub rows: u32,
    /// Index of the first page entry in `UNWIND_PAGES`; the table has `pages` of them. Entry
    /// `p` is the index (within this table) of the row covering `base + p * PAGE_SIZE`; the one
    /// after the last page is `rows - 1`, so that entries `p` and `p + 1` bound the search.
    pub first_page: u32,
    pub pages: u32,
}

/// Bytes of code one page-index entry covers, as a power of two: 256 bytes, a handful of rows
/// (Debian's libc has one every 50 bytes), so that a search takes two or three halvings. Four
/// bytes of index per 256 bytes of code cost about a fifteenth of the rows' memory; 4 KiB
/// pages cost a sixteenth of that but about 14 ns more per frame (`--program-stats`).
pub const UNWIND_PAGE_SHIFT: u32 = 8;

/// A row search within one page's bounds takes at most this many halvings. Rows start at
/// distinct addresses (the agent's tables are strictly increasing), so a page's bounds hold at
/// most its 256 bytes' rows and the row before: 257 < 2^9. (Every step costs the verifier a
/// little in every program that walks, so no more than needed.)
pub const ROW_SEARCH_STEPS: u32 = UNWIND_PAGE_SHIFT + 1;

/// `ExecMapping::table` of a mapping without a table: its frames are stepped by frame pointer.
pub const NO_TABLE: u32 = u32::MAX;

/// `ExecMapping::table` of a mapping without a table whose frames are not to be stepped at all
/// (`--unwind tables`): the walk places the frame and ends there, truncated.
pub const UNWALKABLE: u32 = u32::MAX - 1;

/// One executable mapping of a process, as the kernel's walk sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecMapping {
    pub start: u64,
    pub end: u64,
    /// Subtracted from a pc in the mapping to get the ELF virtual address the table uses.
    pub bias: u64,
    /// Index in `UNWIND_TABLES`, or [`NO_TABLE`].
    pub table: u32,
    pub _padding: u32,
}

/// Executable mappings kept per process (a power of two: the kernel masks indexes with it).
pub const MAX_EXEC_MAPPINGS: usize = 512;

/// Halvings that find any of [`MAX_EXEC_MAPPINGS`] mappings.
pub const MAPPING_SEARCH_STEPS: u32 = 10;

const _: () = assert!(MAX_EXEC_MAPPINGS.is_power_of_two() && 1 << (MAPPING_SEARCH_STEPS - 1) >= MAX_EXEC_MAPPINGS);

/// A process's executable mappings, sorted by start, the value of `UNWIND_PROCESSES` (by
/// process id).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessMappings {
    /// Entries of `mappings` in use.
    pub count: u32,
    pub _padding: u32,
    /// The executable mmaps (`EXEC_MMAPS`'s count for this process) these mappings include.
    /// When a pc is in no mapping while the kernel has counted more, the code may have been
    /// mapped after the agent last wrote this: the kernel hands the rest of the walk to the
    /// agent instead of giving up.
    pub exec_mmaps_applied: u64,
    pub mappings: [ExecMapping; MAX_EXEC_MAPPINGS],
}

/// The registers a walk follows from frame to frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registers {
    pub pc: u64,
    pub sp: u64,
    pub bp: u64,
}

/// What one step of a walk found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The caller's registers: its pc is a return address.
    Caller(Registers),
    /// This frame is the outermost: the stack is complete.
    End,
    /// The caller cannot be found (an unsupported rule, an unreadable or implausible stack):
    /// the stack is cut here.
    Truncated,
}

/// The largest frame a step accepts: the default stack limit (8 MiB). A CFA or frame pointer
/// further above the stack pointer is taken for garbage rather than followed.
pub const MAX_FRAME_SIZE: u64 = 8 << 20;

/// The traced process's memory as a walk reads it: the kernel's reads of user memory, or the
/// agent's copy of a stack.
pub trait UserMemory {
    /// The word at `address`; `None` when it cannot be read.
    fn word(&mut self, address: u64) -> Option<u64>;
    /// The two words from `address` on, in one read (a read costs the kernel more than the
    /// bytes it copies).
    fn pair(&mut self, address: u64) -> Option<[u64; 2]>;
}

/// Applies `row` (the row covering `regs.pc`, or its byte before for a return address) to
/// find the caller, reading the stack from `memory`.
#[inline(always)]
pub fn step(row: &UnwindRow, regs: Registers, memory: &mut impl UserMemory) -> Step {
    let offset = row.cfa_offset as i64 as u64;
    let cfa = match row.cfa_kind {
        cfa_kind::RSP => regs.sp.wrapping_add(offset),
        cfa_kind::RBP => regs.bp.wrapping_add(offset),
        cfa_kind::PLT => {
            let pushed = if regs.pc & 15 >= offset { 8 } else { 0 };
            regs.sp.wrapping_add(8 + pushed)
        }
        cfa_kind::END => return Step::End,
        cfa_kind::NO_INFO => return frame_pointer_step(regs, memory),
        _ => return Step::Truncated,
    };
    caller_at(cfa, row, regs, memory)
}

/// The caller's registers given this frame's CFA.
#[inline(always)]
fn caller_at(cfa: u64, row: &UnwindRow, regs: Registers, memory: &mut impl UserMemory) -> Step {
    // The caller's frame lies above this one, and holds at least the return address.
    if cfa <= regs.sp || cfa - regs.sp > MAX_FRAME_SIZE {
        return Step::Truncated;
    }
    let saved_bp_at = cfa.wrapping_add(row.rbp_offset as i64 as u64);
    let (return_address, bp) = match row.rbp_kind {
        // The usual prologue pushes RBP first: it lies just below the return address, and one
        // read takes both.
        rbp_kind::AT_CFA_OFFSET if row.rbp_offset == -16 => match memory.pair(cfa - 16) {
            Some([bp, return_address]) => (return_address, bp),
            None => return Step::Truncated,
        },
        kind => {
            let Some(return_address) = memory.word(cfa - 8) else { return Step::Truncated };
            let bp = match kind {
                rbp_kind::UNCHANGED => regs.bp,
                rbp_kind::AT_CFA_OFFSET => match memory.word(saved_bp_at) {
                    Some(bp) => bp,
                    None => return Step::Truncated,
                },
                _ => 0,
            };
            (return_address, bp)
        }
    };
    if return_address == 0 {
        return Step::End;
    }
    Step::Caller(Registers { pc: return_address, sp: cfa, bp })
}

/// Steps by frame pointer: RBP points at the saved RBP, the return address above it. A frame
/// pointer of 0 marks the outermost frame (the x86-64 ABI has `_start` clear it).
#[inline(always)]
pub fn frame_pointer_step(regs: Registers, memory: &mut impl UserMemory) -> Step {
    let frame = regs.bp;
    if frame == 0 {
        return Step::End;
    }
    if frame < regs.sp || frame - regs.sp > MAX_FRAME_SIZE || !frame.is_multiple_of(8) {
        return Step::Truncated;
    }
    let Some([bp, return_address]) = memory.pair(frame) else { return Step::Truncated };
    if return_address == 0 {
        return Step::End;
    }
    Step::Caller(Registers { pc: return_address, sp: frame + 16, bp })
}

/// Steps from a frame in `mapping`: by its table's row for the pc (`row_for(table, address)`
/// finds the row covering an ELF virtual address; `None` when it cannot), by frame pointer
/// when it has no table. `return_address`: the pc is a return address, whose call is the byte
/// before (a call may be its function's last instruction, followed by another function).
#[inline(always)]
pub fn step_frame(
    mapping: &ExecMapping,
    regs: Registers,
    return_address: bool,
    row_for: impl FnOnce(u32, u64) -> Option<UnwindRow>,
    memory: &mut impl UserMemory,
) -> Step {
    if mapping.table == NO_TABLE {
        return frame_pointer_step(regs, memory);
    }
    let address = regs.pc.wrapping_sub(u64::from(return_address)).wrapping_sub(mapping.bias);
    match row_for(mapping.table, address) {
        Some(row) => step(&row, regs, memory),
        None => Step::Truncated,
    }
}

/// The row of `table` covering ELF virtual address `address`, given its page index and rows
/// through `page_at` and `row_at` (table-local indexes). Below the table's first row there is
/// no information, as between FDEs. `None` when the table is inconsistent.
#[inline(always)]
pub fn row_for(
    table: &UnwindTable,
    address: u64,
    page_at: impl FnMut(u32) -> Option<u32>,
    mut row_at: impl FnMut(u32) -> Option<UnwindRow>,
) -> Option<UnwindRow> {
    let Some(offset) = address.checked_sub(table.base) else {
        return Some(UnwindRow { cfa_kind: cfa_kind::NO_INFO, ..UnwindRow::default() });
    };
    let index = find_row(table, offset, page_at, |index| row_at(index).map(|row| row.pc))?;
    row_at(index)
}

/// The index (within its table) of the row covering `offset` (an address minus the table's
/// base), given the table's page index and rows through `page_at` and `row_pc_at` (table-local
/// indexes; `None` when out of bounds). `None` when the table does not cover the address or is
/// inconsistent.
#[inline(always)]
pub fn find_row(
    table: &UnwindTable,
    offset: u64,
    mut page_at: impl FnMut(u32) -> Option<u32>,
    mut row_pc_at: impl FnMut(u32) -> Option<u32>,
) -> Option<u32> {
    if table.rows == 0 || table.pages < 2 {
        return None;
    }
    let page = offset >> UNWIND_PAGE_SHIFT;
    // Past the last page: the last row (no information) covers everything beyond.
    if page >= u64::from(table.pages - 1) {
        return Some(table.rows - 1);
    }
    let page = page as u32;
    let (mut low, mut high) = (page_at(page)?, page_at(page + 1)?);
    if low > high || high >= table.rows {
        return None;
    }
    let offset = offset as u32; // below the last page, so within u32
    // The last row at or before `offset`: `low` always qualifies, the answer is in [low, high].
    for _ in 0..ROW_SEARCH_STEPS {
        if low >= high {
            return Some(low);
        }
        let middle = low + (high - low).div_ceil(2);
        if row_pc_at(middle)? <= offset {
            low = middle;
        } else {
            high = middle - 1;
        }
    }
    (low >= high).then_some(low)
}

/// The index of the mapping containing `pc` among `count` mappings sorted by start, given
/// their bounds through `bounds_at` (`None` when out of bounds).
#[inline(always)]
pub fn find_mapping(count: u32, pc: u64, mut bounds_at: impl FnMut(u32) -> Option<(u64, u64)>) -> Option<u32> {
    let count = count.min(MAX_EXEC_MAPPINGS as u32);
    if count == 0 {
        return None;
    }
    // The last mapping starting at or before `pc`, then whether it reaches `pc`.
    let (mut low, mut high) = (0u32, count - 1);
    for _ in 0..MAPPING_SEARCH_STEPS {
        if low >= high {
            break;
        }
        let middle = low + (high - low).div_ceil(2);
        if bounds_at(middle)?.0 <= pc {
            low = middle;
        } else {
            high = middle - 1;
        }
    }
    let (start, end) = bounds_at(low)?;
    (start <= pc && pc < end).then_some(low)
}

/// Bits of [`crate::Event::flags`] about the stack that follows an event (apart from the
/// [`crate::mapping`] and [`crate::fault`] bits, which stay below them).
pub mod stack_flags {
    /// The walk stopped before the outermost frame: frames are missing below the last one.
    pub const TRUNCATED: u32 = 1 << 16;
    /// The kernel met code it had no mapping for while the agent had executable mmaps of the
    /// process still to apply: the record carries a [`super::StackCopy`] after all
    /// `MAX_STACK_DEPTH` frame slots, and the agent finishes the walk.
    pub const COPY_FOLLOWS: u32 = 1 << 17;
    pub const ALL: u32 = TRUNCATED | COPY_FOLLOWS;
}

/// Bytes of user stack the kernel copies for the agent to finish a walk.
pub const STACK_COPY_BYTES: usize = 8192;

/// The kernel copies the stack in pieces of this size, aligned, so that no piece but one past
/// the stack's end fails.
pub const STACK_COPY_PIECE: usize = 512;

/// Where the kernel's walk stopped and the stack above it, for the agent to finish the walk.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StackCopy {
    /// The registers at the frame the kernel could not place (its pc is not yet in the
    /// frames).
    pub pc: u64,
    pub sp: u64,
    pub bp: u64,
    /// The user address of `bytes[0]` (sp rounded down to a piece), and how many were read.
    pub base: u64,
    pub length: u32,
    /// 1 when `pc` is a return address (every frame but a probe's or fault's first).
    pub return_address: u32,
    pub bytes: [u8; STACK_COPY_BYTES],
}

/// A ring-buffer record whose walk the agent finishes: the event, every frame slot (the first
/// `event.stack_id` hold the frames the kernel placed), then the copy.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EventWithCopy {
    pub event: crate::Event,
    pub frames: [u64; crate::MAX_STACK_DEPTH],
    pub copy: StackCopy,
}

/// `--combined`: this bit of `StackFrames::depth` marks a truncated stack (its hash differs
/// from the same frames complete, see [`combined_hash`]).
pub const COMBINED_TRUNCATED: u64 = 1 << 32;

/// `--combined`: the hash a stack is kept under, telling a truncated walk from a complete one
/// with the same frames.
#[inline(always)]
pub fn combined_hash(frames: &[u64], truncated: bool) -> u64 {
    let hash = crate::stack_hash(frames);
    if truncated { hash ^ 0x7472_756e_6361_7465 } else { hash }
}

impl StackCopy {
    /// The word at user address `address`, if the copy holds it.
    pub fn read(&self, address: u64) -> Option<u64> {
        let start = usize::try_from(address.checked_sub(self.base)?).ok()?;
        let end = start.checked_add(8)?;
        let length = (self.length as usize).min(STACK_COPY_BYTES);
        if end > length {
            return None;
        }
        let bytes = self.bytes.get(start..end)?;
        Some(u64::from_ne_bytes(bytes.try_into().ok()?))
    }
}

impl UserMemory for &StackCopy {
    fn word(&mut self, address: u64) -> Option<u64> {
        self.read(address)
    }

    fn pair(&mut self, address: u64) -> Option<[u64; 2]> {
        Some([self.read(address)?, self.read(address.checked_add(8)?)?])
    }
}

/// What the walk by unwind tables counts, per CPU; indexes into `UNWIND_COUNTERS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnwindCounter {
    /// Stacks the kernel walked by unwind tables.
    Walks = 0,
    /// Of those, stacks cut short (sent with [`stack_flags::TRUNCATED`]).
    Truncated = 1,
    /// Stacks handed to the agent to finish ([`stack_flags::COPY_FOLLOWS`]).
    HandedToAgent = 2,
    /// Frames stepped by a table row.
    TableSteps = 3,
    /// Frames stepped by frame pointer (no table for the module, or no row for the address).
    FramePointerSteps = 4,
}

impl UnwindCounter {
    pub const ALL: [UnwindCounter; 5] = [
        UnwindCounter::Walks,
        UnwindCounter::Truncated,
        UnwindCounter::HandedToAgent,
        UnwindCounter::TableSteps,
        UnwindCounter::FramePointerSteps,
    ];
}

/// Map and global names of the walk by unwind tables.
pub mod names {
    /// Global set at load time: 0 walks by frame pointer only (`--unwind fp`), 1 by tables.
    pub const UNWIND_MODE: &str = "UNWIND_MODE";
    /// Every table's rows (`UnwindRow`), one after another; sized from `--unwind-memory`.
    pub const UNWIND_ROWS: &str = "UNWIND_ROWS";
    /// Every table's page index (`u32` row indexes), one after another.
    pub const UNWIND_PAGES: &str = "UNWIND_PAGES";
    /// Each table's place in the two arrays above (`UnwindTable`), by table id.
    pub const UNWIND_TABLES: &str = "UNWIND_TABLES";
    /// Each traced process's executable mappings (`ProcessMappings`), by process id.
    pub const UNWIND_PROCESSES: &str = "UNWIND_PROCESSES";
    /// Executable mmaps each traced process made (`u32`), by process id.
    pub const EXEC_MMAPS: &str = "EXEC_MMAPS";
    /// `UnwindCounter`s, per CPU.
    pub const UNWIND_COUNTERS: &str = "UNWIND_COUNTERS";
    /// `run` mode: the threads the loader program stopped (`u8`), by thread id.
    pub const LOADER_STOPS: &str = "LOADER_STOPS";
    /// `run` mode: the uprobe on the dynamic loader's `_dl_debug_state`.
    pub const LOADER_MAPPED: &str = "loader_mapped";
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data with explicit padding fields; any bit pattern is valid.
    unsafe impl aya::Pod for super::UnwindRow {}
    unsafe impl aya::Pod for super::UnwindTable {}
    unsafe impl aya::Pod for super::ExecMapping {}
    unsafe impl aya::Pod for super::ProcessMappings {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    fn row(pc: u32, cfa_kind: u8, cfa_offset: i32, rbp_kind: u8, rbp_offset: i16) -> UnwindRow {
        UnwindRow { pc, cfa_offset, rbp_offset, cfa_kind, rbp_kind }
    }

    /// A user stack as words at addresses; every other read fails.
    struct Words<'a>(&'a [(u64, u64)]);

    impl UserMemory for Words<'_> {
        fn word(&mut self, address: u64) -> Option<u64> {
            self.0.iter().find(|(at, _)| *at == address).map(|(_, word)| *word)
        }

        fn pair(&mut self, address: u64) -> Option<[u64; 2]> {
            Some([self.word(address)?, self.word(address + 8)?])
        }
    }

    /// Memory where every word reads as `value`.
    struct Every(Option<u64>);

    impl UserMemory for Every {
        fn word(&mut self, _: u64) -> Option<u64> {
            self.0
        }

        fn pair(&mut self, _: u64) -> Option<[u64; 2]> {
            self.0.map(|value| [value, value])
        }
    }

    fn memory<'a>(words: &'a [(u64, u64)]) -> Words<'a> {
        Words(words)
    }

    #[test]
    fn rsp_rule_finds_the_return_address_below_the_cfa() {
        let regs = Registers { pc: 0x1000, sp: 0x7000, bp: 0x55 };
        let words = [(0x7018, 0x4242)];
        let step = step(&row(0, cfa_kind::RSP, 0x20, rbp_kind::UNCHANGED, 0), regs, &mut memory(&words));
        assert_eq!(step, Step::Caller(Registers { pc: 0x4242, sp: 0x7020, bp: 0x55 }));
    }

    #[test]
    fn rbp_rule_restores_the_saved_rbp() {
        // push rbp; mov rbp, rsp: CFA = rbp + 16, rbp saved at CFA - 16.
        let regs = Registers { pc: 0x1000, sp: 0x6f00, bp: 0x7000 };
        let words = [(0x7008, 0x4242), (0x7000, 0x7100)];
        let step = step(&row(0, cfa_kind::RBP, 16, rbp_kind::AT_CFA_OFFSET, -16), regs, &mut memory(&words));
        assert_eq!(step, Step::Caller(Registers { pc: 0x4242, sp: 0x7010, bp: 0x7100 }));
    }

    #[test]
    fn plt_rule_depends_on_the_position_in_the_stub() {
        let words = [(0x7000, 0x1111), (0x7008, 0x2222)];
        let plt = row(0, cfa_kind::PLT, 11, rbp_kind::UNCHANGED, 0);
        let before_push = Registers { pc: 0x1026, sp: 0x7000, bp: 0 };
        assert_eq!(
            step(&plt, before_push, &mut memory(&words)),
            Step::Caller(Registers { pc: 0x1111, sp: 0x7008, bp: 0 })
        );
        let after_push = Registers { pc: 0x102b, ..before_push };
        assert_eq!(
            step(&plt, after_push, &mut memory(&words)),
            Step::Caller(Registers { pc: 0x2222, sp: 0x7010, bp: 0 })
        );
    }

    #[test]
    fn walks_end_cleanly_or_truncated_and_never_go_down() {
        let regs = Registers { pc: 0x1000, sp: 0x7000, bp: 0 };
        assert_eq!(step(&row(0, cfa_kind::END, 0, 0, 0), regs, &mut Every(None)), Step::End);
        assert_eq!(step(&row(0, cfa_kind::UNSUPPORTED, 0, 0, 0), regs, &mut Every(None)), Step::Truncated);
        // An unreadable return address, a CFA not above sp, a zero return address.
        assert_eq!(step(&row(0, cfa_kind::RSP, 8, 0, 0), regs, &mut Every(None)), Step::Truncated);
        assert_eq!(step(&row(0, cfa_kind::RSP, 0, 0, 0), regs, &mut Every(Some(1))), Step::Truncated);
        assert_eq!(step(&row(0, cfa_kind::RSP, -8, 0, 0), regs, &mut Every(Some(1))), Step::Truncated);
        assert_eq!(step(&row(0, cfa_kind::RSP, 8, 0, 0), regs, &mut Every(Some(0))), Step::End);
        // RBP-based with RBP lost: CFA = 0 + 16, below sp.
        assert_eq!(step(&row(0, cfa_kind::RBP, 16, 0, 0), regs, &mut Every(Some(1))), Step::Truncated);
        let lost = step(&row(0, cfa_kind::RSP, 8, rbp_kind::LOST, 0), Registers { bp: 9, ..regs }, &mut Every(Some(1)));
        assert_eq!(lost, Step::Caller(Registers { pc: 1, sp: 0x7008, bp: 0 }));
    }

    #[test]
    fn frame_pointer_steps_follow_the_chain_and_end_at_zero() {
        let words = [(0x7100, 0), (0x7108, 0x4242)];
        let regs = Registers { pc: 0x1000, sp: 0x7000, bp: 0x7100 };
        let caller = frame_pointer_step(regs, &mut memory(&words));
        assert_eq!(caller, Step::Caller(Registers { pc: 0x4242, sp: 0x7110, bp: 0 }));
        let Step::Caller(caller) = caller else { unreachable!() };
        assert_eq!(frame_pointer_step(caller, &mut memory(&words)), Step::End);
        // Below sp, misaligned, too far: garbage.
        assert_eq!(frame_pointer_step(Registers { bp: 0x6ff0, ..regs }, &mut memory(&words)), Step::Truncated);
        assert_eq!(frame_pointer_step(Registers { bp: 0x7104, ..regs }, &mut memory(&words)), Step::Truncated);
        assert_eq!(
            frame_pointer_step(Registers { bp: 0x7000 + (9 << 20), ..regs }, &mut Every(Some(1))),
            Step::Truncated
        );
        // A no-information row steps the same way.
        assert_eq!(
            step(&row(0, cfa_kind::NO_INFO, 0, 0, 0), regs, &mut memory(&words)),
            Step::Caller(Registers { pc: 0x4242, sp: 0x7110, bp: 0 })
        );
    }

    #[test]
    fn a_frame_is_looked_up_by_its_call_and_its_module_bias() {
        let words = [(0x7008, 0x4242)];
        let regs = Registers { pc: 0x5000_1050, sp: 0x7000, bp: 0 };
        let mapping = ExecMapping { start: 0x5000_0000, end: 0x5001_0000, bias: 0x5000_0000, table: 3, _padding: 0 };
        let mut asked = None;
        let row_for = |table, address| {
            asked = Some((table, address));
            Some(row(0, cfa_kind::RSP, 16, rbp_kind::UNCHANGED, 0))
        };
        let stepped = step_frame(&mapping, regs, true, row_for, &mut memory(&words));
        assert_eq!(stepped, Step::Caller(Registers { pc: 0x4242, sp: 0x7010, bp: 0 }));
        // A return address: the row of the call before it, at its ELF address.
        assert_eq!(asked, Some((3, 0x104f)));
        // No row (an inconsistent table): cut; no table: by frame pointer.
        assert_eq!(step_frame(&mapping, regs, false, |_, _| None, &mut memory(&words)), Step::Truncated);
        let without = ExecMapping { table: NO_TABLE, ..mapping };
        assert_eq!(step_frame(&without, regs, true, |_, _| None, &mut memory(&words)), Step::End);
    }

    /// A table of rows at the given pcs and its page index, built as the agent builds them.
    fn table(pcs: &[u32]) -> (UnwindTable, Vec<u32>) {
        let last = *pcs.last().unwrap();
        let pages: Vec<u32> = (0..=(last >> UNWIND_PAGE_SHIFT) + 1)
            .map(|page| {
                let start = page.checked_shl(UNWIND_PAGE_SHIFT).unwrap_or(u32::MAX);
                pcs.iter().rposition(|&pc| pc <= start).unwrap_or(0) as u32
            })
            .map(|index| index.min(pcs.len() as u32 - 1))
            .collect();
        let table = UnwindTable {
            base: 0x40_0000,
            first_row: 0,
            rows: pcs.len() as u32,
            first_page: 0,
            pages: pages.len() as u32,
        };
        (table, pages)
    }

    #[test]
    fn rows_are_found_by_page_then_halving() {
        let pcs = [0, 4, 9, 0x1000, 0x1003, 0x2ff0, 0x3001, 0x5000];
        let (table, pages) = table(&pcs);
        let find = |offset: u64| {
            find_row(&table, offset, |page| pages.get(page as usize).copied(), |index| pcs.get(index as usize).copied())
        };
        for offset in 0..0x5100u64 {
            let expected = pcs.iter().rposition(|&pc| u64::from(pc) <= offset).unwrap() as u32;
            assert_eq!(find(offset), Some(expected), "offset {offset:#x}");
        }
        assert_eq!(find(1 << 40), Some(7));
        // Below the table's base there is no information.
        let rows: Vec<UnwindRow> = pcs.iter().map(|&pc| row(pc, cfa_kind::RSP, 8, rbp_kind::UNCHANGED, 0)).collect();
        let found = |address| {
            row_for(
                &table,
                address,
                |page| pages.get(page as usize).copied(),
                |index| rows.get(index as usize).copied(),
            )
        };
        assert_eq!(found(table.base - 1).map(|row| row.cfa_kind), Some(cfa_kind::NO_INFO));
        assert_eq!(found(table.base + 0x1001).map(|row| row.pc), Some(0x1000));
        // A page index pointing outside the rows, or rows that cannot be read, find nothing
        // rather than a wrong row.
        let broken = |offset: u64| find_row(&table, offset, |_| Some(1000), |index| pcs.get(index as usize).copied());
        assert_eq!(broken(0x1000), None);
        let broken = |offset: u64| find_row(&table, offset, |page| Some(page * 2), |_| None);
        assert_eq!(broken(0x1000), None);
    }

    #[test]
    fn mappings_are_found_by_halving() {
        let mappings = [(0x1000u64, 0x2000u64), (0x2000, 0x3000), (0x5000, 0x6000)];
        let find = |pc| find_mapping(3, pc, |index| mappings.get(index as usize).copied());
        assert_eq!(find(0xfff), None);
        assert_eq!(find(0x1000), Some(0));
        assert_eq!(find(0x2fff), Some(1));
        assert_eq!(find(0x3000), None);
        assert_eq!(find(0x5fff), Some(2));
        assert_eq!(find(0x6000), None);
        assert_eq!(find_mapping(0, 0x1000, |_| None), None);
    }

    #[test]
    fn a_stack_copy_reads_only_what_it_holds() {
        let mut copy = StackCopy {
            pc: 0,
            sp: 0,
            bp: 0,
            base: 0x7000,
            length: 16,
            return_address: 1,
            bytes: [0; STACK_COPY_BYTES],
        };
        copy.bytes[8..16].copy_from_slice(&0x4242u64.to_ne_bytes());
        assert_eq!(copy.read(0x7008), Some(0x4242));
        assert_eq!(copy.read(0x7009), None);
        assert_eq!(copy.read(0x6ff8), None);
        assert_eq!(copy.read(u64::MAX), None);
    }
}
