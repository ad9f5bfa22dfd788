//! `run` and `record`: wiring probes, events, heap table, symbolizer and report together.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ffi::OsString,
    io::{IsTerminal, Write},
    num::NonZeroU32,
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::{ffi::OsStringExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use memtrace_common::{EventKind, unwind::stack_flags};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    allocator::{self, Allocator, Selection},
    check::CiSettings,
    cli::{RecordArgs, ReportArgs, RunArgs, TraceArgs},
    events::{EventReader, watch_readable},
    faults::FaultTable,
    growth::GrowthTracker,
    heap::HeapTable,
    launch::{self, Ending, TargetEvent},
    memory_picture::{self, MemoryPicture},
    output::{Console, ReportSink},
    preflight,
    probes::{KernelCounters, ProbeSettings, ProgramCost, Probes, Scope},
    reachability::{self, LeakKinds},
    regions,
    stacks::StackTable,
    status::{self, StatusLine},
    report::{Counts, FaultsSection, Mode, NamedStack, ProcessReport, RenderOptions, Report, ReportInput, Target, Window},
    symbolize::Symbolizer,
    unwind::{self, Unwinder},
};

/// Exit code of `record` when every target exited before the window ended.
pub const EXIT_TARGET_GONE: i32 = 1;

/// A probe point's identity: the file (device, inode) and the offset in it. Two paths to one
/// file (`/proc/PID/root/...`, a symlink) are one point, probed once per process.
type PointId = (u64, u64, u64);

/// One trace: the probes, the events they send, and what the agent made of them.
struct Trace {
    probes: Option<Probes>,
    events: EventReader,
    stacks: StackTable,
    heap: HeapTable,
    /// Leak kinds of the blocks of each process scanned at its end.
    leaks: LeakKinds,
    /// The report keeps every stack until the CI settings have looked at them (they trim to
    /// `--top` after).
    all_stacks: bool,
    symbolizer: Symbolizer,
    counters: KernelCounters,
    /// Events outside [start, end] (CLOCK_MONOTONIC ns, the clock of `bpf_ktime_get_ns`) are
    /// outside the trace: before every probe was attached, or after the window closed while
    /// the probes were being removed.
    window: Window,
    /// Probes are attached once for all processes and `TRACED` says which count (run mode
    /// following forks); otherwise each process gets its own.
    all_processes: bool,
    /// The points probed for each process (key 0: for all), so that an exec adds only what is
    /// new.
    attached: HashMap<u32, HashSet<PointId>>,
    /// Every process traced, by pid.
    processes: BTreeMap<u32, ProcessReport>,
    /// In-kernel aggregation: the allocator's numbers are read from kernel maps at the end.
    combined: bool,
    /// `--program-stats`: what each kernel-side program cost, read when the probes are removed.
    program_costs: Vec<ProgramCost>,
    /// The kernel side wakes memtrace only when the ring buffer is a quarter full; between
    /// wake-ups memtrace drains it on this timer.
    drain_timer: tokio::time::Interval,
    /// Outstanding bytes per stack at each `--interval`, for leak suspects.
    growth: GrowthTracker,
    /// Events taken in (for the status line's rate).
    events_seen: u64,
    /// `--older-than`.
    older_than: Option<Duration>,
    /// Page faults by stack, with `--faults`.
    faults: Option<FaultTable>,
    /// Unwind tables for the kernel's stack walk (none with `--unwind fp`).
    unwinder: Option<Unwinder>,
    /// Frames captured per stack (`--stack-depth`).
    stack_depth: usize,
    /// Each process's memory picture, read while it was still alive.
    pictures: BTreeMap<u32, MemoryPicture>,
    /// The processes whose picture was read or tried (a failure was reported then).
    pictures_tried: HashSet<u32>,
}

