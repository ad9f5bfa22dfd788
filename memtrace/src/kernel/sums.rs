//! What the kernel keeps instead of sending events: with `--combined` every outstanding block
//! and each stack's totals, with `--sample-bytes` the sampled blocks. Read when the trace ends,
//! and emptied for a process that calls exec.
use std::collections::HashMap;

use aya::maps::HashMap as AyaHashMap;
use memtrace_common::{
    BlockKey, LiveBlock, StackFrames, StackKey, StackSums, TotalsSlot, names, unwind::COMBINED_TRUNCATED,
};

use super::{
    Probes, batch_read,
    error::{ProbeError, map_error, missing},
};

/// `--combined`: one (process, stack)'s sums, and the stack (innermost first).
#[derive(Debug, Clone)]
pub struct KernelStackSums {
    pub tgid: u32,
    /// `None` when the kernel's stack table had no entry for it (never expected: the sums
    /// are only created once the stack is stored).
    pub stack: Option<Vec<u64>>,
    /// The walk that found the stack was cut short (see `stack_flags::TRUNCATED`).
    pub truncated: bool,
    pub sums: StackSums,
}

impl Probes {
    /// `--combined`: every (process, stack)'s sums, with the stacks: the totals each CPU kept
    /// per stack, added up, and the outstanding blocks summed per stack here.
    pub fn kernel_sums(&self) -> Result<Vec<KernelStackSums>, ProbeError> {
        let mut sums: HashMap<StackKey, StackSums> = HashMap::new();
        let mut add_block = |tgid: u32, block: LiveBlock| {
            let entry = sums.entry(StackKey { tgid, _padding: 0, stack_hash: block.stack_hash }).or_default();
            entry.outstanding_bytes += block.size;
            entry.outstanding_blocks += 1;
        };
        // Summed as read: a million blocks need not be collected first.
        if let Some(slots) = &self.block_slots {
            for block in slots.blocks() {
                add_block(block.tgid, LiveBlock { size: block.size, stack_hash: block.stack_hash });
            }
        }
        for (key, block) in self.overflowed_blocks()? {
            add_block(key.tgid, block);
        }
        for slot in self.totals_slots()? {
            if slot.used == 0 {
                continue;
            }
            let entry = sums.entry(StackKey { tgid: slot.tgid, _padding: 0, stack_hash: slot.stack_hash }).or_default();
            entry.allocated_bytes += slot.totals.allocated_bytes;
            entry.allocations += slot.totals.allocations;
        }
        let map = self.ebpf.map(names::STACKS).ok_or_else(|| missing(names::STACKS))?;
        let stacks: AyaHashMap<_, u64, StackFrames> =
            AyaHashMap::try_from(map).map_err(|error| map_error(names::STACKS, error))?;
        Ok(sums
            .into_iter()
            .map(|(key, sums)| {
                let stack = stacks.get(&key.stack_hash, 0).ok();
                let truncated = stack.is_some_and(|stack| stack.depth & COMBINED_TRUNCATED != 0);
                let stack = stack.map(|stack| {
                    let depth = ((stack.depth & !COMBINED_TRUNCATED) as usize).min(stack.frames.len());
                    stack.frames[..depth].to_vec()
                });
                KernelStackSums { tgid: key.tgid, stack, truncated, sums }
            })
            .collect())
    }

    /// `--combined`: every CPU's slots of the per-stack totals table.
    fn totals_slots(&self) -> Result<Vec<TotalsSlot>, ProbeError> {
        let Some(aya::maps::Map::PerCpuArray(map)) = self.ebpf.map(names::TOTALS_SLOTS) else {
            return Err(missing(names::TOTALS_SLOTS));
        };
        let cpus = aya::util::nr_cpus().map_err(|(_, error)| ProbeError::Map {
            map: names::TOTALS_SLOTS,
            detail: format!("counting CPUs: {error}"),
        })?;
        batch_read::read_per_cpu_array(map, cpus)
            .map_err(|error| ProbeError::Map { map: names::TOTALS_SLOTS, detail: error.to_string() })
    }

    /// The blocks that found no room in the block table.
    fn overflowed_blocks(&self) -> Result<Vec<(BlockKey, LiveBlock)>, ProbeError> {
        let Some(aya::maps::Map::HashMap(map)) = self.ebpf.map(names::LIVE_BLOCKS) else {
            return Err(missing(names::LIVE_BLOCKS));
        };
        batch_read::read_hash_map(map)
            .map_err(|error| ProbeError::Map { map: names::LIVE_BLOCKS, detail: error.to_string() })
    }

    /// `--combined`, `--sample-bytes`: a process replaced its image with exec; its blocks in
    /// the kernel are gone with the old address space. Removes them and returns how many there
    /// were and their bytes. Call it while the process is stopped, so none of its probes run
    /// meanwhile.
    pub fn drop_kernel_blocks(&mut self, tgid: u32) -> Result<(u64, u64), ProbeError> {
        let (mut blocks, mut bytes) = match &self.block_slots {
            Some(slots) => slots.forget_process(tgid),
            None => return Ok((0, 0)),
        };
        let overflowed: Vec<(BlockKey, LiveBlock)> =
            self.overflowed_blocks()?.into_iter().filter(|(key, _)| key.tgid == tgid).collect();
        let map = self.ebpf.map_mut(names::LIVE_BLOCKS).ok_or_else(|| missing(names::LIVE_BLOCKS))?;
        let mut live_blocks: AyaHashMap<_, BlockKey, LiveBlock> =
            AyaHashMap::try_from(map).map_err(|error| map_error(names::LIVE_BLOCKS, error))?;
        for (key, block) in &overflowed {
            live_blocks.remove(key).map_err(|error| map_error(names::LIVE_BLOCKS, error))?;
            blocks += 1;
            bytes += block.size;
        }
        Ok((blocks, bytes))
    }
}
