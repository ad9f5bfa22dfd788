//! Finishing, in the agent, a walk the kernel handed over: it stopped at a pc in no mapping it
//! knew while the process had mapped code the agent had not applied yet. By the time the agent
//! reads that event it has applied the mmap (its event comes first in the ring buffer), and it
//! goes on from the registers the kernel sent, over the copy of the stack above them, with the
//! kernel's own step function and tables.
use memtrace_common::unwind::{ExecMapping, Registers, StackCopy, Step, UnwindRow, find_mapping, step_frame};

/// Walks on from `copy`'s registers, appending frames to `frames` until it holds `limit`;
/// returns whether the stack is truncated. `row_in(table, address)` finds a table's row as the
/// kernel does.
pub fn finish(
    mappings: &[ExecMapping],
    row_in: impl Fn(u32, u64) -> Option<UnwindRow>,
    copy: &StackCopy,
    frames: &mut Vec<u64>,
    limit: usize,
) -> bool {
    let mut regs = Registers { pc: copy.pc, sp: copy.sp, bp: copy.bp };
    let mut return_address = copy.return_address != 0;
    let read = |address: u64| copy.read(address);
    while frames.len() < limit {
        let found = find_mapping(mappings.len() as u32, regs.pc, |index| {
            mappings.get(index as usize).map(|mapping| (mapping.start, mapping.end))
        });
        let Some(mapping) = found.and_then(|index| mappings.get(index as usize)) else { return true };
        frames.push(regs.pc);
        if frames.len() >= limit {
            return false;
        }
        match step_frame(mapping, regs, return_address, &row_in, read) {
            Step::Caller(caller) => {
                regs = caller;
                return_address = true;
            }
            Step::End => return false,
            Step::Truncated => return true,
        }
    }
    false
}