impl Trace {
    /// Loads the programs (nothing attached yet).
    fn load(args: &TraceArgs, all_processes: bool) -> Result<Self> {
        let mut probes = Probes::load(ProbeSettings {
            ring_buffer_bytes: args.ring_buffer_size,
            filter_by_map: all_processes,
            empty: args.empty_probes,
            id_slots: args.id_slots,
            combined: args.combined,
            sample_bytes: args.sample_bytes.unwrap_or(0),
            min_size: args.min_size,
            max_size: args.max_size.unwrap_or(u64::MAX),
            stack_slots: args.stack_slots,
            stack_depth: args.stack_depth,
            live_blocks: args.live_blocks.unwrap_or(if args.combined { 1 << 20 } else { 1 << 17 }),
            unwind: args.unwind,
            unwind_capacity: unwind_capacity(args),
        })?;
        let unwinder = match args.unwind {
            unwind::Method::FramePointer => None,
            method => {
                let tables = probes.unwind_tables(unwind_capacity(args)).context("taking the unwind tables' maps")?;
                Some(Unwinder::new(tables, method, args.unwind_memory, args.debug_dirs.clone()))
            }
        };
        if args.min_size > args.max_size.unwrap_or(u64::MAX) {
            bail!("--min-size {} is above --max-size {}: no block would be recorded", args.min_size, args.max_size.unwrap_or(0));
        }
        probes.forward_kernel_logs();
        let faults = args.fault_sampling().map(FaultTable::new);
        if let Some(table) = &faults {
            probes.attach_faults(table.period())?;
        }
        if args.program_stats {
            probes.enable_program_stats()?;
        }
        let events = EventReader::new(probes.take_events()?).context("watching the ring buffer")?;
        Ok(Self {
            probes: Some(probes),
            events,
            stacks: StackTable::default(),
            heap: args.sample_bytes.map_or_else(HeapTable::new, HeapTable::sampled),
            combined: args.combined,
            leaks: LeakKinds::default(),
            all_stacks: false,
            program_costs: Vec::new(),
            symbolizer: Symbolizer::with_debug_dirs(args.debug_dirs.clone()),
            counters: KernelCounters::default(),
            window: Window { start_monotonic_ns: 0, end_monotonic_ns: u64::MAX },
            all_processes,
            attached: HashMap::new(),
            processes: BTreeMap::new(),
            drain_timer: {
                let mut timer = tokio::time::interval(Duration::from_millis(10));
                timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                timer
            },
            growth: GrowthTracker::default(),
            events_seen: 0,
            older_than: args.older_than,
            faults,
            unwinder,
            stack_depth: args.stack_depth as usize,
            pictures: BTreeMap::new(),
            pictures_tried: HashSet::new(),
        })
    }

    /// Waits until events may have arrived (a wake-up from the kernel, or the drain timer) and
    /// takes them in.
    async fn take_events(&mut self) -> Result<()> {
        tokio::select! {
            ready = self.events.readable() => ready.context("reading the ring buffer")?,
            _ = self.drain_timer.tick() => {}
        }
        self.drain();
        Ok(())
    }

    /// Attaches the allocator's probes for `pid`, skipping points already probed for it.
    fn attach(&mut self, allocator: &Allocator, pid: u32) -> Result<()> {
        let pid = NonZeroU32::new(pid).context("pid 0 cannot be traced")?;
        let (scope, key) = if self.all_processes { (Scope::AllProcesses, 0) } else { (Scope::Process(pid), pid.get()) };
        let attached = self.attached.entry(key).or_default();
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
        if let Some(probes) = &mut self.probes {
            probes.attach(&new, scope)?;
            probes.trace(pid.get(), true)?;
        }
        Ok(())
    }

    /// `run` mode: has the loader stop a thread of `pid` when it has mapped code the kernel's
    /// walk does not know yet, before that code runs (see `unwind::debug_state_point`).
    fn watch_loader(&mut self, pid: u32) {
        if self.unwinder.is_none() {
            return;
        }
        let Some((path, offset)) = unwind::debug_state_point(pid) else {
            log::info!("process {pid} has no dynamic loader to watch");
            return;
        };
        let (scope, key) = match NonZeroU32::new(pid) {
            Some(_) if self.all_processes => (Scope::AllProcesses, 0),
            Some(pid) => (Scope::Process(pid), pid.get()),
            None => return,
        };
        let id = std::fs::metadata(&path).map(|file| (file.dev(), file.ino(), offset)).unwrap_or((0, 0, offset));
        if !self.attached.entry(key).or_default().insert(id) {
            return;
        }
        if let Some(probes) = &mut self.probes
            && let Err(error) = probes.attach_loader(&path, offset, scope)
        {
            log::warn!("{error}; code loaded by process {pid} is known to stack walks only as memtrace reads its mmap events");
        }
    }

    /// Whether thread `tid` is stopped by the loader program (its record is cleared).
    fn loader_stopped(&mut self, tid: u32) -> bool {
        self.unwinder.as_mut().is_some_and(|unwinder| unwinder.loader_stopped(tid))
    }

