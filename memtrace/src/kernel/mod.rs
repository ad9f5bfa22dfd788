//! The only code that touches aya: loading memtrace's eBPF programs, attaching them to a
//! target's allocator, and reading what the kernel side keeps (the ring buffer of events in
//! `ring_buffer`, the block table in `block_table`, whole maps in `batch_read`, the page-fault
//! programs in `faults`).
//!
//! Every link lives inside the `Probes` value: dropping it, or memtrace exiting for any reason
//! (the kernel closes the perf event fds), removes every probe.
pub mod batch_read;
pub mod block_table;
mod counters;
mod error;
pub mod faults;
pub mod memory;
pub mod ring_buffer;
mod sampling;
mod sums;

use std::{collections::HashMap, num::NonZeroU32};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as AyaHashMap, MapData, RingBuf},
    programs::{
        TracePoint, UProbe,
        uprobe::{UProbeLink, UProbeLinkId, UProbeScope},
    },
};
pub use counters::KernelCounters;
pub use error::ProbeError;
use error::{map_error, missing};
use memory::MapSizes;
use memtrace_common::{names, unwind::names as unwind_names};
pub use sums::KernelStackSums;

use crate::{
    attach::allocator::Allocator,
    kernel::{block_table::BlockSlots, ring_buffer::watch_readable},
    report::ProgramCost,
};

/// The kernel-side object built by `build.rs` from `memtrace-ebpf`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace"));

/// Why an empty object cannot be loaded: `build.rs` writes one when `MEMTRACE_NO_EBPF=1`.
pub const NO_EBPF: &str = "this memtrace was built without its kernel programs (MEMTRACE_NO_EBPF=1, as the fuzz \
                           targets build it); rebuild it without MEMTRACE_NO_EBPF to trace";

/// Settings fixed at load time.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSettings {
    pub ring_buffer_bytes: u32,
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
    /// Memory the maps may take, instead of /proc/meminfo's MemAvailable (testing).
    pub mem_available: Option<u64>,
    /// How stacks are walked (`--unwind`), and the unwind tables' arrays.
    pub unwind: crate::unwind::Method,
    pub unwind_capacity: crate::unwind::Capacity,
}

/// Which processes an attachment fires for.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// One process: the kernel puts the breakpoints in its memory only (no cost to any other
    /// process).
    Process(NonZeroU32),
    /// Every process mapping the object (`run` following forks): new children need no probes
    /// of their own, only an entry in the traced set that every program checks. Each other
    /// process calling these functions meanwhile pays a probe hit; removing per-process probes
    /// instead would cost every child about two seconds at its exit (the kernel removes
    /// perf-event uprobes one grace period at a time, under one lock).
    AllProcesses,
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

