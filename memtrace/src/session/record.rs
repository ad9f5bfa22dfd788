//! `memtrace record`: attach to running processes, record until the window ends (duration,
//! Ctrl-C, SIGTERM, `--count` intervals, or every process gone), optionally stop each one for
//! a leak-kind scan, report.
use std::{
    io::Write,
    os::fd::{FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use super::{
    RecordOptions,
    status_line::{self, StatusLine},
    trace::Trace,
};
use crate::{
    analyze::{check::CiSettings, reachability},
    attach::allocator::{self, Allocator, AllocatorError},
    kernel::ring_buffer::watch_readable,
    report::{
        self, Mode, Report, Target,
        options::{Format, RenderOptions},
        printable::printable,
        sink::{Console, ReportSink},
    },
    target::{preflight, proc::command_line, stop::Stopper},
};

/// Exit code of `record` when every target exited before the window ended.
pub const EXIT_TARGET_GONE: i32 = 1;

/// Records; returns 0, [`EXIT_TARGET_GONE`] when every target exited first, or the check's
/// code. `--scan` needs the `stopper` (see `target::stop`), spawned before anything else.
pub async fn record(options: RecordOptions, stopper: Option<Stopper>) -> Result<i32> {
    let render = &options.report.render;
    let sink = ReportSink::open_for(options.report.output.as_deref(), Console::Stdout, render.format)?;
    if options.check.check && !options.scan {
        bail!("--check needs leak kinds, which record finds only with --scan: add --scan");
    }
    if options.scan && !options.trace.every_block() {
        bail!("--scan needs every block to tell leak kinds apart: leave out --combined and --sample-bytes");
    }
    let mut ci = CiSettings::new(&options.check, render.format)?;
    let mut pids: Vec<u32> = options.pids.iter().map(|pid| pid.get()).collect();
    pids.dedup();
    preflight::check_privileges()?;
    preflight::check_kernel()?;
    let allocators =
        pids.iter().map(|&pid| allocator::for_process(pid, &options.trace.selection)).collect::<Result<Vec<_>, _>>()?;
    let mut trace_options = options.trace.clone();
    // For the scan: what the allocator left in blocks is told from pointers.
    trace_options.probes.handout_words = options.scan;
    let mut trace = Trace::load(&trace_options, false)?;
    trace.all_stacks = ci.needs_all_stacks(render);
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
    announce(&trace, &allocators[0], options.duration);
    let mut recording = Recording { trace, options: &options, allocator: &allocators[0], target: pids[0], started };
    let all_exited = recording.record_window(&mut exited_rx, pids.len()).await?;
    let duration = started.elapsed();
    let mut trace = recording.trace;
    if let Some(mut stopper) = stopper.filter(|_| options.scan) {
        scan_the_living(&mut trace, &pids, &mut stopper);
    } else {
        trace.close_window();
        trace.drain();
    }
    read_the_living(&mut trace, &pids);
    trace.detach(pids[0]);
    let target = target_of(&trace, pids[0]);
    let mut report = trace.report(Mode::Record, target, duration, &allocators[0], render);
    ci.apply(&mut report, render)?;
    sink.write(&report, render)?;
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

/// Says on stderr what is traced and how the recording ends.
fn announce(trace: &Trace, allocator: &Allocator, duration: Option<Duration>) {
    let described: Vec<String> = trace
        .processes
        .all
        .values()
        .map(|process| format!("pid {} ({})", process.pid, printable(&process.command.join(" "))))
        .collect();
    let ending = match duration {
        Some(duration) => format!("stopping after {duration:?} or on Ctrl-C"),
        None => "Ctrl-C to stop".to_owned(),
    };
    eprintln!("memtrace: tracing {} through {}; {ending}", described.join(", "), allocator.name());
}

/// A recording in progress.
struct Recording<'a> {
    trace: Trace,
    options: &'a RecordOptions,
    allocator: &'a Allocator,
    /// The first process given: the report's target.
    target: u32,
    started: Instant,
}

impl Recording<'_> {
    /// Takes in events until the window ends; true when it ended because every process
    /// exited.
    async fn record_window(&mut self, exited: &mut mpsc::UnboundedReceiver<u32>, processes: usize) -> Result<bool> {
        // A window longer than tokio's timer reaches is as good as none.
        let deadline = tokio::time::sleep(self.options.duration.unwrap_or(Duration::MAX / 4));
        tokio::pin!(deadline);
        let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
        let mut running = processes;
        let mut intervals =
            self.options.interval.map(|period| tokio::time::interval_at(tokio::time::Instant::now() + period, period));
        let mut intervals_left = self.options.count.map(|count| count.get());
        let mut status = StatusLine::new(self.started);
        let mut status_timer = tokio::time::interval(status_line::REFRESH);
        let all_exited = loop {
            tokio::select! {
                taken = self.trace.take_events() => taken?,
                _ = status_timer.tick() => {
                    let kernel = &self.trace.kernel;
                    status.show(kernel.events_seen, self.trace.collected.heap.all().outstanding_bytes, kernel.lost_so_far());
                }
                _ = async { intervals.as_mut().expect("guarded by the if").tick().await }, if intervals.is_some() => {
                    status.clear();
                    self.interval();
                    if let Some(left) = &mut intervals_left {
                        *left = left.saturating_sub(1);
                        if *left == 0 {
                            break false;
                        }
                    }
                }
                Some(pid) = exited.recv() => {
                    self.trace.ended(pid, None);
                    running = running.saturating_sub(1);
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
        Ok(all_exited)
    }

    /// One `--interval`: each stack's growth is sampled and the top stacks printed as text,
    /// on stdout when the final report is text there too (JSON or pprof on stdout stays one
    /// document), else on stderr.
    fn interval(&mut self) {
        let trace = &mut self.trace;
        trace.drain();
        trace.refresh_counters();
        trace.collected.growth.observe(&trace.collected.heap.by_stack());
        let target = target_of(trace, self.target);
        let render = &self.options.report.render;
        let report = trace.report(Mode::Record, target, self.started.elapsed(), self.allocator, render);
        let to_stderr = self.options.report.output.is_some() || render.format != Format::Text;
        print_interval(&report, trace.collected.growth.intervals(), to_stderr, render);
    }
}

/// `--scan`: each living process is stopped (all its threads) before the window closes, so the
/// heap table and the memory scanned agree, and let go right after its scan.
fn scan_the_living(trace: &mut Trace, pids: &[u32], stopper: &mut Stopper) {
    let mut stopped = Vec::new();
    for &pid in pids.iter().filter(|&&pid| !trace.processes.exited(pid)) {
        match stopper.stop(pid) {
            Ok(threads) => stopped.push((pid, threads)),
            Err(error) => eprintln!("memtrace: warning: no leak kinds for process {pid}: {error}"),
        }
    }
    trace.close_window();
    trace.drain();
    for (pid, threads) in stopped {
        let heap = &trace.collected.heap;
        let leaks = &mut trace.findings.leaks;
        let (addrs, sizes, handed_out) = (heap.addresses_of(pid), heap.sizes_of(pid), heap.handed_out(pid));
        reachability::scan_into(leaks, pid, &threads, addrs, sizes, handed_out, true);
        let stopped_for = stopper.resume(pid);
        leaks.stopped(pid, stopped_for);
        eprintln!("memtrace: process {pid} was stopped for {:.1} ms for the scan", stopped_for.as_secs_f64() * 1e3);
    }
}

/// The mappings of the living are read again (libraries loaded during the window get names
/// too) and their memory picture taken; one that exited during the window has none.
fn read_the_living(trace: &mut Trace, pids: &[u32]) {
    for &pid in pids {
        if trace.processes.exited(pid) {
            eprintln!("memtrace: warning: no memory picture for process {pid}: it exited before the end of the trace");
            continue;
        }
        if let Err(error) = trace.symbolizer.snapshot(pid) {
            log::warn!("cannot re-read the mappings of process {pid}: {error}");
        }
        trace.findings.capture_picture(pid);
    }
}

/// The target as `record` reports it: the first process given.
fn target_of(trace: &Trace, pid: u32) -> Target {
    let first = trace.processes.all.get(&pid);
    Target {
        pid,
        command: first.map(|process| process.command.clone()).unwrap_or_default(),
        exit_code: None,
        signal: None,
        exited: first.is_some_and(|process| process.exited),
    }
}

/// One `--interval` report, as text, on stdout or stderr.
fn print_interval(report: &Report, interval: u64, to_stderr: bool, render: &RenderOptions) {
    let options = RenderOptions { format: Format::Text, ..*render };
    let mut text = format!("memtrace: interval {interval} at {:.1} s\n", report.duration_seconds).into_bytes();
    if report::render(report, &options, &mut text).is_ok() {
        text.push(b'\n');
        let written = if to_stderr { std::io::stderr().write_all(&text) } else { std::io::stdout().write_all(&text) };
        if let Err(error) = written {
            log::warn!("cannot print the interval report: {error}");
        }
    }
}

/// Sends `pid` on `exited` when the process exits (a pidfd turns readable).
pub(super) fn watch_exit(pid: u32, exited: mpsc::UnboundedSender<u32>) -> Result<()> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ESRCH) {
            bail!(AllocatorError::NoSuchProcess(pid));
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
