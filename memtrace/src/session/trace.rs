//! One trace: the kernel side loaded and attached, the events it sends taken in, what the
//! agent made of them, and the report at the end. `run` and `record` drive it.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    num::NonZeroU32,
    os::unix::fs::MetadataExt,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use memtrace_common::{Counter, EventKind, unwind::stack_flags};

use super::{monotonic_ns, options::TraceOptions};
use crate::{
    analyze::{memory_picture, reachability::LeakKinds},
    assemble::{self, NamedStack, ReportInput},
    attach::allocator::Allocator,
    collect::{collected::Collected, fault_table::FaultTable, heap::HeapTable, outside_malloc},
    kernel::{KernelCounters, Probes, Scope, ring_buffer::EventReader},
    report::{
        Counts, MemoryPicture, Mode, ProcessReport, ProgramCost, Report, Target, Window,
        options::{Format, RenderOptions},
    },
    symbolize::Symbolizer,
    target::launch::Ending,
    unwind::{self, Unwinder},
};

/// A probe point's identity: the file (device, inode) and the offset in it. Two paths to one
/// file (`/proc/PID/root/...`, a symlink) are one point, probed once per process.
type PointId = (u64, u64, u64);

pub struct Trace {
    pub kernel: KernelSide,
    /// Events outside [start, end] (CLOCK_MONOTONIC ns, the clock of `bpf_ktime_get_ns`) are
    /// outside the trace: before every probe was attached, or after the window closed while
    /// the probes were being removed.
    window: Window,
    pub collected: Collected,
    pub findings: Findings,
    pub processes: TracedProcesses,
    pub symbolizer: Symbolizer,
    /// Unwind tables for the kernel's stack walk (none with `--unwind fp`).
    unwinder: Option<Unwinder>,
    options: TraceOptions,
    /// The report keeps every stack until the CI settings have looked at them (they trim to
    /// `--top` after).
    pub all_stacks: bool,
}

/// The kernel side: the probes while attached, and what they send and count.
pub struct KernelSide {
    pub probes: Option<Probes>,
    events: EventReader,
    /// The kernel side wakes memtrace only when the ring buffer is a quarter full; between
    /// wake-ups memtrace drains it on this timer.
    drain_timer: tokio::time::Interval,
    /// Events taken in (for the status line's rate).
    pub events_seen: u64,
    /// The counters, read when the probes are removed (or at an interval).
    pub counters: KernelCounters,
    /// `--program-stats`: what each kernel-side program cost, read when the probes are removed.
    program_costs: Vec<ProgramCost>,
}

impl KernelSide {
    /// Everything lost so far: the kernel's losses and the records that could not be decoded.
    pub fn lost_so_far(&self) -> u64 {
        let kernel =
            self.probes.as_ref().and_then(|probes| probes.counters().ok()).map_or(0, |counters| counters.lost());
        kernel.saturating_add(self.events.malformed())
    }
}

/// What the analysis found at the end of each process: leak kinds and the memory picture.
#[derive(Default)]
pub struct Findings {
    /// Leak kinds of the blocks of each process scanned at its end.
    pub leaks: LeakKinds,
    /// Each process's memory picture, read while it was still alive.
    pictures: BTreeMap<u32, MemoryPicture>,
    /// The processes whose picture was read or tried (a failure was reported then).
    pictures_tried: HashSet<u32>,
}

impl Findings {
    /// Reads the memory picture of a process that is still alive (stopped at its exit, or
    /// running at the end of the trace); a failure is a warning, the report goes on.
    pub fn capture_picture(&mut self, pid: u32) {
        self.pictures_tried.insert(pid);
        match memory_picture::capture(pid) {
            Ok(picture) => {
                self.pictures.insert(pid, picture);
            }
            Err(error) => eprintln!("memtrace: warning: no memory picture for process {pid}: {error}"),
        }
    }

    pub fn picture_tried(&self, pid: u32) -> bool {
        self.pictures_tried.contains(&pid)
    }
}

/// The processes traced and the probes each got.
pub struct TracedProcesses {
    /// Every process traced, by pid.
    pub all: BTreeMap<u32, ProcessReport>,
    /// Probes are attached once for all processes and the traced set says which count (`run`
    /// following forks); otherwise each process gets its own.
    all_processes: bool,
    /// The points probed for each process (key 0: for all), so that an exec adds only what is
    /// new.
    attached: HashMap<u32, HashSet<PointId>>,
}

