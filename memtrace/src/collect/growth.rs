//! Leak suspects: over a recording with `--interval`, each stack's outstanding bytes are
//! sampled at every interval; a stack whose bytes grew in most intervals is a suspect (a slow
//! leak), one that grew once and then held steady is not (a cache filling up).
use std::collections::HashMap;

use crate::{
    collect::{MemoryKind, heap::StackTotal},
    report::Growth,
};

type StackKey = (u32, i32, MemoryKind);

#[derive(Debug, Default)]
pub struct GrowthTracker {
    intervals: u64,
    last: HashMap<StackKey, u64>,
    grew_in: HashMap<StackKey, u64>,
}

impl GrowthTracker {
    /// Takes one interval's sample: outstanding bytes per stack at its end.
    pub fn observe(&mut self, stacks: &[StackTotal]) {
        self.intervals += 1;
        let now: HashMap<StackKey, u64> =
            stacks.iter().map(|total| ((total.tgid, total.stack_id, total.kind), total.bytes)).collect();
        for (key, &bytes) in &now {
            if bytes > self.last.get(key).copied().unwrap_or(0) {
                *self.grew_in.entry(*key).or_default() += 1;
            }
        }
        self.last = now;
    }

    pub fn intervals(&self) -> u64 {
        self.intervals
    }

    /// The growth of every stack that grew at least once; nothing before the first interval.
    pub fn growth(&self) -> HashMap<StackKey, Growth> {
        if self.intervals == 0 {
            return HashMap::new();
        }
        self.grew_in
            .iter()
            .map(|(&key, &grew_in)| {
                let growth = Growth {
                    intervals: self.intervals,
                    grew_in,
                    leak_suspect: grew_in >= 2 && grew_in * 2 > self.intervals,
                };
                (key, growth)
            })
            .collect()
    }

    /// Growth of one stack: zero growth for a stack sampled but never grown.
    pub fn of(growth: &HashMap<StackKey, Growth>, intervals: u64, key: StackKey) -> Option<Growth> {
        if intervals == 0 {
            return None;
        }
        Some(growth.get(&key).copied().unwrap_or(Growth { intervals, grew_in: 0, leak_suspect: false }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(bytes: &[(i32, u64)]) -> Vec<StackTotal> {
        bytes
            .iter()
            .map(|&(stack_id, bytes)| StackTotal {
                tgid: 1,
                stack_id,
                kind: MemoryKind::Heap,
                leak: None,
                bytes,
                allocations: 1,
            })
            .collect()
    }

    #[test]
    fn a_steady_leak_is_suspect_and_a_filled_cache_is_not() {
        let mut tracker = GrowthTracker::default();
        // Stack 1 leaks 100 bytes per interval; stack 2 fills to 5000 once and holds.
        for interval in 1..=5 {
            tracker.observe(&sample(&[(1, 100 * interval), (2, 5000)]));
        }
        let growth = tracker.growth();
        assert_eq!(growth[&(1, 1, MemoryKind::Heap)], Growth { intervals: 5, grew_in: 5, leak_suspect: true });
        assert_eq!(growth[&(1, 2, MemoryKind::Heap)], Growth { intervals: 5, grew_in: 1, leak_suspect: false });
        assert_eq!(
            GrowthTracker::of(&growth, 5, (1, 3, MemoryKind::Heap)),
            Some(Growth { intervals: 5, grew_in: 0, leak_suspect: false })
        );
        assert_eq!(GrowthTracker::of(&HashMap::new(), 0, (1, 3, MemoryKind::Heap)), None);
    }
}
