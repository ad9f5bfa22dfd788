//! Page faults by stack: the fault events the kernel side sends, counted per process and user
//! stack, each faulting address classified by the mapping it falls in.
use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use memtrace_common::{Event, fault};

pub use crate::collect::fault_kind::FaultKind;
use crate::{
    report::{KindCounts, MappingKind},
    target::maps::{self, Mapping},
};

/// The faults of one stack in one process (or of one process, or of all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub minor: u64,
    pub major: u64,
    pub kinds: KindCounts,
}

impl FaultCounts {
    pub fn sum(&mut self, other: &FaultCounts) {
        self.minor += other.minor;
        self.major += other.major;
        self.kinds.sum(&other.kinds);
    }
}

/// A process's mappings as last read. Re-read when an address falls outside them and either
/// the process mapped or unmapped something since, or the last read is older than
/// [`REREAD_AFTER`] (the kernel grows stacks without a system call). Bounded that way, a
/// process faulting in memory that is gone by the time its faults are counted (mapped, touched
/// and unmapped between two drains) costs a few reads a second, not one per fault.
struct MappingsCache {
    mappings: Vec<Mapping>,
    /// What each mapping is, in the same order.
    kinds: Vec<MappingKind>,
    stale: bool,
    read_at: Instant,
}

const REREAD_AFTER: Duration = Duration::from_millis(50);

/// Every fault event seen, counted by (process, stack). Counts are scaled by the sampling
/// period each sample carries.
pub struct FaultTable {
    period: u64,
    by_stack: BTreeMap<(u32, i32), FaultCounts>,
    mappings: HashMap<u32, MappingsCache>,
    /// Faults of a process before this time (CLOCK_MONOTONIC ns) are not counted.
    forgotten_before: HashMap<u32, u64>,
}

impl FaultTable {
    pub fn new(period: u64) -> Self {
        Self { period, by_stack: BTreeMap::new(), mappings: HashMap::new(), forgotten_before: HashMap::new() }
    }

    /// The sampling period: 1 counts every fault, N one in N (counts are then estimates).
    pub fn period(&self) -> u64 {
        self.period
    }

    /// Counts one fault event (its `stack_id` already the agent's id, or a negative errno).
    pub fn record(&mut self, event: &Event) {
        if self.forgotten_before.get(&event.tgid).is_some_and(|&until| event.timestamp_ns < until) {
            return;
        }
        let kind = self.classify(event.tgid, event.addr);
        let weight = event.size.max(1);
        let counts = self.by_stack.entry((event.tgid, event.stack_id)).or_default();
        if event.flags & fault::MAJOR != 0 {
            counts.major += weight;
        } else {
            counts.minor += weight;
        }
        add_kind(&mut counts.kinds, kind, weight);
    }

    /// Forgets every fault of `pid` before `until_ns` (CLOCK_MONOTONIC), counted already or
    /// still to come in the ring buffer (run mode: what the target's pid faulted before its
    /// first exec was memtrace's own forked child, not the command).
    pub fn forget_before(&mut self, pid: u32, until_ns: u64) {
        self.by_stack.retain(|&(owner, _), _| owner != pid);
        self.mappings.remove(&pid);
        self.forgotten_before.insert(pid, until_ns);
    }

    /// The process's mappings changed (mmap, munmap, ...): re-read them before the next lookup.
    pub fn mappings_changed(&mut self, pid: u32) {
        if let Some(cache) = self.mappings.get_mut(&pid) {
            cache.stale = true;
        }
    }

    fn classify(&mut self, pid: u32, address: u64) -> FaultKind {
        let cache = self.mappings.entry(pid).or_insert_with(|| MappingsCache {
            mappings: Vec::new(),
            kinds: Vec::new(),
            stale: true,
            read_at: Instant::now(),
        });
        let covering = |cache: &MappingsCache| {
            let found = cache.mappings.iter().position(|mapping| mapping.contains(address));
            found
                .map(|index| FaultKind::of(cache.kinds[index], &cache.mappings[index]))
                .or_else(|| stack_growth(&cache.mappings, address))
        };
        if !cache.stale
            && let Some(kind) = covering(cache)
        {
            return kind;
        }
        if !cache.stale && cache.read_at.elapsed() < REREAD_AFTER {
            return FaultKind::Other;
        }
        // A mapping made since the last read, or a first look: read them again. A process
        // already gone leaves what was read last.
        if let Ok(mappings) = maps::read(pid) {
            cache.kinds = maps::classify(&mappings);
            cache.mappings = mappings;
        }
        cache.stale = false;
        cache.read_at = Instant::now();
        covering(cache).unwrap_or(FaultKind::Other)
    }