    /// Gives the kernel's unwinder the code `pid` maps now: when tracing of a running process
    /// starts, and while a process is held at its fork or exec (before its image runs).
    fn track_code(&mut self, pid: u32) {
        if let Some(unwinder) = &mut self.unwinder {
            unwinder.track(pid);
        }
    }

    /// Starts keeping the record of a traced process.
    fn track(&mut self, pid: u32, parent_pid: Option<u32>, command: Vec<String>) {
        self.processes.insert(
            pid,
            ProcessReport {
                pid,
                parent_pid,
                command,
                exit_code: None,
                signal: None,
                exited: false,
                summary: Counts::default(),
            },
        );
    }

    fn ended(&mut self, pid: u32, ending: Option<Ending>) {
        if let Some(process) = self.processes.get_mut(&pid) {
            process.exited = true;
            match ending {
                Some(Ending::Exited(code)) => process.exit_code = Some(code),
                Some(Ending::Killed(signal)) => process.signal = Some(signal),
                None => {}
            }
        }
        if let Some(probes) = &mut self.probes {
            let _ = probes.trace(pid, false);
            if !self.all_processes {
                probes.detach_process(pid);
            }
        }
        if let Some(unwinder) = &mut self.unwinder {
            unwinder.forget(pid);
        }
    }

    fn drain(&mut self) {
        let (heap, stacks, faults, window, seen) = (&mut self.heap, &mut self.stacks, &mut self.faults, self.window, &mut self.events_seen);
        let (unwinder, stack_depth) = (&mut self.unwinder, self.stack_depth);
        self.events.drain(|event, rest| {
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
            // A record with frames after it: the stack gets its id here (a negative count is
            // the kernel's error for a failed capture, kept as it is). A walk the kernel handed
            // over is finished first.
            if event.stack_id >= 0 && !rest.is_empty() {
                let (frames, truncated) = unwind::stack_of_record(unwinder.as_mut(), &event, rest, stack_depth);
                event.stack_id = stacks.intern_walk(&frames, truncated);
            }
            event.flags &= !stack_flags::ALL;
            if event.kind == EventKind::Shmat as u32 {
                // The kernel side sees only the segment id; its size is in /proc.
                event.size = regions::sysv_segment_size(event.old_addr).unwrap_or(0);
            }
            if let Some(faults) = faults.as_mut() {
                if event.kind == EventKind::Fault as u32 {
                    faults.record(&event);
                    return;
                }
                if !matches!(EventKind::from_u32(event.kind), Some(EventKind::Alloc | EventKind::Free | EventKind::Realloc)) {
                    faults.mappings_changed(event.tgid);
                }
            }
            heap.apply(&event);
        });
    }

    /// Reads the memory picture of a process that is still alive (stopped at its exit, or
    /// running at the end of the trace); a failure is a warning, the report goes on.
    fn capture_picture(&mut self, pid: u32) {
        self.pictures_tried.insert(pid);
        match memory_picture::capture(pid) {
            Ok(picture) => {
                self.pictures.insert(pid, picture);
            }
            Err(error) => eprintln!("memtrace: warning: no memory picture for process {pid}: {error}"),
        }
    }

    /// Opens the window: from now on every probe is in place.
    fn open_window(&mut self) {
        self.window.start_monotonic_ns = monotonic_ns();
    }

    /// Closes the window: what happens after now is not part of the trace.
    fn close_window(&mut self) {
        self.window.end_monotonic_ns = monotonic_ns();
    }

    /// A traced process called exec: the blocks of its old image are gone.
    fn drop_image(&mut self, pid: u32) {
        self.drain();
        self.heap.drop_image(pid);
        if let Some(probes) = &mut self.probes {
            match probes.drop_kernel_blocks(pid) {
                Ok((blocks, bytes)) if self.combined => self.heap.dropped_in_kernel(pid, blocks, bytes),
                // Sampled blocks: the kernel's copies only say whose frees to send.
                Ok(_) => {}
                Err(error) => log::warn!("{error}"),
            }
        }
    }

