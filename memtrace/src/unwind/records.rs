//! What the unwinder takes from the ring buffer: executable mmap events (the process's
//! mappings are read again, before the events after them) and the stacks of records, finishing
//! the walks the kernel handed over.
use std::borrow::Cow;

use memtrace_common::{
    Event, EventKind, MAX_STACK_DEPTH, mapping,
    unwind::{StackCopy, stack_flags},
};

use super::Unwinder;
use crate::collect::stack_table as stacks;

/// Applies an executable mmap event: the process's code as mapped now.
pub fn apply_mapping_event(unwinder: &mut Unwinder, event: &Event) {
    if event.kind == EventKind::Mmap as u32 && event.flags & mapping::EXECUTABLE != 0 {
        unwinder.mapped_code(event.tgid, event.old_size);
    }
}

/// Whether `event`'s record carries a stack: frames follow it (`rest`), or it is a page fault,
/// which always carries the walk's frames, none when the walk found none (its `stack_id` the
/// count, 0: not the agent's stack 0). A negative `stack_id` is the kernel's error for a failed
/// capture.
pub fn carries_stack(event: &Event, rest: &[u8]) -> bool {
    event.stack_id >= 0 && (!rest.is_empty() || event.kind == EventKind::Fault as u32)
}

/// The frames that follow `event` in its record (`rest`), innermost first, at most `limit`,
/// and whether the walk was cut short. A walk the kernel handed over (`COPY_FOLLOWS`) is
/// finished here by `unwinder`; without one it stays truncated. A whole walk's frames are
/// borrowed from the record, not copied: this runs for every event, and in `run` an allocation
/// of the agent's traps into libc's probed malloc (see `kernel::Scope::AllProcesses`).
pub fn stack_of_record<'a>(
    unwinder: Option<&mut Unwinder>,
    event: &Event,
    rest: &'a [u8],
    limit: usize,
) -> (Cow<'a, [u64]>, bool) {
    let truncated = event.flags & stack_flags::TRUNCATED != 0;
    if event.flags & stack_flags::COPY_FOLLOWS == 0 {
        return (stacks::frames(rest), truncated);
    }
    // Every frame slot, the first `stack_id` of them placed, then the copy (`EventWithCopy`).
    const SLOTS: usize = MAX_STACK_DEPTH * size_of::<u64>();
    let placed = usize::try_from(event.stack_id).unwrap_or(0).min(MAX_STACK_DEPTH);
    let mut frames = stacks::frames(rest.get(..placed * size_of::<u64>()).unwrap_or(&[])).into_owned();
    let Some(copy) = rest.get(SLOTS..SLOTS + size_of::<StackCopy>()) else { return (Cow::Owned(frames), true) };
    // SAFETY: the length was checked; `StackCopy` is plain data valid for any bit pattern, and
    // the record may not be aligned for it.
    let copy = unsafe { copy.as_ptr().cast::<StackCopy>().read_unaligned() };
    match unwinder {
        Some(unwinder) => {
            let truncated = unwinder.finish(event.tgid, &copy, &mut frames, limit);
            (Cow::Owned(frames), truncated)
        }
        None => (Cow::Owned(frames), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, stack_id: i32) -> Event {
        Event {
            kind: kind as u32,
            tgid: 1,
            stack_id,
            flags: 0,
            size: 1,
            addr: 0x1000,
            old_addr: 0,
            old_size: 0,
            timestamp_ns: 0,
        }
    }

    #[test]
    fn a_fault_walked_to_no_frame_carries_an_empty_stack_and_a_free_none() {
        let frame = 0x40_1000u64.to_ne_bytes();
        assert!(carries_stack(&event(EventKind::Fault, 0), &[]));
        assert_eq!(stack_of_record(None, &event(EventKind::Fault, 0), &[], 8), (Cow::Borrowed(&[][..]), false));
        assert!(carries_stack(&event(EventKind::Alloc, 1), &frame));
        assert!(!carries_stack(&event(EventKind::Free, 0), &[]));
        assert!(!carries_stack(&event(EventKind::Fault, -14), &[]));
    }
}
