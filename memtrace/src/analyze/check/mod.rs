//! CI mode: suppressions applied to a report's stacks, and the pass/fail decision of `--check`
//! with its exit code.
mod settings;
pub mod suppressions;

pub use settings::{CheckOptions, CiSettings};
pub use suppressions::{SuppressionError, Suppressions};

pub use crate::report::DEFAULT_FAIL_ON;
use crate::report::{
    CheckSummary, Kind, LeakKind, Report, Stack,
    printable::printable,
    words::{bytes, plural},
};

/// memtrace's exit code when `--check` finds leaks (LeakSanitizer's, 23, so that CI scripts
/// written for it work unchanged); `--exit-code` changes it.
pub const EXIT_LEAKS_FOUND: i32 = 23;

/// Marks each heap stack a suppression matches.
pub fn suppress(report: &mut Report, suppressions: &Suppressions) {
    for stack in report.stacks.iter_mut().filter(|stack| stack.kind == Kind::Heap) {
        stack.suppressed_by =
            suppressions.matching(stack).map(|found| format!("leak:{} ({})", found.pattern, found.origin));
    }
}

/// Whether `stack` fails the check: a heap stack of a failing kind, not suppressed.
pub fn fails(stack: &Stack, fail_on: &[LeakKind]) -> bool {
    stack.suppressed_by.is_none() && stack.leak_kind.is_some_and(|kind| fail_on.contains(&kind))
}

/// Decides the check over every stack of `report` (call before `--top` trims them).
pub fn decide(report: &Report, fail_on: &[LeakKind], leak_threshold: u64) -> CheckSummary {
    let mut check = decide_stacks(&report.stacks, fail_on, leak_threshold);
    let order = |pid: &u32| report.processes.iter().position(|process| process.pid == *pid).unwrap_or(usize::MAX);
    check.failing_processes.sort_by_key(|pid| (order(pid), *pid));
    check
}

fn decide_stacks(stacks: &[Stack], fail_on: &[LeakKind], leak_threshold: u64) -> CheckSummary {
    let failing: Vec<&Stack> = stacks.iter().filter(|stack| fails(stack, fail_on)).collect();
    let mut failing_processes: Vec<u32> = failing.iter().map(|stack| stack.pid).collect();
    failing_processes.sort_unstable();
    failing_processes.dedup();
    let suppressed = stacks.iter().filter(|stack| stack.suppressed_by.is_some());
    let failing_bytes = failing.iter().map(|stack| stack.bytes).fold(0, u64::saturating_add);
    CheckSummary {
        passed: failing_bytes <= leak_threshold && (leak_threshold > 0 || failing.is_empty()),
        fail_on: fail_on.to_vec(),
        leak_threshold,
        failing_bytes,
        failing_blocks: failing.iter().map(|stack| stack.allocations).fold(0, u64::saturating_add),
        suppressed_bytes: suppressed.clone().map(|stack| stack.bytes).fold(0, u64::saturating_add),
        suppressed_blocks: suppressed.map(|stack| stack.allocations).fold(0, u64::saturating_add),
        failing_stacks: failing.len() as u64,
        failing_processes,
    }
}