    /// Removes every probe, keeping the counters, then takes in the last events and (with
    /// in-kernel aggregation) the kernel's sums. `target` gets the counts the kernel keeps
    /// for all processes together.
    fn detach(&mut self, target: u32) {
        if let Some(mut probes) = self.probes.take() {
            probes.detach_all();
            self.program_costs = probes.program_costs();
            match probes.counters() {
                Ok(counters) => self.counters = counters,
                Err(error) => log::warn!("{error}"),
            }
            self.heap.add_kernel_counts(target, self.counters.unknown_frees, self.counters.failed_reallocs);
            if self.combined {
                match probes.kernel_sums() {
                    Ok(all) => {
                        for entry in all {
                            let stack_id = match &entry.stack {
                                Some(addresses) => self.stacks.intern_walk(addresses, entry.truncated),
                                None => -libc::ENOENT,
                            };
                            self.heap.add_kernel_sums(entry.tgid, stack_id, entry.sums);
                        }
                    }
                    Err(error) => eprintln!("memtrace: warning: cannot read the kernel's sums: {error}"),
                }
            }
        }
        self.drain();
    }

    fn report(&mut self, mode: Mode, target: Target, duration: Duration, allocator: &Allocator, args: &ReportArgs) -> Report {
        // Ages are taken at the end of the window, or now while it is open (an interval).
        let now = self.window.end_monotonic_ns.min(monotonic_ns());
        let input = ReportInput {
            mode,
            target,
            processes: self.processes.values().cloned().collect(),
            duration_seconds: duration.as_secs_f64(),
            allocator: allocator.name().to_owned(),
            heap: &self.heap,
            leaks: &self.leaks,
            counters: self.counters,
            malformed: self.events.malformed(),
            window: self.window,
            top: if self.all_stacks { None } else { args.top },
            sort: args.sort,
            allocated_before_ns: self.older_than.map(|age| now.saturating_sub(age.as_nanos() as u64)),
            growth: &self.growth,
            with_released: matches!(args.format, crate::cli::Format::Json | crate::cli::Format::Pprof),
            combined: self.combined,
        };
        let (stacks, symbolizer) = (&self.stacks, &mut self.symbolizer);
        let mut report = Report::build(input, |pid, stack_id| frames_of(stacks, symbolizer, pid, stack_id));
        if let Some(faults) = &self.faults {
            let pids: Vec<u32> = self.processes.keys().copied().collect();
            report.add_faults(FaultsSection::build(faults, &pids, args.top, |pid, stack_id| frames_of(stacks, symbolizer, pid, stack_id)));
        }
        // The target first, then the others by pid.
        let mut pictures: Vec<MemoryPicture> = self.pictures.values().cloned().collect();
        pictures.sort_by_key(|picture| (picture.pid != report.target.pid, picture.pid));
        // The report's own per-process numbers, whichever way they were collected.
        for picture in &mut pictures {
            let process = report.processes.iter().find(|process| process.pid == picture.pid);
            picture.allocator.outstanding_bytes = process.map_or(0, |process| process.summary.outstanding_bytes);
        }
        report.memory = pictures;
        report.kernel_programs = std::mem::take(&mut self.program_costs);
        report.unwind = self.unwinder.as_ref().map(Unwinder::report);
        if let Some(unwind) = report.unwind.as_ref().filter(|unwind| unwind.modules_not_fitting > 0) {
            eprintln!(
                "memtrace: warning: {} modules' unwind tables did not fit in --unwind-memory ({} bytes): their frames were walked by frame pointer, and stacks through them may be cut short; raise --unwind-memory",
                unwind.modules_not_fitting, unwind.table_budget_bytes
            );
        }
        warn_about_losses(&report);
        report
    }
}

fn frames_of(stacks: &StackTable, symbolizer: &mut Symbolizer, pid: u32, stack_id: i32) -> Result<NamedStack, String> {
    if stack_id < 0 {
        return Err(format!("the kernel could not capture it ({})", std::io::Error::from_raw_os_error(-stack_id)));
    }
    let addresses = stacks.get(stack_id).ok_or_else(|| format!("stack {stack_id} was never received"))?;
    Ok(NamedStack { frames: symbolizer.symbolize(pid, addresses), truncated: stacks.is_truncated(stack_id) })
}

/// The unwind tables' arrays for `--unwind-memory` (one entry each with `--unwind fp`).
fn unwind_capacity(args: &TraceArgs) -> unwind::Capacity {
    match args.unwind {
        unwind::Method::FramePointer => unwind::Capacity::NONE,
        _ => unwind::Capacity::for_budget(args.unwind_memory),
    }
}

