//! Loading memtrace's eBPF programs and attaching them to a target's allocator.
//!
//! Every link lives inside the `Probes` value: dropping it, or memtrace exiting for any reason
//! (the kernel closes the perf event fds), removes every probe.
use std::{collections::HashMap, num::NonZeroU32};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as AyaHashMap, MapData, PerCpuArray, PerCpuValues, RingBuf},
    programs::{
        TracePoint, UProbe,
        uprobe::{UProbeLink, UProbeLinkId, UProbeScope},
    },
};
use memtrace_common::{
    BLOCK_WINDOW, BlockKey, Counter, LiveBlock, SAMPLE_GAPS, StackFrames, StackKey, StackSums, TotalsSlot, names,
    unwind::{COMBINED_TRUNCATED, names as unwind_names},
};
use thiserror::Error;
use crate::{allocator::Allocator, block_slots::BlockSlots, events::watch_readable};

/// The kernel-side object built by `build.rs` from `memtrace-ebpf`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace"));

/// Settings fixed at load time.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSettings {
    pub ring_buffer_bytes: u32,
    /// Probes are attached for all processes, and only those given to [`Probes::trace`] count.
    pub filter_by_map: bool,
    /// Attach empty programs instead (benchmarking the probes' own cost).
    pub empty: bool,
    /// Ids with a slot in the kernel's per-id arrays; `None`: as many as `pid_max` (bounded).
    pub id_slots: Option<u32>,
    /// In-kernel aggregation (`--combined`): no event per allocator call.
    pub combined: bool,
    /// Mean bytes between samples (`--sample-bytes`); 0 records every block.
    pub sample_bytes: u64,
    /// Only blocks of these sizes are recorded (`--min-size`, `--max-size`).
    pub min_size: u64,
    pub max_size: u64,
    /// Slots in the kernel stack map (`--combined`).
    pub stack_slots: u32,
    /// Blocks the kernel can track at once (`--combined`, `--sample-bytes`).
    pub live_blocks: u32,
    /// User stack frames captured per event (`--stack-depth`).
    pub stack_depth: u32,
    /// How stacks are walked (`--unwind`), and the unwind tables' arrays.
    pub unwind: crate::unwind::Method,
    pub unwind_capacity: crate::unwind::Capacity,
}

/// Which processes an attachment fires for.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// One process: the kernel filters (no cost to any other process).
    Process(NonZeroU32),
    /// Every process mapping the object: the kernel side keeps those in the `TRACED` map.
    /// Costs one probe hit in every other process calling these functions while memtrace runs,
    /// but new processes need no attaching, only a map entry.
    AllProcesses,
}

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("loading memtrace's eBPF programs into the kernel failed: {0}")]
    Load(String),
    #[error("attaching to {function} in {object} failed: {detail}")]
    Attach { function: String, object: String, detail: String },
    #[error("reading the kernel-side map {map} failed: {detail}")]
    Map { map: &'static str, detail: String },
}

/// memtrace's programs, loaded, with their links and maps.
pub struct Probes {
    ebpf: Ebpf,
    /// Held while the kernel keeps run-time stats for BPF programs (`--program-stats`).
    stats: Option<std::os::fd::OwnedFd>,
    empty: bool,
    /// The links made for each process, so they can be let go when it ends.
    links: HashMap<u32, Vec<(&'static str, UProbeLinkId)>>,
    /// The kernel's block table, mapped (`--combined`, `--sample-bytes`).
    block_slots: Option<BlockSlots>,
}

/// How many events the kernel side dropped or degraded, by reason, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub ring_buffer_full: u64,
    pub stack_capture_failed: u64,
    pub in_flight_full: u64,
    pub stale_in_flight: u64,
    pub argument_unreadable: u64,
    pub null_frees: u64,
    /// Blocks the kernel could not track (`--combined`, `--sample-bytes`).
    pub live_blocks_full: u64,
    /// Blocks from a new stack `--combined` could not add up.
    pub stack_sums_full: u64,
    /// Frees of blocks the kernel did not hold (`--combined`).
    pub unknown_frees: u64,
    /// Failed reallocs seen by the kernel when it splits a realloc (`--combined`,
    /// `--sample-bytes`, size filters).
    pub failed_reallocs: u64,
}