/// One line for stderr saying what the check decided; `report` names the failing processes
/// when there are several processes.
pub fn describe(check: &CheckSummary, report: &Report) -> String {
    let kinds: Vec<&str> = check.fail_on.iter().map(|kind| kind.words()).collect();
    let suppressed = if check.suppressed_blocks > 0 {
        format!("; {} in {} suppressed", bytes(check.suppressed_bytes), plural(check.suppressed_blocks, "block"))
    } else {
        String::new()
    };
    if check.passed {
        format!(
            "memtrace: check passed: {} {} (threshold {}){suppressed}",
            bytes(check.failing_bytes),
            kinds.join(" or "),
            bytes(check.leak_threshold)
        )
    } else {
        let processes = if report.processes.len() > 1 && !check.failing_processes.is_empty() {
            let named: Vec<String> = check
                .failing_processes
                .iter()
                .map(|pid| {
                    let command = report
                        .processes
                        .iter()
                        .find(|process| process.pid == *pid)
                        .map(|process| process.command.join(" "));
                    format!("pid {pid} ({})", printable(&command.unwrap_or_default()))
                })
                .collect();
            let count = match check.failing_processes.len() {
                1 => "1 process".to_owned(),
                count => format!("{count} processes"),
            };
            format!(" in {count}: {}", named.join(", "))
        } else {
            String::new()
        };
        format!(
            "memtrace: check failed: {} in {} {}, from {}{processes} (threshold {}){suppressed}",
            bytes(check.failing_bytes),
            plural(check.failing_blocks, "block"),
            kinds.join(" or "),
            plural(check.failing_stacks, "stack"),
            bytes(check.leak_threshold)
        )
    }
}

/// Parses `--fail-on`: kinds separated by commas, or `all`.
pub fn parse_fail_on(text: &str) -> Result<Vec<LeakKind>, String> {
    if text.trim() == "all" {
        return Ok(LeakKind::ALL.to_vec());
    }
    text.split(',')
        .map(|name| {
            LeakKind::parse(name).ok_or_else(|| {
                format!("`{name}` is not a leak kind: use definite, indirect, possible, reachable (or all)")
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ReportFrame;

    fn stack(bytes: u64, kind: Option<LeakKind>, function: &str) -> Stack {
        Stack {
            kind: Kind::Heap,
            bytes,
            allocations: 1,
            pid: 1,
            frames: vec![ReportFrame {
                address: "0x1".into(),
                function: Some(function.into()),
                file: None,
                line: None,
                module: None,
                module_offset: None,
                inlined: false,
            }],
            unavailable: None,
            truncated: false,
            leak_kind: kind,
            suppressed_by: None,
            growth: None,
            total_allocated_bytes: 0,
            total_allocations: 0,
        }
    }

    #[test]
    fn only_unsuppressed_failing_kinds_over_the_threshold_fail() {
        let stacks = vec![
            stack(100, Some(LeakKind::DefinitelyLost), "leaker"),
            stack(50, Some(LeakKind::IndirectlyLost), "node"),
            stack(1000, Some(LeakKind::StillReachable), "cache"),
            stack(7, Some(LeakKind::PossiblyLost), "middle"),
        ];
        let decide_on = |stacks: &[Stack], fail_on: &[LeakKind], threshold| {
            let check = decide_stacks(stacks, fail_on, threshold);
            (check.failing_bytes, check.passed)
        };
        assert_eq!(decide_on(&stacks, &DEFAULT_FAIL_ON, 0), (150, false));
        assert_eq!(decide_on(&stacks, &DEFAULT_FAIL_ON, 150), (150, true));
        assert_eq!(decide_on(&stacks, &DEFAULT_FAIL_ON, 149), (150, false));
        assert_eq!(decide_on(&stacks, &[LeakKind::PossiblyLost], 0), (7, false));
        let mut suppressed = stacks.clone();
        suppressed[0].suppressed_by = Some("leak:leaker".into());
        suppressed[1].suppressed_by = Some("leak:node".into());
        assert_eq!(decide_on(&suppressed, &DEFAULT_FAIL_ON, 0), (0, true));
        let check = decide_stacks(&suppressed, &DEFAULT_FAIL_ON, 0);
        assert_eq!((check.suppressed_bytes, check.suppressed_blocks, check.failing_stacks), (150, 2, 0));
    }

    #[test]
    fn fail_on_parses_lists_and_all() {
        assert_eq!(parse_fail_on("definite,possible"), Ok(vec![LeakKind::DefinitelyLost, LeakKind::PossiblyLost]));
        assert_eq!(parse_fail_on("all").map(|kinds| kinds.len()), Ok(4));
        assert!(parse_fail_on("definite,bogus").is_err());
    }
}