fn warn_about_losses(report: &Report) {
    let lost = &report.summary.lost;
    if lost.total() > 0 {
        eprintln!(
            "memtrace: warning: {} events lost (ring buffer full {}, stack capture failed {}, in-flight table full {}, returns missed {}, results unreadable {}, kernel block table full {}, kernel stack sums full {}); numbers are low by that much. Raise --ring-buffer-size if the ring buffer was full, --live-blocks if the kernel block table was, --stack-slots if the kernel stack sums were.",
            lost.total(),
            lost.ring_buffer_full,
            lost.stack_capture_failed,
            lost.in_flight_full,
            lost.stale_in_flight,
            lost.argument_unreadable,
            lost.live_blocks_full,
            lost.stack_sums_full
        );
    }
}

/// `memtrace run`: returns the exit code memtrace should exit with (the target's).
pub async fn run(args: RunArgs) -> Result<i32> {
    let sink = ReportSink::open_for(args.report.output.as_deref(), Console::Stderr, args.report.format)?;
    let mut ci = CiSettings::new(&args.check, args.report.format)?;
    // Leak kinds need every block: a sample or the kernel's sums per stack have no addresses.
    let scan = every_block(&args.trace) && !args.no_leak_kinds;
    if args.check.check && !every_block(&args.trace) {
        bail!("--check needs every block to tell leak kinds apart: leave out --combined and --sample-bytes");
    }
    let program = launch::resolve_program(Path::new(&args.command[0]))?;
    preflight::check_privileges()?;
    preflight::check_kernel()?;
    preflight::ensure_tracefs()?;
    let selection = selection(&args.trace);
    let environment: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let allocator = allocator::for_command(&program, &environment, &selection)?;
    let mut trace = Trace::load(&args.trace, args.follow_forks)?;
    trace.all_stacks = ci.needs_all_stacks();
    let mut target = launch::launch(&program, &args.command, args.follow_forks)?;
    let main_pid = target.pid;
    trace.attach(&allocator, main_pid)?;
    trace.track(main_pid, None, args.command.iter().map(|arg| arg.to_string_lossy().into_owned()).collect());
    let mut allocators: HashMap<u32, Allocator> = HashMap::from([(main_pid, allocator.clone())]);
    trace.open_window();
    target.release();
    let started = Instant::now();
    log::info!("started {} as pid {main_pid}", program.display());

    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing a SIGHUP handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let ending = loop {
        tokio::select! {
            taken = trace.take_events() => taken?,
            event = target.next_event() => match event {
                Some(TargetEvent::Started) => {}
                Some(TargetEvent::ExecFailed(error)) => {
                    return Err(launch::LaunchError::Exec { program: program.display().to_string(), source: error }.into());
                }
                Some(TargetEvent::Spawned { pid, parent }) => {
                    // A fork runs its parent's image: the same allocator.
                    let inherited = parent.and_then(|parent| allocators.get(&parent)).cloned();
                    match inherited.map_or_else(|| allocator::for_process(pid, &selection), Ok) {
                        Ok(allocator) => {
                            if let Err(error) = trace.attach(&allocator, pid) {
                                eprintln!("memtrace: warning: cannot trace child {pid}: {error:#}");
                            }
                            trace.track_code(pid);
                            allocators.insert(pid, allocator);
                        }
                        Err(error) => eprintln!("memtrace: warning: cannot trace child {pid}: {error:#}"),
                    }
                    trace.track(pid, parent, command_line(pid));
                    target.resume();
                }
                Some(TargetEvent::Exec { pid }) => {
                    // The old image and its blocks are gone; the new one may use another
                    // allocator (a static binary, another libc), probed before it runs.
                    trace.drop_image(pid);
                    match allocator::for_command(&PathBuf::from(format!("/proc/{pid}/exe")), &environment_of(pid), &selection) {
                        Ok(allocator) => {
                            if let Err(error) = trace.attach(&allocator, pid) {
                                eprintln!("memtrace: warning: cannot trace process {pid} after exec: {error:#}");
                            }
                            trace.track_code(pid);
                            trace.watch_loader(pid);
                            allocators.insert(pid, allocator);
                        }
                        Err(error) => eprintln!("memtrace: warning: cannot trace process {pid} after exec: {error:#}"),
                    }
                    if let Some(process) = trace.processes.get_mut(&pid) {
                        process.command = command_line(pid);
                    }
                    target.resume();
                }
                Some(TargetEvent::Exiting { pid, threads }) => {
                    // Stopped on its way out, memory still mapped: everything it did is in the
                    // ring buffer, and its mappings can be read one last time, and its memory
                    // scanned for what still points to its blocks.
                    trace.drain();
                    if let Err(error) = trace.symbolizer.snapshot(pid) {
                        log::warn!("cannot read the mappings of process {pid}: {error}");
                    }
                    trace.capture_picture(pid);
                    if scan {
                        let (addrs, sizes) = (trace.heap.addresses_of(pid), trace.heap.sizes_of(pid));
                        reachability::scan_into(&mut trace.leaks, pid, &threads, addrs, sizes, false);
                    }
                    target.resume();
                }
                Some(TargetEvent::Stopping { pid, tid }) => {
                    // The loader program's stop: the loader mapped code and is about to run it.
                    if trace.loader_stopped(tid) {
                        trace.drain();
                        trace.track_code(pid);
                        target.suppress();
                    } else {
                        target.resume();
                    }
                }
                Some(TargetEvent::Ended { pid, ending }) => {
                    trace.ended(pid, Some(ending));
                    if pid == main_pid {
                        break Some(ending);
                    }
                }
                None => break None,
            },
            _ = terminate.recv() => forward(main_pid, libc::SIGTERM),
            _ = hangup.recv() => forward(main_pid, libc::SIGHUP),
            // From a terminal, Ctrl-C reaches the target directly (same process group); only a
            // SIGINT sent to memtrace alone is passed on.
            _ = interrupt.recv() => if !foreground_of_terminal() { forward(main_pid, libc::SIGINT) },
        }
    };
    let duration = started.elapsed();
    trace.close_window();
    // Children still running when the command ended keep what they hold so far.
    for pid in trace.processes.keys().copied().collect::<Vec<_>>() {
        if !trace.symbolizer.knows(pid) && trace.symbolizer.snapshot(pid).is_err() {
            eprintln!("memtrace: warning: process {pid} ended before its mappings could be read (killed with SIGKILL?); its frames show addresses only");
        }
        if !trace.pictures_tried.contains(&pid) {
            if trace.processes[&pid].exited {
                eprintln!("memtrace: warning: no memory picture for process {pid}: it ended without stopping at its exit (killed with SIGKILL?)");
            } else {
                trace.capture_picture(pid);
            }
        }
    }
    trace.detach(main_pid);
    let mut report = trace.report(
        Mode::Run,
        Target {
            pid: main_pid,
            command: args.command.iter().map(|arg| arg.to_string_lossy().into_owned()).collect(),
            exit_code: match ending { Some(Ending::Exited(code)) => Some(code), _ => None },
            signal: match ending { Some(Ending::Killed(signal)) => Some(signal), _ => None },
            exited: true,
        },
        duration,
        &allocator,
        &args.report,
    );
    ci.apply(&mut report, args.report.top)?;
    sink.write(&report, &(&args.report).into())?;
    Ok(ci.exit_code(ending.map_or(1, Ending::shell_code), &report))
}

