//! The kernel side's counters (`COUNTERS`, per CPU; the list and its meaning are in
//! `memtrace_common::counters`), read and summed over CPUs.
use aya::maps::PerCpuArray;
use memtrace_common::{COUNTER_SLOTS, Counter, names};

use super::{
    Probes,
    error::{ProbeError, map_error, missing},
};

/// What the kernel side counted, by [`Counter`], summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounters([u64; COUNTER_SLOTS as usize]);

impl KernelCounters {
    /// From counts in [`Counter::ALL`] order (tests, and the agent's own sums).
    pub fn from_counts(counts: [u64; COUNTER_SLOTS as usize]) -> Self {
        Self(counts)
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter as usize]
    }

    /// Everything the kernel side lost (the counters that are losses), added up.
    pub fn lost(&self) -> u64 {
        Counter::ALL
            .iter()
            .filter(|counter| counter.info().loss)
            .map(|&counter| self.get(counter))
            .fold(0, u64::saturating_add)
    }
}

impl Probes {
    /// Reads the kernel side's counters.
    pub fn counters(&self) -> Result<KernelCounters, ProbeError> {
        let map = self.ebpf.map(names::COUNTERS).ok_or_else(|| missing(names::COUNTERS))?;
        let array: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|error| map_error(names::COUNTERS, error))?;
        let mut counts = [0; COUNTER_SLOTS as usize];
        for counter in Counter::ALL {
            let values = array.get(&(counter as u32), 0).map_err(|error| map_error(names::COUNTERS, error))?;
            counts[counter as usize] = values.iter().fold(0u64, |sum, &value| sum.saturating_add(value));
        }
        Ok(KernelCounters(counts))
    }
}
