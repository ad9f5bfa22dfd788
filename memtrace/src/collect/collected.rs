//! Everything collected from one trace's events, and how each event changes it: its stack is
//! interned, a page fault is counted by stack, anything else goes to the heap table (a mapping
//! change also tells the fault table to look at the process's mappings again).
use memtrace_common::{Event, EventKind};

use super::{fault_table::FaultTable, growth::GrowthTracker, heap::HeapTable, stack_table::StackTable};

pub struct Collected {
    pub stacks: StackTable,
    pub heap: HeapTable,
    /// Page faults by stack, with `--faults`.
    pub faults: Option<FaultTable>,
    /// Outstanding bytes per stack at each `--interval`, for leak suspects.
    pub growth: GrowthTracker,
}

impl Collected {
    pub fn new(heap: HeapTable, faults: Option<FaultTable>) -> Self {
        Self { stacks: StackTable::default(), heap, faults, growth: GrowthTracker::default() }
    }

    /// Takes in one event with its stack as walked (innermost first, and whether the walk was
    /// cut short), when its record carried one.
    pub fn apply(&mut self, mut event: Event, stack: Option<(&[u64], bool)>) {
        // The stack gets its id here (without one, a negative count is the kernel's error for a
        // failed capture, kept as it is).
        if let Some((frames, truncated)) = stack {
            event.stack_id = self.stacks.intern_walk(frames, truncated);
        }
        if let Some(faults) = self.faults.as_mut() {
            if event.kind == EventKind::Fault as u32 {
                faults.record(&event);
                return;
            }
            if !matches!(EventKind::from_u32(event.kind), Some(EventKind::Alloc | EventKind::Free | EventKind::Realloc))
            {
                faults.mappings_changed(event.tgid);
            }
        }
        self.heap.apply(&event);
    }
}
