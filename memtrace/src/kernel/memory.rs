//! How big memtrace's kernel maps are made, and how much kernel memory they take, worked out
//! before any is created: a size option can ask for more memory than the machine has (the
//! kernel then allocates until its OOM killer fires), so memtrace refuses, naming the option to
//! lower, when the maps would not fit in what `/proc/meminfo` calls available.
use memtrace_common::{
    BlockKey, BlockSlot, EventWithStack, FreeMark, InFlight, LiveBlock, StackFrames, SyscallArgs, TotalsSlot,
    WrapperCall,
    unwind::{PagePair, RowPair, UnwindTable},
};
use thiserror::Error;

use crate::{kernel::ProbeSettings, untrusted::group_digits};

/// The largest ring buffer (`--ring-buffer-size`): 1 GiB.
pub const MAX_RING_BUFFER_BYTES: u32 = 1 << 30;

/// The sizes the agent gives the kernel's maps for one set of settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSizes {
    /// The ring buffer: a power-of-two number of pages.
    pub ring_bytes: u32,
    /// Entries of the stack table (one when not `--combined`).
    pub stack_slots: u32,
    /// log2 of each CPU's per-stack totals slots.
    pub totals_slot_bits: u32,
    /// Entries of the overflow map of blocks (one when no block is tracked in the kernel).
    pub live_blocks: u32,
    /// log2 of the block table's slots.
    pub block_slot_bits: u32,
    /// Groups of the block table counted when sampling.
    pub block_groups: u32,
    /// Ids with a slot in the per-id arrays (0: none, the arrays keep one unused entry).
    pub id_slots: u32,
    /// The unwind tables' arrays (`--unwind-memory`; one entry each with `--unwind fp`).
    pub unwind: crate::unwind::Capacity,
}

impl MapSizes {
    pub fn of(settings: &ProbeSettings) -> Self {
        // A ring buffer must be a power-of-two number of pages.
        let ring_bytes = settings.ring_buffer_bytes.clamp(4096, MAX_RING_BUFFER_BYTES).next_power_of_two();
        // The stack table's slots are allocated up front (a kilobyte each): one when unused.
        // Each CPU's totals table has twice as many (32 bytes each).
        let stack_slots = if settings.combined { settings.stack_slots.max(1) } else { 1 };
        // So is the block table, twice the blocks it should hold (32 bytes a slot, see
        // `table_bits`); its overflow map allocates entries only when used.
        let tracks_blocks = settings.combined || settings.sample_bytes != 0;
        let live_blocks = if tracks_blocks { settings.live_blocks.max(1) } else { 1 };
        let block_slot_bits = if tracks_blocks { table_bits(live_blocks) } else { 1 };
        // Sampling counts the blocks in each group of a window's length (8 bytes a group).
        let block_groups = if settings.sample_bytes != 0 {
            ((1u32 << block_slot_bits) / memtrace_common::BLOCK_WINDOW).max(1)
        } else {
            1
        };
        Self {
            ring_bytes,
            stack_slots,
            totals_slot_bits: table_bits(stack_slots),
            live_blocks,
            block_slot_bits,
            block_groups,
            id_slots: settings.id_slots.unwrap_or_else(super::id_slots),
            unwind: settings.unwind_capacity,
        }
    }

