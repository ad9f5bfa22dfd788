//! `memtrace run`: start a command with the probes attached before its first instruction,
//! follow what it forks and execs, scan each process at its exit, report when it ends.
use std::{
    collections::{HashMap, HashSet},
    ffi::OsString,
    path::Path,
    time::Instant,
};

use anyhow::{Context, Result, bail};
use tokio::signal::unix::{SignalKind, signal};

use super::{RunOptions, trace::Trace, trace_only::TraceOnly, warning_text};
use crate::{
    analyze::{check::CiSettings, reachability},
    attach::allocator::{self, Allocator},
    report::{
        Mode, Target,
        sink::{Console, ReportSink},
    },
    target::{
        launch::{self, Ending, Launched, TargetEvent},
        preflight,
        proc::command_line,
        ptrace::ThreadState,
    },
};

/// Runs the command under the probes; returns the exit code memtrace should exit with (the
/// command's own, unless `--check` found leaks in a command that succeeded).
pub async fn run(options: RunOptions) -> Result<i32> {
    let begun = Instant::now();
    let render = &options.report.render;
    let sink = ReportSink::open_for(options.report.output.as_deref(), Console::Stderr, render.format)?;
    let mut ci = CiSettings::new(&options.check, render.format)?;
    // Leak kinds need every block: a sample or the kernel's sums per stack have no addresses.
    let every_block = options.trace.every_block();
    if options.check.check && !every_block {
        bail!("--check needs every block to tell leak kinds apart: leave out --combined and --sample-bytes");
    }
    let program = launch::resolve_program(Path::new(&options.command[0]))?;
    preflight::check_privileges()?;
    preflight::check_kernel()?;
    let environment: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let allocator = allocator::for_command(&program, &environment, &options.trace.selection)?;
    let scan = every_block && options.leak_kinds;
    let mut trace_options = options.trace.clone();
    // For the scan at each exit: what the allocator left in blocks is told from pointers.
    trace_options.probes.handout_words = scan;
    let mut trace = Trace::load(&trace_options, options.follow_forks)?;
    trace.all_stacks = ci.needs_all_stacks(render);
    let trace_only = TraceOnly::new(&options.trace_only);
    let mut target = launch::launch(&program, &options.command, options.follow_forks)?;
    let main_pid = target.pid;
    let mut untraced = HashSet::new();
    let canonical = std::fs::canonicalize(&program).unwrap_or_else(|_| program.clone());
    if trace_only.traces(&program) || trace_only.traces(&canonical) {
        trace.attach(&allocator, main_pid)?;
        trace.track(main_pid, None, options.command.iter().map(|arg| arg.to_string_lossy().into_owned()).collect());
    } else {
        untraced.insert(main_pid);
    }
    let mut run = Run {
        trace,
        allocators: HashMap::from([(main_pid, allocator.clone())]),
        options: &options,
        scan,
        trace_only,
        untraced,
        parents: HashMap::new(),
        command_execed: false,
    };
    run.trace.open_window();
    target.release();
    let started = Instant::now();
    log::info!(
        "started {} as pid {main_pid}, {:.3} s after memtrace began",
        program.display(),
        begun.elapsed().as_secs_f64()
    );

    let ending = run.follow(&mut target, main_pid, &program).await?;
    let duration = started.elapsed();
    let mut trace = run.trace;
    trace.close_window();
    read_the_living(&mut trace);
    let detaching = Instant::now();
    trace.detach(main_pid);
    log::info!(
        "command ended after {:.3} s; the probes still attached removed in {:.3} s",
        duration.as_secs_f64(),
        detaching.elapsed().as_secs_f64()
    );
    let reporting = Instant::now();
    let target = Target {
        pid: main_pid,
        command: options.command.iter().map(|arg| arg.to_string_lossy().into_owned()).collect(),
        exit_code: match ending {
            Some(Ending::Exited(code)) => Some(code),
            _ => None,
        },
        signal: match ending {
            Some(Ending::Killed(signal)) => Some(signal),
            _ => None,
        },
        exited: true,
    };
    let mut report = trace.report(Mode::Run, target, duration, &allocator, render);
    ci.apply(&mut report, render)?;
    sink.write(&report, render)?;
    log::info!("report made and written in {:.3} s", reporting.elapsed().as_secs_f64());
    Ok(ci.exit_code(ending.map_or(1, Ending::shell_code), &report))
}

