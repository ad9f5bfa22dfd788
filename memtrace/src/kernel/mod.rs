//! The only code that touches aya: loading memtrace's eBPF programs, attaching them to a
//! target's allocator, and reading what the kernel side keeps (the ring buffer of events in
//! `ring_buffer`, the block table in `block_table`, whole maps in `batch_read`, the page-fault
//! programs in `faults`).
//!
//! Uprobes are attached with uprobe_multi links where the kernel has them (`uprobe_multi`),
//! perf-event uprobes otherwise; the system calls that map memory are seen through raw
//! tracepoints. Both go away at once when dropped, where perf-event uprobes and tracepoints
//! each wait for grace periods, one after another.
//!
//! Every link lives inside the `Probes` value: dropping it, or memtrace exiting for any reason
//! (the kernel closes the descriptors), removes every probe.
pub mod batch_read;
pub mod block_table;
mod counters;
mod error;
pub mod execs;
pub mod faults;
mod links;
mod loading;
pub mod memory;
pub mod ring_buffer;
mod sampling;
mod sums;
mod uprobe_multi;

use std::{collections::HashMap, num::NonZeroU32, os::fd::AsFd, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as AyaHashMap, MapData, RingBuf},
    programs::{
        UProbe,
        uprobe::{UProbeLink, UProbeScope},
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
    kernel::{
        block_table::BlockSlots,
        links::{Link, Links},
        ring_buffer::watch_readable,
    },
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
    /// One perf-event uprobe per point even where uprobe_multi links exist (testing the path
    /// older kernels take).
    pub perf_event_uprobes: bool,
    /// `Alloc` events carry a summary of the block's first words as handed out (leak kinds
    /// are scanned for; see `memtrace_common::handout`).
    pub handout_words: bool,
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
    /// Every process mapping the object (`run` following forks on kernels without uprobe_multi
    /// links): new children need no probes of their own, only an entry in the traced set that
    /// every program checks. Each other process calling these functions meanwhile pays a probe
    /// hit; per-process perf-event uprobes instead would cost every child about two seconds at
    /// its exit (the kernel removes them one grace period at a time, under one lock).
    AllProcesses,
}

