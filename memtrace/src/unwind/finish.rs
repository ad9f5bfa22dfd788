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
    while frames.len() < limit {
        let found = find_mapping(mappings.len() as u32, regs.pc, |index| {
            mappings.get(index as usize).map(|mapping| (mapping.start, mapping.end))
        });
        let Some(mapping) = found.and_then(|index| mappings.get(index as usize)) else { return true };
        frames.push(regs.pc);
        let step = step_frame(mapping, regs, return_address, &row_in, &mut &*copy);
        if frames.len() >= limit {
            // The depth asked for: cut short unless this was the outermost frame, as the kernel
            // decides.
            return !matches!(step, Step::End);
        }
        match step {
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

#[cfg(test)]
mod tests {
    use memtrace_common::unwind::{NO_TABLE, STACK_COPY_BYTES, cfa_kind, rbp_kind};

    use super::*;
    use crate::unwind::{
        cfi::{Rule, Span},
        table::Table,
    };

    fn rsp(offset: i32) -> Rule {
        Rule { cfa_kind: cfa_kind::RSP, cfa_offset: offset, rbp_kind: rbp_kind::UNCHANGED, rbp_offset: 0 }
    }

    /// A stack copy at 0x7000 holding `words` from its base.
    fn copy(pc: u64, words: &[u64]) -> StackCopy {
        let mut copy = StackCopy {
            pc,
            sp: 0x7000,
            bp: 0,
            base: 0x7000,
            length: (words.len() * 8) as u32,
            return_address: 1,
            bytes: [0; STACK_COPY_BYTES],
        };
        for (index, word) in words.iter().enumerate() {
            copy.bytes[index * 8..index * 8 + 8].copy_from_slice(&word.to_ne_bytes());
        }
        copy
    }

    #[test]
    fn walks_on_over_the_copy_to_the_outermost_frame() {
        // Three functions: 16 bytes of frame, 8, then the outermost.
        let table = Table::from_spans(vec![
            Span { start: 0x1000, end: 0x1100, rule: rsp(16) },
            Span { start: 0x1100, end: 0x1200, rule: rsp(8) },
            Span { start: 0x1200, end: 0x1300, rule: Rule::END },
        ])
        .unwrap();
        let row_in = |id: u32, address: u64| if id == 0 { table.row_at(address) } else { None };
        let mappings = [ExecMapping { start: 0x1000, end: 0x3000, bias: 0, table: 0, _padding: 0 }];
        // leaf's return address into its caller at 0x7008, the caller's into main at 0x7010.
        let stack = copy(0x1050, &[0, 0x1150, 0x1250]);
        let mut frames = vec![0xaaaa];
        assert!(!finish(&mappings, row_in, &stack, &mut frames, 127));
        assert_eq!(frames, [0xaaaa, 0x1050, 0x1150, 0x1250]);

        // The depth asked for ends the walk: cut short while a caller remains, complete when
        // the last frame taken is the outermost.
        let mut frames = Vec::new();
        assert!(finish(&mappings, row_in, &stack, &mut frames, 2));
        assert_eq!(frames, [0x1050, 0x1150]);
        let mut frames = Vec::new();
        assert!(!finish(&mappings, row_in, &stack, &mut frames, 3));
        assert_eq!(frames, [0x1050, 0x1150, 0x1250]);

        // A return address in no mapping is not a frame: the stack is cut before it.
        let stray = copy(0x1050, &[0, 0x9999]);
        let mut frames = Vec::new();
        assert!(finish(&mappings, row_in, &stray, &mut frames, 127));
        assert_eq!(frames, [0x1050]);

        // A read past the copy cuts it too.
        let short = copy(0x1050, &[0]);
        let mut frames = Vec::new();
        assert!(finish(&mappings, row_in, &short, &mut frames, 127));
        assert_eq!(frames, [0x1050]);
    }

    #[test]
    fn code_without_a_table_is_stepped_by_frame_pointer() {
        let mappings = [ExecMapping { start: 0x1000, end: 0x2000, bias: 0, table: NO_TABLE, _padding: 0 }];
        // rbp = 0x7010: saved rbp 0 (the outermost frame pointer), return address 0x1800.
        let mut stack = copy(0x1050, &[0, 0, 0, 0x1800]);
        stack.bp = 0x7010;
        let mut frames = Vec::new();
        assert!(!finish(&mappings, |_, _| None, &stack, &mut frames, 127));
        assert_eq!(frames, [0x1050, 0x1800]);
    }
}