/// A run in progress: the trace, and the allocator each traced process uses.
struct Run<'a> {
    trace: Trace,
    allocators: HashMap<u32, Allocator>,
    options: &'a RunOptions,
    /// Scan each process at its exit for leak kinds.
    scan: bool,
    /// `--trace-only`: which executables are traced.
    trace_only: TraceOnly,
    /// Processes followed but not traced: their executable does not match `--trace-only`.
    untraced: HashSet<u32>,
    /// The parent of each process that was forked untraced, for when an exec makes it traced.
    parents: HashMap<u32, Option<u32>>,
    /// The target's pid has made its first exec: it runs the command, no longer memtrace's
    /// forked child.
    command_execed: bool,
}

impl Run<'_> {
    /// Takes in events and follows the processes until the command ends; returns how it ended
    /// (`None`: memtrace lost track of it).
    async fn follow(&mut self, target: &mut Launched, main_pid: u32, program: &Path) -> Result<Option<Ending>> {
        let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
        let mut hangup = signal(SignalKind::hangup()).context("installing a SIGHUP handler")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
        loop {
            tokio::select! {
                taken = self.trace.take_events() => taken?,
                event = target.next_event() => match event {
                    Some(TargetEvent::Started) => {}
                    Some(TargetEvent::ExecFailed(error)) => {
                        return Err(launch::LaunchError::Exec { program: program.display().to_string(), cause: error }.into());
                    }
                    Some(TargetEvent::Spawned { pid, parent }) => {
                        self.spawned(pid, parent);
                        target.resume();
                    }
                    Some(TargetEvent::Exec { pid }) => {
                        if pid == main_pid && !std::mem::replace(&mut self.command_execed, true) {
                            self.trace.forget_launcher_faults(pid);
                        }
                        self.exec(pid);
                        target.resume();
                    }
                    Some(TargetEvent::Stopping { pid, tid }) => {
                        // The loader program's stop: the loader mapped code and is about to run
                        // it. Any other stop is the process's own, passed on.
                        if self.trace.loader_stopped(tid) {
                            self.trace.drain();
                            self.trace.track_code(pid);
                            target.suppress();
                        } else {
                            target.resume();
                        }
                    }
                    Some(TargetEvent::Exiting { pid, threads }) => {
                        self.exiting(pid, &threads);
                        target.resume();
                    }
                    Some(TargetEvent::Ended { pid, ending }) => {
                        self.untraced.remove(&pid);
                        self.parents.remove(&pid);
                        self.trace.ended(pid, Some(ending));
                        if pid == main_pid {
                            return Ok(Some(ending));
                        }
                    }
                    None => return Ok(None),
                },
                _ = terminate.recv() => launch::forward(main_pid, libc::SIGTERM),
                _ = hangup.recv() => launch::forward(main_pid, libc::SIGHUP),
                // From a terminal, Ctrl-C reaches the target directly (same process group); only a
                // SIGINT sent to memtrace alone is passed on.
                _ = interrupt.recv() => if !launch::foreground_of_terminal() { launch::forward(main_pid, libc::SIGINT) },
            }
        }
    }

    /// A traced process forked: the child runs its parent's image, so the same allocator (and,
    /// with `--trace-only`, is traced when its parent is).
    fn spawned(&mut self, pid: u32, parent: Option<u32>) {
        if parent.is_some_and(|parent| self.untraced.contains(&parent)) {
            self.untraced.insert(pid);
            self.parents.insert(pid, parent);
            return;
        }
        let inherited = parent.and_then(|parent| self.allocators.get(&parent)).cloned();
        match inherited.map_or_else(|| allocator::for_process(pid, &self.options.trace.selection), Ok) {
            Ok(allocator) => {
                if let Err(error) = self.trace.attach(&allocator, pid) {
                    eprintln!("memtrace: warning: cannot trace child {pid}: {}", warning_text(&error));
                }
                self.trace.track_code(pid);
                self.allocators.insert(pid, allocator);
            }
            Err(error) => eprintln!("memtrace: warning: cannot trace child {pid}: {}", warning_text(&error.into())),
        }
        self.trace.track(pid, parent, command_line(pid));
    }

    /// A traced process called exec: the old image and its blocks are gone; the new one may
    /// use another allocator (a static binary, another libc), probed before it runs. With
    /// `--trace-only`, the new executable decides whether the process is traced from now on; one
    /// that stops being traced stays in the report with what it did before.
    fn exec(&mut self, pid: u32) {
        let was_traced = !self.untraced.contains(&pid);
        if !self.trace_only.traces_process(pid) {
            if was_traced {
                self.trace.drop_image(pid);
                self.trace.untrace(pid);
                self.untraced.insert(pid);
                if let Some(process) = self.trace.processes.all.get_mut(&pid) {
                    process.command = command_line(pid);
                }
            }
            return;
        }
        if !was_traced {
            self.untraced.remove(&pid);
            let parent = self.parents.remove(&pid).flatten();
            self.trace.track(pid, parent, command_line(pid));
        }
        self.trace.drop_image(pid);
        match allocator::for_exec(pid, &self.options.trace.selection) {
            Ok(allocator) => {
                if let Err(error) = self.trace.attach(&allocator, pid) {
                    eprintln!("memtrace: warning: cannot trace process {pid} after exec: {}", warning_text(&error));
                }
                self.trace.track_code(pid);
                self.trace.watch_loader(pid);
                self.allocators.insert(pid, allocator);
            }
            Err(error) => {
                eprintln!("memtrace: warning: cannot trace process {pid} after exec: {}", warning_text(&error.into()))
            }
        }
        if let Some(process) = self.trace.processes.all.get_mut(&pid) {
            process.command = command_line(pid);
        }
    }

    /// A traced process is stopped on its way out, memory still mapped: everything it did is
    /// in the ring buffer, its mappings can be read one last time, and its memory scanned for
    /// what still points to its blocks.
    fn exiting(&mut self, pid: u32, threads: &[ThreadState]) {
        if self.untraced.contains(&pid) {
            return;
        }
        let trace = &mut self.trace;
        trace.drain();
        trace.exiting(pid);
        if let Err(error) = trace.symbolizer.snapshot(pid) {
            log::warn!("cannot read the mappings of process {pid}: {error}");
        }
        trace.findings.capture_picture(pid);
        if self.scan {
            let heap = &trace.collected.heap;
            reachability::scan_into(
                &mut trace.findings.leaks,
                pid,
                threads,
                heap.addresses_of(pid),
                heap.sizes_of(pid),
                heap.handed_out(pid),
                false,
            );
        }
    }
}

/// Children still running when the command ended keep what they hold so far: their mappings
/// and memory picture are read now.
fn read_the_living(trace: &mut Trace) {
    for pid in trace.processes.pids() {
        if !trace.symbolizer.knows(pid) && trace.symbolizer.snapshot(pid).is_err() {
            eprintln!(
                "memtrace: warning: process {pid} ended before its mappings could be read (killed with SIGKILL?); its frames show addresses only"
            );
        }
        if trace.findings.picture_tried(pid) {
            continue;
        }
        if trace.processes.exited(pid) {
            eprintln!(
                "memtrace: warning: no memory picture for process {pid}: it ended without stopping at its exit (killed with SIGKILL?)"
            );
        } else {
            trace.findings.capture_picture(pid);
        }
    }
}