/// memtrace's programs, loaded, with their links and maps.
pub struct Probes {
    ebpf: Ebpf,
    /// Held while the kernel keeps run-time stats for BPF programs (`--program-stats`).
    stats: Option<std::os::fd::OwnedFd>,
    empty: bool,
    /// Uprobes are attached with uprobe_multi links (Linux 6.6), else one perf event each.
    multi: bool,
    /// The links made for each process (key 0: for all), so they can be let go when it ends.
    links: HashMap<u32, Links>,
    /// Ended processes' links being removed in the background.
    detaching: Vec<std::thread::JoinHandle<()>>,
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
        let handout_words = u8::from(settings.handout_words);
        let tracks_blocks = settings.combined || settings.sample_bytes != 0;
        let unwind_mode = u8::from(settings.unwind != crate::unwind::Method::FramePointer);
        // Without the kernel's BTF: it only serves CO-RE relocations, which memtrace's programs do
        // not use, and parsing it is a tenth of the start (see vendor/aya/MEMTRACE-PATCH.md).
        let mut ebpf = EbpfLoader::without_kernel_btf()
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
            .override_global(names::HANDOUT_WORDS, &handout_words, true)
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
        let multi = !settings.perf_event_uprobes && uprobe_multi::supported();
        if !multi {
            log::info!("one perf-event uprobe per probe point: their removal takes a grace period each");
        }
        loading::load_programs(&mut ebpf, multi, settings.empty)?;
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
        Ok(Self {
            ebpf,
            stats: None,
            empty: settings.empty,
            multi,
            links: HashMap::new(),
            detaching: Vec::new(),
            block_slots,
        })
    }

    /// Whether uprobes go through uprobe_multi links, whose removal costs little: then even
    /// `run` following forks can afford probes per process.
    pub fn cheap_to_detach(&self) -> bool {
        self.multi
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
        // One link per program and file, the return probes' first: a call that enters while
        // only one of the two is attached is then seen returning or not at all, never left in
        // flight (which would count as a return missed).
        let mut groups: Vec<ProbeGroup> = Vec::new();
        for point in &allocator.probes {
            let (entry, exit) = match self.empty {
                true => (names::FLOOR_ENTER, point.shape.return_program().map(|_| names::FLOOR_EXIT)),
                false => (point.shape.entry_program(), point.shape.return_program()),
            };
            let programs = exit.map(|exit| (exit, true)).into_iter().chain(std::iter::once((entry, false)));
            for (program, at_return) in programs {
                let same = |group: &&mut ProbeGroup| group.program == program && group.path == point.object.path;
                match groups.iter_mut().find(same) {
                    Some(group) => group.points.push((point.symbol.clone(), point.file_offset)),
                    None => groups.push(ProbeGroup {
                        program,
                        at_return,
                        path: point.object.path.clone(),
                        object: point.object.name.clone(),
                        points: vec![(point.symbol.clone(), point.file_offset)],
                    }),
                }
            }
        }
        groups.sort_by_key(|group| !group.at_return);
        for group in &groups {
            self.attach_group(group, scope)?;
        }
        Ok(())
    }

    /// Attaches the loader program (`run` mode, see `unwind::debug_state_point`) at `offset` in
    /// the dynamic loader `path`.
    pub fn attach_loader(&mut self, path: &Path, offset: u64, scope: Scope) -> Result<(), ProbeError> {
        let group = ProbeGroup {
            program: unwind_names::LOADER_MAPPED,
            at_return: false,
            path: path.to_owned(),
            object: path.display().to_string(),
            points: vec![("_dl_debug_state".to_owned(), offset)],
        };
        self.attach_group(&group, scope)
    }

    /// Attaches one program at every point of a group: one uprobe_multi link, or one
    /// perf-event uprobe per point.
    fn attach_group(&mut self, group: &ProbeGroup, scope: Scope) -> Result<(), ProbeError> {
        let (pid, owner, whom) = match scope {
            Scope::Process(pid) => (Some(pid), pid.get(), format!("pid {pid}")),
            Scope::AllProcesses => (None, 0, "every process".to_owned()),
        };
        let failed = |detail: String| ProbeError::Attach {
            function: group.points.iter().map(|(symbol, _)| symbol.as_str()).collect::<Vec<_>>().join(", "),
            object: group.object.clone(),
            detail,
        };
        let program = uprobe(&mut self.ebpf, group.program)?;
        let mut made = Vec::with_capacity(group.points.len());
        if self.multi {
            let offsets: Vec<u64> = group.points.iter().map(|&(_, offset)| offset).collect();
            let target = uprobe_multi::Target { path: &group.path, offsets: &offsets, pid, returns: group.at_return };
            let fd = program.fd().map_err(|error| failed(crate::error_text::with_causes(&error)))?;
            let link = uprobe_multi::attach(fd.as_fd(), &target)
                .map_err(|error| failed(format!("creating its uprobe_multi link: {error}")))?;
            made.push(Link::Multi(link));
        } else {
            let uprobe_scope = pid.map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess);
            for &(_, offset) in &group.points {
                let id = program
                    .attach(offset, &group.path, uprobe_scope)
                    .map_err(|error| failed(crate::error_text::with_causes(&error)))?;
                let link: UProbeLink =
                    program.take_link(id).map_err(|error| failed(crate::error_text::with_causes(&error)))?;
                made.push(Link::Perf(link));
            }
        }
        let links = self.links.entry(owner).or_default();
        for link in made {
            links.add(link, group.at_return);
        }
        for (symbol, offset) in &group.points {
            log::info!("attached {} to {symbol} at {offset:#x} in {} for {whom}", group.program, group.object);
        }
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

    /// Removes the probes attached for a process, freeing their descriptors, in the
    /// background. `ended`: the process is gone, so entry and return probes can go together.
    pub fn detach_process(&mut self, pid: u32, ended: bool) {
        self.detaching.retain(|removal| !removal.is_finished());
        if let Some(links) = self.links.remove(&pid) {
            let removal = move || if ended { links.drop_at_once() } else { links.drop_in_order() };
            self.detaching.push(std::thread::spawn(removal));
        }
    }

    /// Removes every probe and waits until they are gone (those of ended processes too: else
    /// the kernel would close what is left one descriptor after another at memtrace's exit,
    /// waiting for grace periods in turn).
    pub fn detach_all(&mut self) {
        let mut all = Links::default();
        for (_, links) in self.links.drain() {
            all.extend(links);
        }
        all.drop_in_order();
        for removal in self.detaching.drain(..) {
            let _ = removal.join();
        }
    }

    /// `serve --exe`/`--cgroup`: starts watching every exec on the machine (once).
    pub fn watch_execs(&mut self) -> Result<execs::ExecWatch, ProbeError> {
        execs::ExecWatch::start(&mut self.ebpf)
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

/// One program to attach at some points of one file.
struct ProbeGroup {
    program: &'static str,
    at_return: bool,
    path: std::path::PathBuf,
    object: String,
    /// (symbol, file offset)
    points: Vec<(String, u64)>,
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