    /// Every (pid, stack id) with its counts.
    pub fn stacks(&self) -> impl Iterator<Item = (u32, i32, &FaultCounts)> {
        self.by_stack.iter().map(|(&(pid, stack_id), counts)| (pid, stack_id, counts))
    }

    /// One process's totals.
    pub fn process(&self, pid: u32) -> FaultCounts {
        let mut total = FaultCounts::default();
        for counts in self.by_stack.range((pid, i32::MIN)..=(pid, i32::MAX)).map(|(_, counts)| counts) {
            total.sum(counts);
        }
        total
    }

    /// All processes' totals.
    pub fn all(&self) -> FaultCounts {
        let mut total = FaultCounts::default();
        for counts in self.by_stack.values() {
            total.sum(counts);
        }
        total
    }
}

/// An address in the gap below `[stack]` is the stack growing: the kernel extends the mapping
/// down on that very fault, after the last read of the mappings.
fn stack_growth(mappings: &[Mapping], address: u64) -> Option<FaultKind> {
    let stack = mappings.iter().find(|mapping| mapping.path.as_deref() == Some("[stack]"))?;
    let gap_start = mappings.iter().map(|mapping| mapping.end).filter(|&end| end <= stack.start).max().unwrap_or(0);
    (gap_start..stack.start).contains(&address).then_some(FaultKind::Stack)
}

/// Counts `count` faults of `kind`.
fn add_kind(counts: &mut KindCounts, kind: FaultKind, count: u64) {
    let slot = match kind {
        FaultKind::Heap => &mut counts.heap,
        FaultKind::Stack => &mut counts.stack,
        FaultKind::Anonymous => &mut counts.anonymous,
        FaultKind::File => &mut counts.file,
        FaultKind::Shm => &mut counts.shm,
        FaultKind::Other => &mut counts.other,
    };
    *slot += count;
}

#[cfg(test)]
mod tests {
    use memtrace_common::EventKind;

    use super::*;

    fn fault_event(tgid: u32, stack_id: i32, major: bool, period: u64) -> Event {
        Event {
            kind: EventKind::Fault as u32,
            tgid,
            stack_id,
            flags: if major { fault::MAJOR } else { 0 },
            size: period,
            // An address no process maps: classified `other` without depending on /proc.
            addr: u64::MAX - 4096,
            old_addr: 0,
            old_size: 0,
            timestamp_ns: 1,
        }
    }

    #[test]
    fn an_address_in_the_gap_below_the_stack_is_stack_growth() {
        let mappings = maps::parse(
            "7f0000000000-7f0000100000 rw-p 00000000 00:00 0 \n7ffc00100000-7ffc00121000 rw-p 00000000 00:00 0    [stack]\n",
        );
        assert_eq!(stack_growth(&mappings, 0x7ffc000ff000), Some(FaultKind::Stack));
        assert_eq!(stack_growth(&mappings, 0x7f0000000000), None);
        assert_eq!(stack_growth(&mappings, 0x7ffc00200000), None);
    }

    #[test]
    fn counts_are_scaled_by_the_period_and_split_by_process_and_stack() {
        let mut table = FaultTable::new(10);
        // pid 0 never exists: its mappings cannot be read, so the address stays unclassified.
        for _ in 0..3 {
            table.record(&fault_event(0, 1, false, 10));
        }
        table.record(&fault_event(0, 2, true, 10));
        let process = table.process(0);
        assert_eq!((process.minor, process.major), (30, 10));
        assert_eq!(process.kinds.other, 40);
        assert_eq!(table.stacks().count(), 2);
        assert_eq!(table.process(1), FaultCounts::default());
        assert_eq!(table.all(), process);
    }

    #[test]
    fn forgetting_a_process_keeps_the_others_and_its_later_faults() {
        let mut table = FaultTable::new(1);
        table.record(&fault_event(7, 1, false, 1));
        table.record(&fault_event(7, 2, true, 1));
        table.record(&fault_event(8, 1, false, 1));
        table.forget_before(7, 5);
        assert_eq!(table.process(7), FaultCounts::default());
        assert_eq!(table.process(8).minor, 1);
        // One from before the time, read late from the ring buffer: not counted; one after it is.
        table.record(&fault_event(7, 1, false, 1));
        assert_eq!(table.process(7), FaultCounts::default());
        table.record(&Event { timestamp_ns: 6, ..fault_event(7, 1, false, 1) });
        assert_eq!(table.process(7).minor, 1);
        assert_eq!(table.stacks().count(), 2);
    }
}