    /// The kernel memory each group of maps takes at most, with the option that sizes it.
    pub fn footprint(&self, cpus: u64) -> Vec<Part> {
        let sized = |option: &'static str, what: &'static str, bytes: u64| Part { option: Some(option), what, bytes };
        let id_slots = u64::from(self.id_slots.max(1));
        let totals_slots = 1u64 << self.totals_slot_bits;
        let block_slots = 1u64 << self.block_slot_bits;
        let fixed = [
            hash(16 * 1024, 8, size_of::<SyscallArgs>()),
            hash(16 * 1024, 8, size_of::<WrapperCall>()),
            hash(16 * 1024, 8, size_of::<InFlight>()),
            hash(16 * 1024, 8, size_of::<FreeMark>()),
            hash(64 * 1024, 4, 1),
            per_cpu_array(1, size_of::<EventWithStack>(), cpus),
            per_cpu_array(1, size_of::<StackFrames>(), cpus),
            per_cpu_array(16, 8, cpus),
            array(u64::from(memtrace_common::SAMPLE_GAPS), 8),
        ];
        vec![
            sized("--ring-buffer-size", "the ring buffer", u64::from(self.ring_bytes)),
            sized(
                "--stack-slots",
                "the stack table and its per-CPU totals",
                hash(u64::from(self.stack_slots), 8, size_of::<StackFrames>()).saturating_add(per_cpu_array(
                    totals_slots,
                    size_of::<TotalsSlot>(),
                    cpus,
                )),
            ),
            sized(
                "--live-blocks",
                "the block table and its overflow map",
                array(block_slots, size_of::<BlockSlot>())
                    .saturating_add(hash(u64::from(self.live_blocks), size_of::<BlockKey>(), size_of::<LiveBlock>()))
                    .saturating_add(array(u64::from(self.block_groups), 8)),
            ),
            sized(
                "--id-slots",
                "the per-thread arrays",
                array(id_slots, 1)
                    .saturating_add(array(id_slots, size_of::<InFlight>()))
                    .saturating_add(array(id_slots, size_of::<FreeMark>())),
            ),
            sized(
                "--unwind-memory",
                "the unwind tables",
                array(u64::from(self.unwind.row_pairs), size_of::<RowPair>())
                    .saturating_add(array(u64::from(self.unwind.page_pairs), size_of::<PagePair>()))
                    .saturating_add(array(u64::from(self.unwind.tables), size_of::<UnwindTable>())),
            ),
            Part { option: None, what: "the other maps", bytes: fixed.into_iter().fold(0, u64::saturating_add) },
        ]
    }
}

/// The size of an open-addressed kernel table (the block table, the per-stack totals) for
/// `entries` entries, as a power of two: at least twice as many slots, so that an entry nearly
/// always finds room within its window (half full, linear probing places one a slot or two
/// from home on average).
pub fn table_bits(entries: u32) -> u32 {
    (u64::from(entries) * 2).next_power_of_two().trailing_zeros().clamp(1, 31)
}

/// Part of the maps' memory, and the option that sizes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub option: Option<&'static str>,
    pub what: &'static str,
    pub bytes: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "the kernel maps memtrace needs would take about {} of memory, more than the {} available (MemAvailable in /proc/meminfo): {}",
    mebibytes(*total),
    group_digits(*available >> 20) + " MiB",
    advice(largest)
)]
pub struct TooLarge {
    pub total: u64,
    pub available: u64,
    pub largest: Part,
}

fn advice(largest: &Part) -> String {
    match largest.option {
        Some(option) => format!("lower {option} ({} alone take {})", largest.what, mebibytes(largest.bytes)),
        None => "free some memory first".to_owned(),
    }
}

/// Refuses maps that would take more than `available` bytes.
pub fn check(parts: &[Part], available: u64) -> Result<(), TooLarge> {
    let total = parts.iter().map(|part| part.bytes).fold(0, u64::saturating_add);
    if total <= available {
        return Ok(());
    }
    let largest =
        parts.iter().max_by_key(|part| part.bytes).cloned().unwrap_or(Part { option: None, what: "", bytes: 0 });
    Err(TooLarge { total, available, largest })
}

/// `MemAvailable` from /proc/meminfo, in bytes.
pub fn mem_available() -> Option<u64> {
    use procfs::Current;
    // procfs gives the figure in bytes (None on kernels before 3.14, which memtrace refuses).
    procfs::Meminfo::current().ok()?.mem_available
}

/// Whole mebibytes, rounded up (what is needed is not understated), grouped: "1,025 MiB".
fn mebibytes(bytes: u64) -> String {
    format!("{} MiB", group_digits(bytes.div_ceil(1 << 20)))
}

fn round8(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(8) * 8
}

