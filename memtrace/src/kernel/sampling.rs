//! `--sample-bytes`: seeding the kernel's table of gaps between samples.
use aya::{
    Ebpf,
    maps::{Array, PerCpuArray, PerCpuValues},
};
use memtrace_common::{SAMPLE_GAPS, names};

use super::error::{ProbeError, map_error, missing};

/// `--sample-bytes`: fills the table of gaps between samples (exponential with the given
/// mean, by inverse transform at evenly spaced quantiles) and starts each CPU's countdown at a
/// random one, so that the first block is not always sampled.
pub(super) fn seed_sampling(ebpf: &mut Ebpf, mean: u64) -> Result<(), ProbeError> {
    let gaps: Vec<u64> = (0..SAMPLE_GAPS)
        .map(|index| {
            let quantile = (f64::from(index) + 0.5) / f64::from(SAMPLE_GAPS);
            (-quantile.ln() * mean as f64).round().max(1.0) as u64
        })
        .collect();
    let map = ebpf.map_mut(names::SAMPLE_GAPS).ok_or_else(|| missing(names::SAMPLE_GAPS))?;
    let mut table: Array<_, u64> = Array::try_from(map).map_err(|error| map_error(names::SAMPLE_GAPS, error))?;
    for (index, gap) in gaps.iter().enumerate() {
        table.set(index as u32, gap, 0).map_err(|error| map_error(names::SAMPLE_GAPS, error))?;
    }
    let cpus = aya::util::nr_cpus().map_err(|(what, error)| ProbeError::Load(format!("{what}: {error}")))?;
    let starts: Vec<i64> = (0..cpus).map(|_| gaps[random_index(SAMPLE_GAPS as usize)] as i64).collect();
    let map = ebpf.map_mut(names::SAMPLE_COUNTDOWN).ok_or_else(|| missing(names::SAMPLE_COUNTDOWN))?;
    let mut countdown: PerCpuArray<_, i64> =
        PerCpuArray::try_from(map).map_err(|error| map_error(names::SAMPLE_COUNTDOWN, error))?;
    let values = PerCpuValues::try_from(starts).map_err(|error| ProbeError::Load(format!("sampling: {error}")))?;
    countdown.set(0, values, 0).map_err(|error| map_error(names::SAMPLE_COUNTDOWN, error))
}

/// A random index below `bound`, from the standard library's randomly keyed hasher.
fn random_index(bound: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    (hasher.finish() % bound as u64) as usize
}
