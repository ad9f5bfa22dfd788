//! Leak suspects: over a recording with `--interval`, each stack's outstanding bytes are
//! sampled at every interval; a stack whose bytes grew in most intervals is a suspect (a slow
//! leak), one that grew once and then held steady is not (a cache filling up). `serve` runs for
//! weeks: there only the last intervals count (a sliding window), and exited processes are
//! forgotten.
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
    /// Each stack that grew: in how many intervals; with a window, in which of the last ones
    /// (bit i set when it grew i intervals ago).
    grew: HashMap<StackKey, u64>,
    /// Only the last this many intervals count (at most 64); all of them when `None`.
    window: Option<u32>,
}

/// The longest sliding window: the history is a 64-bit mask per stack.
pub const MAX_WINDOW: u32 = 64;

impl GrowthTracker {
    /// A tracker that counts only the last `window` intervals (2 to [`MAX_WINDOW`]).
    pub fn sliding(window: u32) -> Self {
        Self { window: Some(window.clamp(2, MAX_WINDOW)), ..Self::default() }
    }

    /// Takes one interval's sample: outstanding bytes per stack at its end.
    pub fn observe(&mut self, stacks: &[StackTotal]) {
        self.intervals += 1;
        let now: HashMap<StackKey, u64> =
            stacks.iter().map(|total| ((total.tgid, total.stack_id, total.kind), total.bytes)).collect();
        let grew: Vec<StackKey> = now
            .iter()
            .filter(|&(key, &bytes)| bytes > self.last.get(key).copied().unwrap_or(0))
            .map(|(key, _)| *key)
            .collect();
        match self.window {
            None => {
                for key in grew {
                    *self.grew.entry(key).or_default() += 1;
                }
            }
            Some(window) => {
                let mask = u64::MAX >> (MAX_WINDOW - window);
                for bits in self.grew.values_mut() {
                    *bits = (*bits << 1) & mask;
                }
                for key in grew {
                    *self.grew.entry(key).or_default() |= 1;
                }
                self.grew.retain(|_, bits| *bits != 0);
            }
        }
        self.last = now;
    }

    /// Intervals observed in all.
    pub fn intervals(&self) -> u64 {
        self.intervals
    }

    /// Intervals that count: all, or the window's.
    pub fn counted(&self) -> u64 {
        self.window.map_or(self.intervals, |window| self.intervals.min(u64::from(window)))
    }

    /// Forgets an exited process's stacks.
    pub fn forget(&mut self, tgid: u32) {
        self.last.retain(|key, _| key.0 != tgid);
        self.grew.retain(|key, _| key.0 != tgid);
    }

    /// The growth of every stack that grew at least once; nothing before the first interval.
    pub fn growth(&self) -> HashMap<StackKey, Growth> {
        let intervals = self.counted();
        if intervals == 0 {
            return HashMap::new();
        }
        self.grew
            .iter()
            .map(|(&key, &grew)| {
                let grew_in = if self.window.is_some() { u64::from(grew.count_ones()) } else { grew };
                let growth = Growth { intervals, grew_in, leak_suspect: grew_in >= 2 && grew_in * 2 > intervals };
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

    #[test]
    fn a_sliding_window_forgets_old_growth() {
        let mut tracker = GrowthTracker::sliding(4);
        // Stack 1 leaks for 4 intervals, then holds for 4: no longer a suspect.
        for interval in 1..=4 {
            tracker.observe(&sample(&[(1, 100 * interval)]));
        }
        assert_eq!(
            tracker.growth()[&(1, 1, MemoryKind::Heap)],
            Growth { intervals: 4, grew_in: 4, leak_suspect: true }
        );
        for _ in 0..4 {
            tracker.observe(&sample(&[(1, 400)]));
        }
        assert_eq!(tracker.growth().get(&(1, 1, MemoryKind::Heap)), None);
        assert_eq!(tracker.intervals(), 8);
        tracker.observe(&sample(&[(1, 500)]));
        assert_eq!(
            tracker.growth()[&(1, 1, MemoryKind::Heap)],
            Growth { intervals: 4, grew_in: 1, leak_suspect: false }
        );
        tracker.forget(1);
        assert!(tracker.growth().is_empty());
    }
}