impl TracedProcesses {
    /// How `pid`'s probes are attached, and the key of its points in `attached`.
    fn scope_of(&self, pid: NonZeroU32) -> (Scope, u32) {
        if self.all_processes { (Scope::AllProcesses, 0) } else { (Scope::Process(pid), pid.get()) }
    }

    /// Lets `pid`'s own probes go (none when they are shared by all processes); `ended`: the
    /// process is gone, so no call of its can be in flight.
    fn forget(&mut self, probes: Option<&mut Probes>, pid: u32, ended: bool) {
        let Some(probes) = probes else { return };
        let _ = probes.trace(pid, false);
        self.detach(probes, pid, ended);
        if !self.all_processes {
            self.attached.remove(&pid);
        }
    }

    /// Removes `pid`'s own links, in the background (none when the probes are shared by all
    /// processes); `ended`: no call of its can be in flight.
    fn detach(&self, probes: &mut Probes, pid: u32, ended: bool) {
        if !self.all_processes {
            probes.detach_process(pid, ended);
        }
    }

    pub fn exited(&self, pid: u32) -> bool {
        self.all.get(&pid).is_some_and(|process| process.exited)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.all.keys().copied().collect()
    }
}

impl Trace {
    /// Loads the programs (nothing attached yet). `follows_forks`: new processes join the
    /// trace as they are forked. Each process then gets its own probes where they are cheap to
    /// remove (uprobe_multi links); on older kernels the probes are attached once for every
    /// process instead (see [`Scope::AllProcesses`]).
    pub fn load(options: &TraceOptions, follows_forks: bool) -> Result<Self> {
        let (min_size, max_size) = (options.probes.min_size, options.probes.max_size);
        if min_size > max_size {
            bail!("--min-size {min_size} is above --max-size {max_size}: no block would be recorded");
        }
        let mut probes = Probes::load(options.probes)?;
        let all_processes = follows_forks && !probes.cheap_to_detach();
        probes.forward_kernel_logs();
        let faults = options.fault_period.map(FaultTable::new);
        if let Some(table) = &faults {
            probes.attach_faults(table.period())?;
        }
        if options.program_stats {
            probes.enable_program_stats()?;
        }
        let unwinder = match options.probes.unwind {
            unwind::Method::FramePointer => None,
            method => {
                let capacity = options.probes.unwind_capacity;
                let tables = probes.unwind_tables(capacity).context("taking the unwind tables' maps")?;
                Some(Unwinder::new(tables, method, options.unwind_memory, options.debug_dirs.clone()))
            }
        };
        let events = EventReader::new(probes.take_events()?).context("watching the ring buffer")?;
        let mut heap = match options.probes.sample_bytes {
            0 => HeapTable::new(),
            mean => HeapTable::sampled(mean),
        };
        if options.probes.handout_words {
            // The events carry what the allocator left in each block, for the scan.
            heap.remember_first_words();
        }
        let mut drain_timer = tokio::time::interval(Duration::from_millis(10));
        drain_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Self {
            kernel: KernelSide {
                probes: Some(probes),
                events,
                drain_timer,
                events_seen: 0,
                counters: KernelCounters::default(),
                program_costs: Vec::new(),
            },
            window: Window { start_monotonic_ns: 0, end_monotonic_ns: u64::MAX },
            collected: Collected::new(heap, faults),
            findings: Findings::default(),
            processes: TracedProcesses { all: BTreeMap::new(), all_processes, attached: HashMap::new() },
            symbolizer: Symbolizer::with_debug_dirs(options.debug_dirs.clone()),
            unwinder,
            options: options.clone(),
            all_stacks: false,
        })
    }

    /// Waits until events may have arrived (a wake-up from the kernel, or the drain timer) and
    /// takes them in.
    pub async fn take_events(&mut self) -> Result<()> {
        tokio::select! {
            ready = self.kernel.events.readable() => ready.context("reading the ring buffer")?,
            _ = self.kernel.drain_timer.tick() => {}
        }
        self.drain();
        Ok(())
    }

    /// Run mode, at the target's first exec stop: until then its pid was memtrace's own forked
    /// child (released from its hold, calling execve), whose page faults (its stack's
    /// copy-on-write pages, and the kernel's writes of the new image's stack during execve,
    /// with the old image's registers) are not the command's. Forgets them, and those still
    /// unread in the ring buffer.
    pub fn forget_launcher_faults(&mut self, pid: u32) {
        let now = monotonic_ns();
        if let Some(faults) = self.collected.faults.as_mut() {
            faults.forget_before(pid, now);
        }
    }

    /// Takes in every event waiting in the ring buffer.
    pub fn drain(&mut self) {
        let (collected, window, seen) = (&mut self.collected, self.window, &mut self.kernel.events_seen);
        let (unwinder, stack_depth) = (&mut self.unwinder, self.options.probes.stack_depth as usize);
        self.kernel.events.drain(|event, rest| {
            *seen += 1;
            let mut event = *event;
            // Code mapped: applied before the events after it, whose walks may need it (even
            // outside the window).
            if let Some(unwinder) = unwinder.as_mut() {
                unwind::apply_mapping_event(unwinder, &event);
            }
            if !(window.start_monotonic_ns..=window.end_monotonic_ns).contains(&event.timestamp_ns) {
                return;
            }
            // A record with its stack (a fault's may be empty); a walk the kernel handed over is
            // finished first.
            let stack = unwind::carries_stack(&event, rest)
                .then(|| unwind::stack_of_record(unwinder.as_mut(), &event, rest, stack_depth));
            event.flags &= !stack_flags::ALL;
            if event.kind == EventKind::Shmat as u32 {
                // The kernel side sees only the segment id; its size is in /proc.
                event.size = outside_malloc::sysv_segment_size(event.old_addr).unwrap_or(0);
            }
            collected.apply(event, stack.as_ref().map(|(frames, truncated)| (&frames[..], *truncated)));
        });
    }

    /// `run` mode: has the loader stop a thread of `pid` when it has mapped code the kernel's
    /// walk does not know yet, before that code runs (see `unwind::debug_state_point`).
    pub fn watch_loader(&mut self, pid: u32) {
        if self.unwinder.is_none() {
            return;
        }
        let Some((path, offset)) = unwind::debug_state_point(pid) else {
            log::info!("process {pid} has no dynamic loader to watch");
            return;
        };
        let Some(pid) = NonZeroU32::new(pid) else { return };
        let (scope, key) = self.processes.scope_of(pid);
        let id = std::fs::metadata(&path).map(|file| (file.dev(), file.ino(), offset)).unwrap_or((0, 0, offset));
        if !self.processes.attached.entry(key).or_default().insert(id) {
            return;
        }
        if let Some(probes) = &mut self.kernel.probes
            && let Err(error) = probes.attach_loader(&path, offset, scope)
        {
            log::warn!(
                "{error}; code loaded by process {pid} is known to stack walks only as memtrace reads its mmap events"
            );
        }
    }

    /// Whether thread `tid` is stopped by the loader program (its record is cleared).
    pub fn loader_stopped(&mut self, tid: u32) -> bool {
        self.unwinder.as_mut().is_some_and(|unwinder| unwinder.loader_stopped(tid))
    }

    /// Gives the kernel's unwinder the code `pid` maps now: when tracing of a running process
    /// starts, and while a process is held at its fork or exec (before its image runs).
    pub fn track_code(&mut self, pid: u32) {
        if let Some(unwinder) = &mut self.unwinder {
            unwinder.track(pid);
        }
    }

    /// Attaches the allocator's probes for `pid`, skipping points already probed for it.
    pub fn attach(&mut self, allocator: &Allocator, pid: u32) -> Result<()> {
        let pid = NonZeroU32::new(pid).context("pid 0 cannot be traced")?;
        let (scope, key) = self.processes.scope_of(pid);
        let attached = self.processes.attached.entry(key).or_default();
        let new = Allocator {
            probes: allocator
                .probes
                .iter()
                .filter(|point| {
                    let id = std::fs::metadata(&point.object.path)
                        .map(|file| (file.dev(), file.ino(), point.file_offset))
                        .unwrap_or((0, 0, point.file_offset));
                    attached.insert(id)
                })
                .cloned()
                .collect(),
        };
        if let Some(probes) = &mut self.kernel.probes {
            probes.attach(&new, scope)?;
            probes.trace(pid.get(), true)?;
        }
        Ok(())
    }

    /// Starts keeping the record of a traced process.
    pub fn track(&mut self, pid: u32, parent_pid: Option<u32>, command: Vec<String>) {
        let process = ProcessReport {
            pid,
            parent_pid,
            command,
            exit_code: None,
            signal: None,
            exited: false,
            summary: Counts::default(),
            leaks: None,
        };
        self.processes.all.insert(pid, process);
    }

    /// A traced process ended (how, when known): its probes go.
    pub fn ended(&mut self, pid: u32, ending: Option<Ending>) {
        if let Some(process) = self.processes.all.get_mut(&pid) {
            process.exited = true;
            match ending {
                Some(Ending::Exited(code)) => process.exit_code = Some(code),
                Some(Ending::Killed(signal)) => process.signal = Some(signal),
                None => {}
            }
        }
        self.processes.forget(self.kernel.probes.as_mut(), pid, true);
        if let Some(unwinder) = &mut self.unwinder {
            unwinder.forget(pid);
        }
    }

    /// A traced process is held at its exit, every thread of it stopped for good: none runs its
    /// code again, so its probes start going now, while it is scanned, rather than after.
    pub fn exiting(&mut self, pid: u32) {
        if let Some(probes) = &mut self.kernel.probes {
            self.processes.detach(probes, pid, true);
        }
    }

    /// `run --trace-only`: `pid` exec'd a program that is not traced. It is still followed, but
    /// its events no longer count and its own probes go (a later exec may attach them again).
    pub fn untrace(&mut self, pid: u32) {
        self.processes.forget(self.kernel.probes.as_mut(), pid, false);
        if let Some(unwinder) = &mut self.unwinder {
            unwinder.forget(pid);
        }
    }

    /// `serve`: forgets a process that exited and was reported since: its blocks, growth and
    /// picture, so that weeks of processes coming and going do not add up in the agent.
    pub fn drop_process(&mut self, pid: u32) {
        // Its stacks go, but for those another process's numbers refer to too.
        let (mut theirs, mut kept) = self.collected.heap.stacks_referred(pid);
        for (owner, stack_id, _) in self.collected.faults.iter().flat_map(|faults| faults.stacks()) {
            if owner == pid {
                theirs.insert(stack_id)
            } else {
                kept.insert(stack_id)
            };
        }
        let released: Vec<i32> = theirs.into_iter().filter(|id| !kept.contains(id)).collect();
        self.processes.all.remove(&pid);
        self.collected.heap.forget_process(pid);
        self.collected.growth.forget(pid);
        if let Some(faults) = &mut self.collected.faults {
            faults.forget_before(pid, monotonic_ns());
        }
        self.findings.pictures.remove(&pid);
        self.findings.pictures_tried.remove(&pid);
        self.symbolizer.forget(pid);
        self.collected.stacks.release(released);
    }

    /// `serve --exe`/`--cgroup`: starts watching every exec on the machine.
    pub fn watch_execs(&mut self) -> Result<crate::kernel::execs::ExecWatch> {
        let probes = self.kernel.probes.as_mut().context("the probes are gone")?;
        Ok(probes.watch_execs()?)
    }

    /// Opens the window: from now on every probe is in place.
    pub fn open_window(&mut self) {
        self.window.start_monotonic_ns = monotonic_ns();
    }

    /// Closes the window: what happens after now is not part of the trace.
    pub fn close_window(&mut self) {
        self.window.end_monotonic_ns = monotonic_ns();
    }

    /// A traced process called exec: the blocks of its old image are gone.
    pub fn drop_image(&mut self, pid: u32) {
        self.drain();
        self.collected.heap.drop_image(pid);
        if let Some(probes) = &mut self.kernel.probes {
            match probes.drop_kernel_blocks(pid) {
                Ok((blocks, bytes)) if self.options.probes.combined => {
                    self.collected.heap.dropped_in_kernel(pid, blocks, bytes)
                }
                // Sampled blocks: the kernel's copies only say whose frees to send.
                Ok(_) => {}
                Err(error) => log::warn!("{error}"),
            }
        }
    }

    /// Reads the counters now (for an interval's report).
    pub fn refresh_counters(&mut self) {
        if let Some(Ok(counters)) = self.kernel.probes.as_ref().map(Probes::counters) {
            self.kernel.counters = counters;
        }
    }

    /// Removes every probe, keeping the counters, then takes in the last events and (with
    /// in-kernel aggregation) the kernel's sums. `target` gets the counts the kernel keeps
    /// for all processes together.
    pub fn detach(&mut self, target: u32) {
        if let Some(mut probes) = self.kernel.probes.take() {
            probes.detach_all();
            self.kernel.program_costs = probes.program_costs();
            match probes.counters() {
                Ok(counters) => self.kernel.counters = counters,
                Err(error) => log::warn!("{error}"),
            }
            let counters = self.kernel.counters;
            let heap = &mut self.collected.heap;
            heap.add_kernel_counts(target, counters.get(Counter::UnknownFree), counters.get(Counter::FailedRealloc));
            if self.options.probes.combined {
                self.add_kernel_sums(&probes);
            }
        }
        self.drain();
    }

    /// `--combined`: the kernel's sums per (process, stack) join the heap table.
    fn add_kernel_sums(&mut self, probes: &Probes) {
        match probes.kernel_sums() {
            Ok(all) => {
                for entry in all {
                    let stack_id = match &entry.stack {
                        Some(addresses) => self.collected.stacks.intern_walk(addresses, entry.truncated),
                        None => -libc::ENOENT,
                    };
                    self.collected.heap.add_kernel_sums(entry.tgid, stack_id, entry.sums);
                }
            }
            Err(error) => eprintln!("memtrace: warning: cannot read the kernel's sums: {error}"),
        }
    }

    /// The report of the trace so far (an interval) or at its end.
    pub fn report(
        &mut self,
        mode: Mode,
        target: Target,
        duration: Duration,
        allocator: &Allocator,
        render: &RenderOptions,
    ) -> Report {
        // Ages are taken at the end of the window, or now while it is open (an interval).
        let now = self.window.end_monotonic_ns.min(monotonic_ns());
        let older_than = self.options.older_than;
        let input = ReportInput {
            mode,
            target,
            processes: self.processes.all.values().cloned().collect(),
            duration_seconds: duration.as_secs_f64(),
            allocator: allocator.name().to_owned(),
            heap: &self.collected.heap,
            leaks: &self.findings.leaks,
            counters: self.kernel.counters,
            malformed: self.kernel.events.malformed(),
            window: self.window,
            top: if self.all_stacks { None } else { render.top },
            sort: render.sort,
            allocated_before_ns: older_than
                .map(|age| now.saturating_sub(age.as_nanos().try_into().unwrap_or(u64::MAX))),
            growth: &self.collected.growth,
            with_released: matches!(render.format, Format::Json | Format::Pprof),
            combined: self.options.probes.combined,
        };
        let (stacks, symbolizer) = (&self.collected.stacks, &mut self.symbolizer);
        let mut frames_of = |pid: u32, stack_id: i32| -> Result<NamedStack, String> {
            if stack_id < 0 {
                return Err(format!(
                    "the kernel could not capture it ({})",
                    std::io::Error::from_raw_os_error(-stack_id)
                ));
            }
            let addresses = stacks.get(stack_id).ok_or_else(|| format!("stack {stack_id} was never received"))?;
            Ok(NamedStack { frames: symbolizer.symbolize(pid, addresses), truncated: stacks.is_truncated(stack_id) })
        };
        let mut report = assemble::report(input, &mut frames_of);
        if let Some(faults) = &self.collected.faults {
            report.add_faults(assemble::faults_section(faults, &self.processes.pids(), render.top, &mut frames_of));
        }
        report.memory = self.pictures_for(&report);
        report.kernel_programs = std::mem::take(&mut self.kernel.program_costs);
        report.unwind = self.unwinder.as_ref().map(Unwinder::report);
        warn_about_unwinding(&report);
        warn_about_losses(&report);
        report
    }

    /// The memory pictures, the target first, then the others by pid, each with the report's
    /// own outstanding bytes for the process, whichever way they were collected.
    fn pictures_for(&self, report: &Report) -> Vec<MemoryPicture> {
        let mut pictures: Vec<MemoryPicture> = self.findings.pictures.values().cloned().collect();
        pictures.sort_by_key(|picture| (picture.pid != report.target.pid, picture.pid));
        for picture in &mut pictures {
            let process = report.processes.iter().find(|process| process.pid == picture.pid);
            picture.allocator.outstanding_bytes = process.map_or(0, |process| process.summary.outstanding_bytes);
        }
        pictures
    }
}

/// Says on stderr what was lost and what to do about it, when anything was.
fn warn_about_losses(report: &Report) {
    let lost = &report.summary.lost;
    if lost.total() == 0 {
        return;
    }
    let parts: Vec<String> = lost
        .breakdown()
        .into_iter()
        .filter(|(_, count, _)| *count > 0)
        .map(
            |(words, count, hint)| {
                if hint.is_empty() { format!("{words} {count}") } else { format!("{words} {count}: {hint}") }
            },
        )
        .collect();
    eprintln!("memtrace: warning: {} events lost ({}); numbers are low by that much", lost.total(), parts.join(", "));
}

/// Says on stderr when unwind tables did not fit: stacks through those modules may be cut short.
fn warn_about_unwinding(report: &Report) {
    if let Some(unwind) = report.unwind.as_ref().filter(|unwind| unwind.modules_not_fitting > 0) {
        eprintln!(
            "memtrace: warning: {} modules' unwind tables did not fit in --unwind-memory ({} bytes): their frames were walked by frame pointer, and stacks through them may be cut short; raise --unwind-memory",
            unwind.modules_not_fitting, unwind.table_budget_bytes
        );
    }
}
