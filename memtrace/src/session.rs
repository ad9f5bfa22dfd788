//! `run` and `record`: wiring probes, events, heap table, symbolizer and report together.
use std::{
    ffi::OsString,
    io::IsTerminal,
    num::NonZeroU32,
    os::fd::{FromRawFd, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::maps::{MapData, StackTraceMap};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    allocator::{self, Allocator, Selection},
    cli::{RecordArgs, RunArgs, TraceArgs},
    events::{EventReader, watch_readable},
    heap::HeapTable,
    launch::{self, Ending, TargetEvent},
    output::{Console, ReportSink},
    preflight,
    probes::{KernelCounters, ProbeSettings, Probes},
    report::{Mode, Report, ReportInput, Target, Window},
    symbolize::{Frame, Symbolizer},
};

/// Exit code of `record` when the target exited before the window ended.
pub const EXIT_TARGET_GONE: i32 = 1;

/// One trace: the probes, the events they send, and what the agent made of them.
struct Trace {
    probes: Option<Probes>,
    events: EventReader,
    stacks: StackTraceMap<MapData>,
    heap: HeapTable,
    symbolizer: Symbolizer,
    counters: KernelCounters,
    /// Events outside [start, end] (CLOCK_MONOTONIC ns, the clock of `bpf_ktime_get_ns`) are
    /// outside the trace: before every probe was attached, or after the window closed while
    /// the probes were being removed.
    window: Window,
}

impl Trace {
    /// Checks privileges and kernel, then loads the programs (nothing attached yet).
    fn load(args: &TraceArgs, outer_frees: bool) -> Result<Self> {
        let mut probes = Probes::load(ProbeSettings {
            ring_buffer_bytes: args.ring_buffer_size,
            stack_slots: args.stack_slots,
            outer_frees,
        })?;
        probes.forward_kernel_logs();
        let events = EventReader::new(probes.take_events()?).context("watching the ring buffer")?;
        let stacks = probes.take_stacks()?;
        Ok(Self {
            probes: Some(probes),
            events,
            stacks,
            heap: HeapTable::new(),
            symbolizer: Symbolizer::new(),
            counters: KernelCounters::default(),
            window: Window { start_monotonic_ns: 0, end_monotonic_ns: u64::MAX },
        })
    }

    fn attach(&mut self, allocator: &Allocator, pid: u32) -> Result<()> {
        let pid = NonZeroU32::new(pid).context("pid 0 cannot be traced")?;
        if let Some(probes) = &mut self.probes {
            probes.attach(allocator, pid)?;
        }
        Ok(())
    }

    fn drain(&mut self) {
        let (heap, window) = (&mut self.heap, self.window);
        self.events.drain(|event| {
            if (window.start_monotonic_ns..=window.end_monotonic_ns).contains(&event.timestamp_ns) {
                heap.apply(event);
            }
        });
    }

    /// Opens the window: from now on every probe is in place.
    fn open_window(&mut self) {
        self.window.start_monotonic_ns = monotonic_ns();
    }

    /// Closes the window: what happens after now is not part of the trace.
    fn close_window(&mut self) {
        self.window.end_monotonic_ns = monotonic_ns();
    }

    /// Removes every probe, keeping the counters, then takes in the last events.
    fn detach(&mut self) {
        if let Some(probes) = self.probes.take() {
            match probes.counters() {
                Ok(counters) => self.counters = counters,
                Err(error) => log::warn!("{error}"),
            }
        }
        self.drain();
    }

    fn report(&mut self, mode: Mode, target: Target, duration: Duration, allocator: &Allocator, top: Option<usize>) -> Report {
        let input = ReportInput {
            mode,
            target,
            duration_seconds: duration.as_secs_f64(),
            allocator: allocator.name().to_owned(),
            heap: &self.heap,
            counters: self.counters,
            malformed: self.events.malformed(),
            window: self.window,
            top,
        };
        let (stacks, symbolizer) = (&self.stacks, &mut self.symbolizer);
        let report = Report::build(input, |pid, stack_id| frames_of(stacks, symbolizer, pid, stack_id));
        warn_about_losses(&report);
        report
    }
}

fn frames_of(
    stacks: &StackTraceMap<MapData>,
    symbolizer: &mut Symbolizer,
    pid: u32,
    stack_id: i32,
) -> Result<Vec<Frame>, String> {
    if stack_id < 0 {
        return Err(format!("the kernel could not capture it ({})", std::io::Error::from_raw_os_error(-stack_id)));
    }
    let trace = stacks.get(&(stack_id as u32), 0).map_err(|error| format!("stack {stack_id}: {error}"))?;
    let addresses: Vec<u64> = trace.frames().iter().map(|frame| frame.ip).collect();
    Ok(symbolizer.symbolize(pid, &addresses))
}

fn warn_about_losses(report: &Report) {
    let lost = &report.summary.lost;
    if lost.total() > 0 {
        eprintln!(
            "memtrace: warning: {} events lost (ring buffer full {}, stack capture failed {}, in-flight table full {}, returns missed {}, results unreadable {}); numbers are low by that much. Raise --ring-buffer-size or --stack-slots.",
            lost.total(),
            lost.ring_buffer_full,
            lost.stack_capture_failed,
            lost.in_flight_full,
            lost.stale_in_flight,
            lost.argument_unreadable
        );
    }
}

/// `memtrace run`: returns the exit code memtrace should exit with (the target's).
pub async fn run(args: RunArgs) -> Result<i32> {
    let sink = ReportSink::open(args.report.output.as_deref(), Console::Stderr)?;
    let program = launch::resolve_program(Path::new(&args.command[0]))?;
    preflight::check_privileges()?;
    preflight::check_kernel()?;
    let environment: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let allocator = allocator::for_command(&program, &environment, &selection(&args.trace))?;
    let mut trace = Trace::load(&args.trace, allocator.has_deletes())?;
    let mut target = launch::launch(&program, &args.command)?;
    trace.attach(&allocator, target.pid)?;
    trace.open_window();
    target.release();
    let started = Instant::now();
    log::info!("started {} as pid {}", program.display(), target.pid);

    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing a SIGHUP handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let ending = loop {
        tokio::select! {
            ready = trace.events.readable() => {
                ready.context("reading the ring buffer")?;
                trace.drain();
            }
            event = target.next_event() => match event {
                Some(TargetEvent::Started) => {}
                Some(TargetEvent::ExecFailed(error)) => {
                    return Err(launch::LaunchError::Exec { program: program.display().to_string(), source: error }.into());
                }
                Some(TargetEvent::Exiting) => {
                    // Stopped on its way out, memory still mapped: everything it did is in the
                    // ring buffer, and its mappings can be read one last time.
                    trace.drain();
                    if let Err(error) = trace.symbolizer.snapshot(target.pid) {
                        log::warn!("cannot read the mappings of process {}: {error}", target.pid);
                    }
                    target.resume();
                }
                Some(TargetEvent::Ended(ending)) => break Some(ending),
                None => break None,
            },
            _ = terminate.recv() => forward(target.pid, libc::SIGTERM),
            _ = hangup.recv() => forward(target.pid, libc::SIGHUP),
            // From a terminal, Ctrl-C reaches the target directly (same process group); only a
            // SIGINT sent to memtrace alone is passed on.
            _ = interrupt.recv() => if !foreground_of_terminal() { forward(target.pid, libc::SIGINT) },
        }
    };
    let duration = started.elapsed();
    trace.close_window();
    trace.detach();
    if !trace.symbolizer.knows(target.pid) {
        eprintln!("memtrace: warning: process {} ended before its mappings could be read (killed with SIGKILL?); frames show addresses only", target.pid);
    }
    let report = trace.report(
        Mode::Run,
        Target {
            pid: target.pid,
            command: args.command.iter().map(|arg| arg.to_string_lossy().into_owned()).collect(),
            exit_code: match ending { Some(Ending::Exited(code)) => Some(code), _ => None },
            signal: match ending { Some(Ending::Killed(signal)) => Some(signal), _ => None },
            exited: true,
        },
        duration,
        &allocator,
        args.report.top,
    );
    sink.write(&report, args.report.format, args.report.top)?;
    Ok(ending.map_or(1, Ending::shell_code))
}

/// `memtrace record`: returns 0, or [`EXIT_TARGET_GONE`] when the target exited first.
pub async fn record(args: RecordArgs) -> Result<i32> {
    let sink = ReportSink::open(args.report.output.as_deref(), Console::Stdout)?;
    let pid = args.pid.get();
    preflight::check_privileges()?;
    preflight::check_kernel()?;
    let allocator = allocator::for_process(pid, &selection(&args.trace))?;
    let mut trace = Trace::load(&args.trace, allocator.has_deletes())?;
    let command = command_line(pid);
    let exited = process_exit_watch(pid)?;
    trace.symbolizer.snapshot(pid).with_context(|| format!("reading the mappings of process {pid}"))?;
    trace.attach(&allocator, pid)?;
    trace.open_window();
    let started = Instant::now();
    eprintln!(
        "memtrace: tracing pid {pid} ({}) through {}; {}",
        command.join(" "),
        allocator.name(),
        match args.duration {
            Some(duration) => format!("stopping after {duration:?} or on Ctrl-C"),
            None => "Ctrl-C to stop".to_owned(),
        }
    );

    let deadline = tokio::time::sleep(args.duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let target_exited = loop {
        tokio::select! {
            ready = trace.events.readable() => {
                ready.context("reading the ring buffer")?;
                trace.drain();
            }
            _ = exited.readable() => break true,
            _ = &mut deadline => break false,
            _ = terminate.recv() => break false,
            _ = interrupt.recv() => break false,
        }
    };
    let duration = started.elapsed();
    trace.close_window();
    if !target_exited {
        // Refresh the mappings: libraries loaded during the window get names too.
        if let Err(error) = trace.symbolizer.snapshot(pid) {
            log::warn!("cannot re-read the mappings of process {pid}: {error}");
        }
    }
    trace.detach();
    let report = trace.report(
        Mode::Record,
        Target { pid, command, exit_code: None, signal: None, exited: target_exited },
        duration,
        &allocator,
        args.report.top,
    );
    sink.write(&report, args.report.format, args.report.top)?;
    if target_exited {
        eprintln!("memtrace: process {pid} exited during the trace; the report covers it up to its exit");
        return Ok(EXIT_TARGET_GONE);
    }
    Ok(0)
}

fn selection(args: &TraceArgs) -> Selection {
    Selection { library: args.allocator_lib.clone(), prefix: args.symbol_prefix.clone() }
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

fn command_line(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|&byte| byte == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A pidfd that becomes readable when the process exits.
fn process_exit_watch(pid: u32) -> Result<AsyncFd<OwnedFd>> {
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
    watch_readable(fd).context("watching the process")
}