impl Probes {
    /// Loads the programs and maps (nothing is attached yet).
    /// Refuses, before creating any, maps that would take more memory than is available.
    pub fn load(settings: ProbeSettings) -> Result<Self, ProbeError> {
        if EBPF_OBJECT.is_empty() {
            return Err(ProbeError::Load(NO_EBPF.to_owned()));
        }
        raise_memlock_limit();
        let sizes = MapSizes::of(&settings);
        let cpus = aya::util::nr_cpus().map_or(1, |cpus| cpus as u64);
        match settings.mem_available.or_else(memory::mem_available) {
            Some(available) => memory::check(&sizes.footprint(cpus), available)?,
            None => log::debug!("no MemAvailable in /proc/meminfo: the maps' size is not checked"),
        }
        let MapSizes {
            ring_bytes,
            stack_slots,
            totals_slot_bits,
            live_blocks,
            block_slot_bits,
            block_groups,
            id_slots,
            ..
        } = sizes;
        let wakeup_bytes = u64::from(ring_bytes / 4);
        let combined = u8::from(settings.combined);
        let tracks_blocks = settings.combined || settings.sample_bytes != 0;
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
            .map_err(|error| ProbeError::Load(crate::error_text::with_causes(&error)))?;
        if settings.sample_bytes != 0 {
            sampling::seed_sampling(&mut ebpf, settings.sample_bytes)?;
        }
        // The floor measures the uprobes alone: no tracepoints then.
        let tracepoints: &[(&str, &str)] = if settings.empty { &[] } else { &names::MAPPING_TRACEPOINTS };
        for &(program, tracepoint) in tracepoints {
            let tracepoint_program: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| ProbeError::Load(format!("program {program} is missing from the eBPF object")))?
                .try_into()
                .map_err(|error| ProbeError::Load(format!("{program}: {}", crate::error_text::with_causes(&error))))?;
            tracepoint_program
                .load()
                .map_err(|error| ProbeError::Load(format!("{program}: {}", load_error_text(&error))))?;
            // Syscall tracepoints fire for every process; the programs keep only traced ones.
            tracepoint_program.attach("syscalls", tracepoint).map_err(|error| {
                ProbeError::Load(format!(
                    "attaching to syscalls/{tracepoint}: {}",
                    crate::error_text::with_causes(&error)
                ))
            })?;
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
                .map_err(|error| ProbeError::Load(format!("{name}: {}", load_error_text(&error))))?;
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
            let mut flag: Array<_, u32> = Array::try_from(map).map_err(|error| map_error(names::OUTER_FREES, error))?;
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
            // The return probe first: a call that enters while only one of the two is attached
            // is then seen returning or not at all, never left in flight (which would count as a
            // return missed).
            let programs = exit.into_iter().chain(std::iter::once(entry));
            for program in programs {
                let link = uprobe(&mut self.ebpf, program)?
                    .attach(point.file_offset, &point.object.path, uprobe_scope)
                    .map_err(|error| ProbeError::Attach {
                        function: point.symbol.clone(),
                        object: point.object.name.clone(),
                        detail: crate::error_text::with_causes(&error),
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
            ProbeError::Attach {
                function: "_dl_debug_state".into(),
                object: path.display().to_string(),
                detail: crate::error_text::with_causes(&error),
            }
        })?;
        self.links.entry(owner).or_default().push((program, link));
        log::info!("attached {program} to _dl_debug_state at {offset:#x} in {}", path.display());
        Ok(())
    }

    /// Attaches the page-fault programs on every CPU, one sample every `period` faults.
    pub fn attach_faults(&mut self, period: u64) -> Result<(), ProbeError> {
        faults::attach(&mut self.ebpf, period)
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
        std::thread::spawn(move || links.drop_in_order());
    }

    /// Removes every probe and waits until they are gone.
    pub fn detach_all(&mut self) {
        let pids: Vec<u32> = self.links.keys().copied().collect();
        let mut all = TakenLinks::default();
        for pid in pids {
            let taken = self.take_links(pid);
            all.entries.extend(taken.entries);
            all.returns.extend(taken.returns);
        }
        all.drop_in_order();
    }

    fn take_links(&mut self, pid: u32) -> TakenLinks {
        let mut taken = TakenLinks::default();
        for (program, link) in self.links.remove(&pid).unwrap_or_default() {
            match uprobe(&mut self.ebpf, program).map(|probe| probe.take_link(link)) {
                Ok(Ok(link)) if RETURN_PROGRAMS.contains(&program) => taken.returns.push(link),
                Ok(Ok(link)) => taken.entries.push(link),
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
}

/// Kernels before 5.11 charge BPF maps to `RLIMIT_MEMLOCK` (often 64 KiB, or 8 MiB): lift it, as
/// aya's template does. Newer kernels charge the memory cgroup instead and ignore the limit.
fn raise_memlock_limit() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};
    if let Err(error) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        log::debug!("cannot lift RLIMIT_MEMLOCK ({error}); on Linux before 5.11 large maps may fail to load");
    }
}

/// Most thread and process ids the kernel's per-id arrays have a slot for: the kernel's
/// `pid_max` (32,768 by default), up to a bound that keeps the arrays to a few megabytes; ids
/// beyond use the hash maps (see the kernel's `by_id`).
pub(crate) fn id_slots() -> u32 {
    const MOST_SLOTS: u32 = 1 << 18;
    procfs::sys::kernel::pid_max()
        .ok()
        .and_then(|pid_max| u32::try_from(pid_max).ok())
        .map_or(32_768, |pid_max| pid_max.min(MOST_SLOTS))
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe, ProbeError> {
    ebpf.program_mut(name)
        .ok_or_else(|| ProbeError::Load(format!("program {name} is missing from the eBPF object")))?
        .try_into()
        .map_err(|error| ProbeError::Load(format!("{name}: {}", crate::error_text::with_causes(&error))))
}

/// The programs attached at a function's return.
const RETURN_PROGRAMS: [&str; 3] = [names::ALLOC_EXIT, names::WRAPPER_EXIT, names::FLOOR_EXIT];

/// Links taken off the programs, to be dropped.
#[derive(Default)]
struct TakenLinks {
    entries: Vec<UProbeLink>,
    returns: Vec<UProbeLink>,
}

impl TakenLinks {
    /// The entry probes first, then the return probes: a call that entered while both were
    /// attached is still seen returning, and none enters once only its return probe is left
    /// (its in-flight state would otherwise be counted as a return missed).
    fn drop_in_order(self) {
        drop_together(self.entries);
        drop_together(self.returns);
    }
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

/// A program's load error on one line, its OS error kept. The verifier's log explains a
/// rejection (EACCES, EINVAL); after another failure (EMFILE, ENOMEM) it is the log of a
/// verification that passed, and is left out.
pub(crate) fn load_error_text(error: &aya::programs::ProgramError) -> String {
    match error {
        aya::programs::ProgramError::LoadError { io_error, .. }
            if !matches!(io_error.raw_os_error(), Some(libc::EACCES | libc::EINVAL)) =>
        {
            format!("the BPF_PROG_LOAD syscall failed: {io_error}")
        }
        other => crate::error_text::with_causes(other),
    }
}