/// A hash map's elements (the kernel's per-element header is about 48 bytes) and buckets.
fn hash(entries: u64, key: usize, value: usize) -> u64 {
    let element = 48 + round8(key) + round8(value);
    entries
        .saturating_mul(element)
        .saturating_add(entries.checked_next_power_of_two().unwrap_or(u64::MAX).saturating_mul(16))
}

fn array(entries: u64, value: usize) -> u64 {
    entries.saturating_mul(round8(value))
}

/// A per-CPU array: each entry on every possible CPU, and a pointer per entry.
fn per_cpu_array(entries: u64, value: usize, cpus: u64) -> u64 {
    entries.saturating_mul(round8(value)).saturating_mul(cpus).saturating_add(entries.saturating_mul(8))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ProbeSettings {
        ProbeSettings {
            ring_buffer_bytes: 32 << 20,
            empty: false,
            perf_event_uprobes: false,
            handout_words: false,
            id_slots: Some(32_768),
            combined: false,
            sample_bytes: 0,
            min_size: 0,
            max_size: u64::MAX,
            stack_slots: 16_384,
            live_blocks: 1 << 20,
            stack_depth: 127,
            mem_available: None,
            unwind: crate::unwind::Method::FramePointer,
            unwind_capacity: crate::unwind::Capacity::NONE,
        }
    }

    fn bytes_of(parts: &[Part], option: &str) -> u64 {
        parts.iter().find(|part| part.option == Some(option)).map_or(0, |part| part.bytes)
    }

    #[test]
    fn the_footprint_follows_the_options() {
        let plain = MapSizes::of(&settings()).footprint(2);
        assert_eq!(bytes_of(&plain, "--ring-buffer-size"), 32 << 20);
        // Unused, the stack and block tables have one entry.
        assert_eq!(bytes_of(&plain, "--stack-slots"), (48 + 8 + 1024 + 16) + (2 * (2 * 32) + 2 * 8));
        let combined = MapSizes::of(&ProbeSettings { combined: true, ..settings() }).footprint(2);
        // 16,384 stacks of 1 KiB and their 32,768 totals slots of 32 bytes on each of 2 CPUs.
        assert_eq!(
            bytes_of(&combined, "--stack-slots"),
            16_384 * (48 + 8 + 1024) + 16_384 * 16 + 32_768 * (32 * 2 + 8)
        );
        // 2^21 slots of 32 bytes, and an overflow map of 2^20 entries, 2^17 groups unused.
        assert_eq!(bytes_of(&combined, "--live-blocks"), (1 << 21) * 32 + (1 << 20) * (48 + 16 + 16 + 16) + 8);
        // An odd ring size rounds up to a power of two, and the largest is bounded.
        let sizes = MapSizes::of(&ProbeSettings { ring_buffer_bytes: 5000, ..settings() });
        assert_eq!(sizes.ring_bytes, 8192);
        let sizes = MapSizes::of(&ProbeSettings { ring_buffer_bytes: u32::MAX, ..settings() });
        assert_eq!(sizes.ring_bytes, MAX_RING_BUFFER_BYTES);
    }

    #[test]
    fn maps_larger_than_the_memory_available_are_refused_naming_the_option() {
        let parts = MapSizes::of(&ProbeSettings { combined: true, live_blocks: 1 << 24, ..settings() }).footprint(2);
        let total: u64 = parts.iter().map(|part| part.bytes).sum();
        assert_eq!(check(&parts, total), Ok(()));
        let error = check(&parts, 100 << 20).unwrap_err();
        assert_eq!(error.largest.option, Some("--live-blocks"));
        assert_eq!(
            error.to_string(),
            format!(
                "the kernel maps memtrace needs would take about {} of memory, more than the 100 MiB available \
                 (MemAvailable in /proc/meminfo): lower --live-blocks (the block table and its overflow map alone take 2,561 MiB)",
                mebibytes(total)
            )
        );
        assert!(mem_available().is_some_and(|bytes| bytes > 0));
    }
}