/// `memtrace record`: returns 0, or [`EXIT_TARGET_GONE`] when every target exited first.
pub async fn record(args: RecordArgs) -> Result<i32> {
    let sink = ReportSink::open_for(args.report.output.as_deref(), Console::Stdout, args.report.format)?;
    if args.check.check && !args.scan {
        bail!("--check needs leak kinds, which record finds only with --scan: add --scan");
    }
    if args.scan && !every_block(&args.trace) {
        bail!("--scan needs every block to tell leak kinds apart: leave out --combined and --sample-bytes");
    }
    let mut ci = CiSettings::new(&args.check, args.report.format)?;
    let mut pids: Vec<u32> = args.pids.iter().map(|pid| pid.get()).collect();
    pids.dedup();
    preflight::check_privileges()?;
    preflight::check_kernel()?;
    preflight::ensure_tracefs()?;
    let selection = selection(&args.trace);
    let allocators = pids
        .iter()
        .map(|&pid| allocator::for_process(pid, &selection))
        .collect::<Result<Vec<_>, _>>()?;
    let mut trace = Trace::load(&args.trace, false)?;
    trace.all_stacks = ci.needs_all_stacks();
    let (exited_tx, mut exited_rx) = mpsc::unbounded_channel();
    for (&pid, allocator) in pids.iter().zip(&allocators) {
        watch_exit(pid, exited_tx.clone())?;
        trace.symbolizer.snapshot(pid).with_context(|| format!("reading the mappings of process {pid}"))?;
        trace.attach(allocator, pid)?;
        trace.track_code(pid);
        trace.track(pid, None, command_line(pid));
    }
    trace.open_window();
    let started = Instant::now();
    let described: Vec<String> = trace
        .processes
        .values()
        .map(|process| format!("pid {} ({})", process.pid, process.command.join(" ")))
        .collect();
    eprintln!(
        "memtrace: tracing {} through {}; {}",
        described.join(", "),
        allocators[0].name(),
        match args.duration {
            Some(duration) => format!("stopping after {duration:?} or on Ctrl-C"),
            None => "Ctrl-C to stop".to_owned(),
        }
    );

    let deadline = tokio::time::sleep(args.duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut running = pids.len();
    let mut intervals = args.interval.map(|period| tokio::time::interval_at(tokio::time::Instant::now() + period, period));
    let mut intervals_left = args.count.map(|count| count.get());
    let mut status = StatusLine::new(started);
    let mut status_timer = tokio::time::interval(status::REFRESH);
    let all_exited = loop {
        tokio::select! {
            taken = trace.take_events() => taken?,
            _ = status_timer.tick() => {
                let lost = trace.probes.as_ref().and_then(|probes| probes.counters().ok()).map_or(0, |counters| lost_of(&counters));
                status.show(trace.events_seen, trace.heap.all().outstanding_bytes, lost);
            }
            _ = async { intervals.as_mut().expect("guarded by the if").tick().await }, if intervals.is_some() => {
                status.clear();
                trace.drain();
                if let Some(Ok(counters)) = trace.probes.as_ref().map(Probes::counters) {
                    trace.counters = counters;
                }
                trace.growth.observe(&trace.heap.by_stack());
                let target = record_target(&trace, pids[0]);
                let report = trace.report(Mode::Record, target, started.elapsed(), &allocators[0], &args.report);
                // stdout carries them only when the final report is text there too: JSON or pprof on
                // stdout stays one document.
                let to_stderr = args.report.output.is_some() || args.report.format != crate::cli::Format::Text;
                print_interval(&report, trace.growth.intervals(), to_stderr, &args.report);
                if let Some(left) = &mut intervals_left {
                    *left -= 1;
                    if *left == 0 {
                        break false;
                    }
                }
            }
            Some(pid) = exited_rx.recv() => {
                trace.ended(pid, None);
                running -= 1;
                if running == 0 {
                    break true;
                }
            }
            _ = &mut deadline => break false,
            _ = terminate.recv() => break false,
            _ = interrupt.recv() => break false,
        }
    };
    status.clear();
    let duration = started.elapsed();
    // --scan: each living process is stopped (all its threads) before the window closes, so
    // the heap table and the memory scanned agree, and let go right after its scan.
    let mut stopped = Vec::new();
    if args.scan {
        for &pid in pids.iter().filter(|pid| !trace.processes[pid].exited) {
            match reachability::StoppedProcess::stop(pid) {
                Ok(process) => stopped.push(process),
                Err(error) => eprintln!("memtrace: warning: no leak kinds for process {pid}: {error}"),
            }
        }
    }
    trace.close_window();
    trace.drain();
    for process in stopped {
        let pid = process.pid();
        let (addrs, sizes) = (trace.heap.addresses_of(pid), trace.heap.sizes_of(pid));
        reachability::scan_into(&mut trace.leaks, pid, process.threads(), addrs, sizes, true);
        let stopped_for = process.resume();
        trace.leaks.stopped(pid, stopped_for);
        eprintln!("memtrace: process {pid} was stopped for {:.1} ms for the scan", stopped_for.as_secs_f64() * 1e3);
    }
    for &pid in &pids {
        // Refresh the mappings of the living: libraries loaded during the window get names too.
        if !trace.processes[&pid].exited && let Err(error) = trace.symbolizer.snapshot(pid) {
            log::warn!("cannot re-read the mappings of process {pid}: {error}");
        }
        // The picture needs a living process: one that exited during the window has none.
        if trace.processes[&pid].exited {
            eprintln!("memtrace: warning: no memory picture for process {pid}: it exited before the end of the trace");
        } else {
            trace.capture_picture(pid);
        }
    }
    trace.detach(pids[0]);
    let target = record_target(&trace, pids[0]);
    let mut report = trace.report(Mode::Record, target, duration, &allocators[0], &args.report);
    ci.apply(&mut report, args.report.top)?;
    sink.write(&report, &(&args.report).into())?;
    let check_code = ci.exit_code(0, &report);
    if check_code != 0 {
        return Ok(check_code);
    }
    if all_exited {
        let which = if pids.len() == 1 { format!("process {}", pids[0]) } else { "every process".to_owned() };
        eprintln!("memtrace: {which} exited during the trace; the report covers it up to its exit");
        return Ok(EXIT_TARGET_GONE);
    }
    Ok(0)
}

/// Whether the agent holds every block with its address (not `--combined`, not sampled).
fn every_block(args: &TraceArgs) -> bool {
    !args.combined && args.sample_bytes.is_none()
}

/// The target as `record` reports it: the first process given.
fn record_target(trace: &Trace, pid: u32) -> Target {
    let first = &trace.processes[&pid];
    Target { pid: first.pid, command: first.command.clone(), exit_code: None, signal: None, exited: first.exited }
}

/// Events lost so far, as the status line shows them.
fn lost_of(counters: &KernelCounters) -> u64 {
    counters.ring_buffer_full
        + counters.stack_capture_failed
        + counters.in_flight_full
        + counters.stale_in_flight
        + counters.argument_unreadable
        + counters.live_blocks_full
        + counters.stack_sums_full
}

/// One `--interval` report, as text, on stdout or stderr.
fn print_interval(report: &Report, interval: u64, to_stderr: bool, args: &ReportArgs) {
    let options = RenderOptions { format: crate::cli::Format::Text, ..RenderOptions::from(args) };
    let mut text = format!("memtrace: interval {interval} at {:.1} s\n", report.duration_seconds).into_bytes();
    if crate::report::render(report, &options, &mut text).is_ok() {
        text.push(b'\n');
        let written = if to_stderr { std::io::stderr().write_all(&text) } else { std::io::stdout().write_all(&text) };
        if let Err(error) = written {
            log::warn!("cannot print the interval report: {error}");
        }
    }
}

fn selection(args: &TraceArgs) -> Selection {
    Selection {
        library: args.allocator_lib.clone(),
        prefix: args.symbol_prefix.clone(),
        probe_at_entry: args.probe_at_entry,
    }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock `bpf_ktime_get_ns` reads.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

fn forward(pid: u32, signal: i32) {
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

/// Whether memtrace runs in the foreground process group of its terminal.
fn foreground_of_terminal() -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    // SAFETY: plain queries on fd 0 and this process.
    unsafe { libc::tcgetpgrp(0) == libc::getpgrp() }
}

/// Splits a NUL-separated /proc file into its entries.
fn nul_separated(path: String) -> Vec<Vec<u8>> {
    std::fs::read(path)
        .map(|bytes| bytes.split(|&byte| byte == 0).filter(|entry| !entry.is_empty()).map(<[u8]>::to_vec).collect())
        .unwrap_or_default()
}

fn command_line(pid: u32) -> Vec<String> {
    nul_separated(format!("/proc/{pid}/cmdline"))
        .into_iter()
        .map(|arg| String::from_utf8_lossy(&arg).into_owned())
        .collect()
}

fn environment_of(pid: u32) -> Vec<(OsString, OsString)> {
    nul_separated(format!("/proc/{pid}/environ"))
        .into_iter()
        .filter_map(|entry| {
            let split = entry.iter().position(|&byte| byte == b'=')?;
            let (key, value) = entry.split_at(split);
            Some((OsString::from_vec(key.to_vec()), OsString::from_vec(value[1..].to_vec())))
        })
        .collect()
}

/// Sends `pid` on `exited` when the process exits (a pidfd turns readable).
fn watch_exit(pid: u32, exited: mpsc::UnboundedSender<u32>) -> Result<()> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ESRCH) {
            bail!(allocator::AllocatorError::NoSuchProcess(pid));
        }
        return Err(error).context("pidfd_open");
    }
    // SAFETY: the kernel just returned this fd to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let watch = watch_readable(fd).context("watching the process")?;
    tokio::spawn(async move {
        let _ = watch.readable().await;
        let _ = exited.send(pid);
    });
    Ok(())
}