/// What one kernel-side program cost while stats were on (`--program-stats`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProgramCost {
    pub program: String,
    pub runs: u64,
    pub ns_per_run: f64,
}

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
    /// Loads the programs and maps (nothing is attached yet).
    pub fn load(settings: ProbeSettings) -> Result<Self, ProbeError> {
        // A ring buffer must be a power-of-two number of pages.
        let ring_bytes = settings.ring_buffer_bytes.max(4096).next_power_of_two();
        let filter_by_map = u8::from(settings.filter_by_map);
        let wakeup_bytes = u64::from(ring_bytes / 4);
        let combined = u8::from(settings.combined);
        // The stack table's slots are allocated up front (a kilobyte each): one when unused.
        // Each CPU's totals table has twice as many (32 bytes each).
        let stack_slots = if settings.combined { settings.stack_slots.max(1) } else { 1 };
        let totals_slot_bits = table_bits(stack_slots);
        // So is the block table, twice the blocks it should hold (32 bytes a slot, see
        // `table_bits`); its overflow map allocates entries only when used.
        let tracks_blocks = settings.combined || settings.sample_bytes != 0;
        let live_blocks = if tracks_blocks { settings.live_blocks.max(1) } else { 1 };
        let block_slot_bits = if tracks_blocks { table_bits(live_blocks) } else { 1 };
        // Sampling counts the blocks in each group of a window's length (8 bytes a group).
        let block_groups = if settings.sample_bytes != 0 { ((1u32 << block_slot_bits) / BLOCK_WINDOW).max(1) } else { 1 };
        let id_slots = settings.id_slots.unwrap_or_else(id_slots);
        let unwind_mode = u8::from(settings.unwind != crate::unwind::Method::FramePointer);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::EVENTS, ring_bytes)
            .map_max_entries(names::TRACED_SLOTS, id_slots.max(1))
            .map_max_entries(names::CALL_SLOTS, id_slots.max(1))
            .map_max_entries(names::MARK_SLOTS, id_slots.max(1))
            .override_global(names::ID_SLOTS, &id_slots, true)
            .map_max_entries(names::STACKS, stack_slots)
            .map_max_entries(names::TOTALS_SLOTS, 1 << totals_slot_bits)
            .override_global(names::TOTALS_SLOT_BITS, &totals_slot_bits, true)
            .map_max_entries(names::LIVE_BLOCKS, live_blocks)
            .map_max_entries(names::BLOCK_SLOTS, 1 << block_slot_bits)
            .override_global(names::BLOCK_SLOT_BITS, &block_slot_bits, true)
            .map_max_entries(names::BLOCK_GROUPS, block_groups)
            .override_global(names::FILTER_BY_MAP, &filter_by_map, true)
            .override_global(names::WAKEUP_BYTES, &wakeup_bytes, true)
            .override_global(names::COMBINED, &combined, true)
            .override_global(names::SAMPLE_BYTES, &settings.sample_bytes, true)
            .override_global(names::MIN_SIZE, &settings.min_size, true)
            .override_global(names::STACK_DEPTH, &settings.stack_depth, true)
            .override_global(names::MAX_SIZE, &settings.max_size, true)
            .map_max_entries(unwind_names::UNWIND_ROWS, settings.unwind_capacity.row_pairs)
            .map_max_entries(unwind_names::UNWIND_PAGES, settings.unwind_capacity.page_pairs)
            .map_max_entries(unwind_names::UNWIND_TABLES, settings.unwind_capacity.tables)
            .override_global(unwind_names::UNWIND_MODE, &unwind_mode, true)
            .load(EBPF_OBJECT)
            .map_err(|error| ProbeError::Load(format!("{error:#}")))?;
        if settings.sample_bytes != 0 {
            seed_sampling(&mut ebpf, settings.sample_bytes)?;
        }
        // The floor measures the uprobes alone: no tracepoints then.
        let tracepoints: &[(&str, &str)] = if settings.empty { &[] } else { &names::MAPPING_TRACEPOINTS };
        for &(program, tracepoint) in tracepoints {
            let tracepoint_program: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| ProbeError::Load(format!("program {program} is missing from the eBPF object")))?
                .try_into()
                .map_err(|error| ProbeError::Load(format!("{program}: {error:#}")))?;
            tracepoint_program.load().map_err(|error| ProbeError::Load(format!("{program}: {error:#}")))?;
            // Syscall tracepoints fire for every process; the programs keep only traced ones.
            tracepoint_program
                .attach("syscalls", tracepoint)
                .map_err(|error| ProbeError::Load(format!("attaching to syscalls/{tracepoint}: {error:#}")))?;
        }
        for name in [
            names::SIZE_ENTER,
            names::CALLOC_ENTER,
            names::ALIGNED_ENTER,
            names::REALLOC_ENTER,
            names::REALLOCARRAY_ENTER,
            names::POSIX_MEMALIGN_ENTER,
            names::ALLOC_EXIT,
            names::FREE_ENTER,
            names::DELETE_ENTER,
            names::WRAPPER_ENTER,
            names::WRAPPER_EXIT,
            names::FLOOR_ENTER,
            names::FLOOR_EXIT,
            unwind_names::LOADER_MAPPED,
        ] {
            uprobe(&mut ebpf, name)?
                .load()
                .map_err(|error| ProbeError::Load(format!("{name}: {error:#}")))?;
        }
        let block_slots = if tracks_blocks {
            let map = ebpf.map(names::BLOCK_SLOTS).ok_or_else(|| missing(names::BLOCK_SLOTS))?;
            let aya::maps::Map::Array(data) = map else {
                return Err(ProbeError::Load(format!("{} is not an array", names::BLOCK_SLOTS)));
            };
            let mapped = BlockSlots::map(data, 1 << block_slot_bits)
                .map_err(|error| ProbeError::Map { map: names::BLOCK_SLOTS, detail: format!("mapping it: {error}") })?;
            Some(mapped)
        } else {
            None
        };
        Ok(Self { ebpf, stats: None, empty: settings.empty, links: HashMap::new(), block_slots })
    }

    /// Takes the unwind tables' maps out of the loaded object, for the agent to fill in.
    pub fn unwind_tables(&mut self, capacity: crate::unwind::Capacity) -> std::io::Result<crate::unwind::KernelTables> {
        crate::unwind::KernelTables::take(&mut self.ebpf, capacity)
    }

    /// Has the kernel time every BPF program run from now on (BPF_ENABLE_STATS, about two
    /// clock reads per run), until these probes are dropped.
    pub fn enable_program_stats(&mut self) -> Result<(), ProbeError> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .map_err(|error| ProbeError::Load(format!("enabling BPF run-time stats: {error}")))?;
        self.stats = Some(fd);
        Ok(())
    }

    /// The programs that ran, with their runs and mean time per run; nothing unless this
    /// memtrace enabled the stats (someone else may have, for part of the time).
    pub fn program_costs(&self) -> Vec<ProgramCost> {
        if self.stats.is_none() {
            return Vec::new();
        }
        let mut costs: Vec<ProgramCost> = self
            .ebpf
            .programs()
            .filter_map(|(name, program)| {
                let info = program.info().ok()?;
                (info.run_count() > 0).then(|| ProgramCost {
                    program: name.to_owned(),
                    runs: info.run_count(),
                    ns_per_run: info.run_time().as_nanos() as f64 / info.run_count() as f64,
                })
            })
            .collect();
        costs.sort_by(|a, b| a.program.cmp(&b.program));
        costs
    }

    /// Starts forwarding kernel-side log records (aya-log) to the `log` crate.
    pub fn forward_kernel_logs(&mut self) {
        match aya_log::EbpfLogger::init(&mut self.ebpf) {
            Ok(logger) => match watch_readable(logger) {
                Ok(mut logger) => {
                    tokio::spawn(async move {
                        while let Ok(mut guard) = logger.readable_mut().await {
                            guard.get_inner_mut().flush();
                            guard.clear_ready();
                        }
                    });
                }
                Err(error) => log::warn!("kernel-side log unavailable: {error}"),
            },
            Err(error) => log::debug!("kernel-side log unavailable: {error}"),
        }
    }

    /// Attaches the entry (and, for allocating functions, return) probes to every allocator
    /// function, for one process or all.
    pub fn attach(&mut self, allocator: &Allocator, scope: Scope) -> Result<(), ProbeError> {
        if allocator.has_deletes() && !self.empty {
            // Before the first delete probe: from now on `free` checks delete's marks.
            let map = self.ebpf.map_mut(names::OUTER_FREES).ok_or_else(|| missing(names::OUTER_FREES))?;
            let mut flag: Array<_, u32> =
                Array::try_from(map).map_err(|error| map_error(names::OUTER_FREES, error))?;
            flag.set(0, 1, 0).map_err(|error| map_error(names::OUTER_FREES, error))?;
        }
        let (uprobe_scope, owner, whom) = match scope {
            Scope::Process(pid) => (UProbeScope::OneProcess(pid), pid.get(), format!("pid {pid}")),
            Scope::AllProcesses => (UProbeScope::AllProcesses, 0, "every process".to_owned()),
        };
        for point in &allocator.probes {
            let (entry, exit) = match self.empty {
                true => (names::FLOOR_ENTER, point.shape.return_program().map(|_| names::FLOOR_EXIT)),
                false => (point.shape.entry_program(), point.shape.return_program()),
            };
            let programs = std::iter::once(entry).chain(exit);
            for program in programs {
                let link = uprobe(&mut self.ebpf, program)?
                    .attach(point.file_offset, &point.object.path, uprobe_scope)
                    .map_err(|error| ProbeError::Attach {
                        function: point.symbol.clone(),
                        object: point.object.name.clone(),
                        detail: format!("{error:#}"),
                    })?;
                self.links.entry(owner).or_default().push((program, link));
                log::info!(
                    "attached {program} to {} at {:#x} in {} for {whom}",
                    point.symbol,
                    point.file_offset,
                    point.object.name
                );
            }
        }
        Ok(())
    }

    /// Attaches the loader program (`run` mode, see `unwind::debug_state_point`) at `offset` in
    /// the dynamic loader `path`.
    pub fn attach_loader(&mut self, path: &std::path::Path, offset: u64, scope: Scope) -> Result<(), ProbeError> {
        let (uprobe_scope, owner) = match scope {
            Scope::Process(pid) => (UProbeScope::OneProcess(pid), pid.get()),
            Scope::AllProcesses => (UProbeScope::AllProcesses, 0),
        };
        let program = unwind_names::LOADER_MAPPED;
        let link = uprobe(&mut self.ebpf, program)?.attach(offset, path, uprobe_scope).map_err(|error| {
            ProbeError::Attach { function: "_dl_debug_state".into(), object: path.display().to_string(), detail: format!("{error:#}") }
        })?;
        self.links.entry(owner).or_default().push((program, link));
        log::info!("attached {program} to _dl_debug_state at {offset:#x} in {}", path.display());
        Ok(())
    }

    /// Attaches the page-fault programs on every CPU, one sample every `period` faults.
    pub fn attach_faults(&mut self, period: u64) -> Result<(), ProbeError> {
        crate::faults::attach::attach(&mut self.ebpf, period)
    }

    /// Counts `pid` in (or out) when the probes are attached for all processes.
    pub fn trace(&mut self, pid: u32, traced: bool) -> Result<(), ProbeError> {
        // Both: the kernel reads the array for ids it has slots for, the hash map beyond.
        let map = self.ebpf.map_mut(names::TRACED_SLOTS).ok_or_else(|| missing(names::TRACED_SLOTS))?;
        let mut slots: Array<_, u8> = Array::try_from(map).map_err(|error| map_error(names::TRACED_SLOTS, error))?;
        if pid < slots.len() {
            slots.set(pid, u8::from(traced), 0).map_err(|error| map_error(names::TRACED_SLOTS, error))?;
        }
        let map = self.ebpf.map_mut(names::TRACED).ok_or_else(|| missing(names::TRACED))?;
        let mut set: AyaHashMap<_, u32, u8> =
            AyaHashMap::try_from(map).map_err(|error| map_error(names::TRACED, error))?;
        let result = if traced { set.insert(pid, 1, 0) } else { set.remove(&pid) };
        result.map_err(|error| map_error(names::TRACED, error))
    }

    /// Removes the probes attached for a process that has ended, freeing their descriptors,
    /// in the background.
    pub fn detach_process(&mut self, pid: u32) {
        let links = self.take_links(pid);
        std::thread::spawn(move || drop_together(links));
    }

    /// Removes every probe and waits until they are gone.
    pub fn detach_all(&mut self) {
        let pids: Vec<u32> = self.links.keys().copied().collect();
        let links = pids.into_iter().flat_map(|pid| self.take_links(pid)).collect();
        drop_together(links);
    }

    fn take_links(&mut self, pid: u32) -> Vec<UProbeLink> {
        let mut taken = Vec::new();
        for (program, link) in self.links.remove(&pid).unwrap_or_default() {
            match uprobe(&mut self.ebpf, program).map(|probe| probe.take_link(link)) {
                Ok(Ok(link)) => taken.push(link),
                Ok(Err(error)) => log::debug!("taking {program}'s link for pid {pid}: {error}"),
                Err(error) => log::debug!("{error}"),
            }
        }
        taken
    }

    /// Takes the ring buffer the events arrive on (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self.ebpf.take_map(names::EVENTS).ok_or_else(|| missing(names::EVENTS))?;
        RingBuf::try_from(map).map_err(|error| map_error(names::EVENTS, error))
    }

    /// Reads the kernel side's drop counters.
    pub fn counters(&self) -> Result<KernelCounters, ProbeError> {
        let map = self.ebpf.map(names::COUNTERS).ok_or_else(|| missing(names::COUNTERS))?;
        let array: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|error| map_error(names::COUNTERS, error))?;
        let read = |counter: Counter| -> Result<u64, ProbeError> {
            let values =
                array.get(&(counter as u32), 0).map_err(|error| map_error(names::COUNTERS, error))?;
            Ok(values.iter().sum())
        };
        Ok(KernelCounters {
            ring_buffer_full: read(Counter::RingBufferFull)?,
            stack_capture_failed: read(Counter::StackCaptureFailed)?,
            in_flight_full: read(Counter::InFlightFull)?,
            stale_in_flight: read(Counter::StaleInFlight)?,
            argument_unreadable: read(Counter::ArgumentUnreadable)?,
            null_frees: read(Counter::NullFree)?,
            live_blocks_full: read(Counter::LiveBlocksFull)?,
            stack_sums_full: read(Counter::StackSumsFull)?,
            unknown_frees: read(Counter::UnknownFree)?,
            failed_reallocs: read(Counter::FailedRealloc)?,
        })
    }

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
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, error)| ProbeError::Map { map: names::TOTALS_SLOTS, detail: format!("counting CPUs: {error}") })?;
        crate::map_batch::read_per_cpu_array(map, cpus)
            .map_err(|error| ProbeError::Map { map: names::TOTALS_SLOTS, detail: error.to_string() })
    }

    /// The blocks that found no room in the block table.
    fn overflowed_blocks(&self) -> Result<Vec<(BlockKey, LiveBlock)>, ProbeError> {
        let Some(aya::maps::Map::HashMap(map)) = self.ebpf.map(names::LIVE_BLOCKS) else {
            return Err(missing(names::LIVE_BLOCKS));
        };
        crate::map_batch::read_hash_map(map)
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

/// The size of an open-addressed kernel table (the block table, the per-stack totals) for
/// `entries` entries, as a power of two: at least twice as many slots, so that an entry nearly
/// always finds room within its window (half full, linear probing places one a slot or two
/// from home on average).
fn table_bits(entries: u32) -> u32 {
    (u64::from(entries) * 2).next_power_of_two().trailing_zeros().clamp(1, 31)
}

/// Most thread and process ids the kernel's per-id arrays have a slot for: the kernel's
/// `pid_max` (32,768 by default), up to a bound that keeps the arrays to a few megabytes; ids
/// beyond use the hash maps (see the kernel's `by_id`).
fn id_slots() -> u32 {
    const MOST_SLOTS: u32 = 1 << 18;
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .map_or(32_768, |pid_max| pid_max.min(MOST_SLOTS))
}

/// `--sample-bytes`: fills the table of gaps between samples (exponential with the given
/// mean, by inverse transform at evenly spaced quantiles) and starts each CPU's countdown at a
/// random one, so that the first block is not always sampled.
fn seed_sampling(ebpf: &mut Ebpf, mean: u64) -> Result<(), ProbeError> {
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

/// Drops links concurrently. Removing a uprobe waits for the kernel's grace period (about a
/// tenth of a second here): one after another the waits add up, side by side they overlap.
fn drop_together(links: Vec<UProbeLink>) {
    const THREADS: usize = 64;
    let per_thread = links.len().div_ceil(THREADS).max(1);
    let mut links = links;
    std::thread::scope(|scope| {
        while !links.is_empty() {
            let batch: Vec<UProbeLink> = links.drain(..per_thread.min(links.len())).collect();
            scope.spawn(move || drop(batch));
        }
    });
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe, ProbeError> {
    ebpf.program_mut(name)
        .ok_or_else(|| ProbeError::Load(format!("program {name} is missing from the eBPF object")))?
        .try_into()
        .map_err(|error| ProbeError::Load(format!("{name}: {error:#}")))
}

fn missing(map: &'static str) -> ProbeError {
    ProbeError::Map { map, detail: "missing from the eBPF object".into() }
}

fn map_error(map: &'static str, error: aya::maps::MapError) -> ProbeError {
    ProbeError::Map { map, detail: format!("{error:#}") }
}
