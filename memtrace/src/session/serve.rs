//! `memtrace serve`: stays attached to the selected processes (following new ones and forgetting
//! those that exit) and answers the HTTP side's requests with the report of the moment, until
//! SIGTERM or SIGINT, when every probe goes.
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use super::{ServeOptions, selector::Selector, trace::Trace};
use crate::{
    attach::allocator::{self, Allocator, AllocatorError},
    collect::growth::GrowthTracker,
    kernel::execs::ExecWatch,
    report::{
        Mode, Report, Target,
        options::{Format, RenderOptions},
        printable::printable,
    },
    serve::{Ask, Snapshot},
    target::{preflight, proc::command_line},
};

/// How often `--exe` and `--cgroup` are checked against /proc besides the exec tracepoint (a
/// process moved into a cgroup does not exec).
const RESCAN: Duration = Duration::from_secs(1);

/// A new process whose allocator is not mapped yet (its loader is still running) is tried again
/// this often, this many times.
const ATTACH_RETRY: Duration = Duration::from_millis(5);
const ATTACH_TRIES: u32 = 200;

pub async fn serve(options: ServeOptions) -> Result<i32> {
    crate::serve::check_address(&options.listen, options.allow_remote)?;
    let token = options.token_file.as_deref().map(crate::serve::read_token).transpose()?;
    preflight::check_privileges()?;
    preflight::check_kernel()?;
    let selector = Selector::new(options.pids.clone(), options.exes.clone(), options.cgroups.clone())?;
    let listener = crate::serve::bind(options.listen).await?;
    let address = listener.local_addr().context("reading the address listened on")?;
    let mut trace = Trace::load(&options.trace, false)?;
    trace.all_stacks = true;
    trace.collected.growth = GrowthTracker::sliding(options.growth_window);
    let execs = if selector.follows_new() { Some(trace.watch_execs()?) } else { None };
    trace.open_window();
    let (asks, asks_received) = mpsc::channel(16);
    tokio::spawn(crate::serve::serve(listener, token, asks));
    let mut serving = Serving::new(trace, selector, &options);
    for pid in serving.selector.scan() {
        serving.consider(pid);
    }
    if serving.traced.is_empty() && !serving.selector.follows_new() {
        anyhow::bail!("none of the processes given could be traced");
    }
    eprintln!(
        "memtrace: serving http://{address}/ (/metrics, /debug/pprof/heap) for {} processes; SIGTERM or Ctrl-C to stop",
        serving.traced.len()
    );
    serving.serve(asks_received, execs).await?;
    serving.trace.close_window();
    serving.trace.detach(0);
    eprintln!("memtrace: stopped; every probe removed");
    Ok(0)
}

struct Serving<'a> {
    trace: Trace,
    selector: Selector,
    options: &'a ServeOptions,
    started: Instant,
    /// Each traced process's allocator.
    traced: HashMap<u32, Allocator>,
    /// Processes that could not be traced (said once), left alone until they exec.
    refused: HashSet<u32>,
    /// New processes whose allocator was not mapped yet: tries left.
    waiting: HashMap<u32, u32>,
    /// Exited processes not yet in a `/metrics` answer: dropped after their last one.
    exited: BTreeSet<u32>,
    exits: (mpsc::UnboundedSender<u32>, mpsc::UnboundedReceiver<u32>),
    /// Each traced process's executable (/proc/PID/exe), kept until it is forgotten.
    executables: HashMap<u32, String>,
}

impl<'a> Serving<'a> {
    fn new(trace: Trace, selector: Selector, options: &'a ServeOptions) -> Self {
        Self {
            trace,
            selector,
            options,
            started: Instant::now(),
            traced: HashMap::new(),
            refused: HashSet::new(),
            waiting: HashMap::new(),
            exited: BTreeSet::new(),
            exits: mpsc::unbounded_channel(),
            executables: HashMap::new(),
        }
    }

    async fn serve(&mut self, mut asks: mpsc::Receiver<Ask>, mut execs: Option<ExecWatch>) -> Result<()> {
        let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
        let mut rescan = tokio::time::interval(RESCAN);
        let mut retry = tokio::time::interval(ATTACH_RETRY);
        let interval = self.options.growth_interval;
        let mut growth = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            tokio::select! {
                taken = self.trace.take_events() => taken?,
                Some(ask) = asks.recv() => self.answer(ask),
                pids = async { execs.as_mut().expect("guarded by the if").next().await }, if execs.is_some() => {
                    for pid in pids.context("reading the exec ring buffer")? {
                        self.exec(pid);
                    }
                }
                _ = rescan.tick(), if self.selector.follows_new() => {
                    for pid in self.selector.scan() {
                        self.consider(pid);
                    }
                }
                _ = retry.tick(), if !self.waiting.is_empty() => self.retry_waiting(),
                Some(pid) = self.exits.1.recv() => self.ended(pid),
                _ = growth.tick() => {
                    self.trace.drain();
                    self.trace.collected.growth.observe(&self.trace.collected.heap.by_stack());
                }
                _ = terminate.recv() => return Ok(()),
                _ = interrupt.recv() => return Ok(()),
            }
        }
    }

    /// A process the selector may want: traced unless it already is, was refused, or is waiting.
    fn consider(&mut self, pid: u32) {
        if self.traced.contains_key(&pid) || self.refused.contains(&pid) || self.waiting.contains_key(&pid) {
            return;
        }
        self.try_attach(pid, 0);
    }

    /// `pid` exec'd: a traced process starts afresh (its old image's blocks are gone), and any
    /// process is weighed again.
    fn exec(&mut self, pid: u32) {
        self.refused.remove(&pid);
        let selected = self.selector.selects(pid);
        if self.traced.remove(&pid).is_some() {
            self.trace.drop_image(pid);
            if !selected {
                self.trace.untrace(pid);
            }
        }
        // Its new image's libraries are probed (any already probed for it are kept).
        if selected {
            self.waiting.insert(pid, ATTACH_TRIES);
        }
    }

    fn retry_waiting(&mut self) {
        let waiting: Vec<(u32, u32)> = self.waiting.drain().collect();
        for (pid, tries) in waiting {
            self.try_attach(pid, tries);
        }
    }

    /// Attaches to `pid`; when its allocator is not mapped yet (a new process whose loader has
    /// not run), tries again up to `tries` times.
    fn try_attach(&mut self, pid: u32, tries: u32) {
        let allocator = match allocator::for_process(pid, &self.options.trace.selection) {
            Ok(allocator) => allocator,
            Err(AllocatorError::NotFound { .. }) if tries > 0 => {
                self.waiting.insert(pid, tries - 1);
                return;
            }
            Err(AllocatorError::NoSuchProcess(_)) => return,
            Err(error) => return self.refuse(pid, &anyhow::Error::new(error)),
        };
        if let Err(error) = self.attach(pid, &allocator) {
            return self.refuse(pid, &error);
        }
        log::info!("tracing pid {pid} through {}", allocator.name());
        self.traced.insert(pid, allocator);
    }

    fn attach(&mut self, pid: u32, allocator: &Allocator) -> Result<()> {
        if !self.trace.processes.all.contains_key(&pid) {
            watch_exit(pid, self.exits.0.clone())?;
        }
        self.trace.symbolizer.snapshot(pid).with_context(|| format!("reading the mappings of process {pid}"))?;
        self.trace.attach(allocator, pid)?;
        self.trace.track_code(pid);
        self.trace.track(pid, None, command_line(pid));
        // The link's text is read, never followed.
        if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
            self.executables.insert(pid, exe.to_string_lossy().into_owned());
        }
        Ok(())
    }

    fn refuse(&mut self, pid: u32, error: &anyhow::Error) {
        eprintln!("memtrace: warning: not tracing process {pid}: {}", super::warning_text(error));
        self.refused.insert(pid);
    }

    /// A traced process exited: its probes go; it is reported once more, then forgotten.
    fn ended(&mut self, pid: u32) {
        self.waiting.remove(&pid);
        self.refused.remove(&pid);
        if self.traced.remove(&pid).is_some() || self.trace.processes.all.contains_key(&pid) {
            self.trace.ended(pid, None);
            self.exited.insert(pid);
        }
    }

    fn answer(&mut self, ask: Ask) {
        match ask {
            Ask::Snapshot { pictures, reply } => {
                let snapshot = self.snapshot(pictures);
                let _ = reply.send(Arc::new(snapshot));
                if pictures {
                    // Prometheus has seen their last numbers.
                    for pid in std::mem::take(&mut self.exited) {
                        self.trace.drop_process(pid);
                        self.executables.remove(&pid);
                    }
                }
            }
        }
    }

    /// The report of this moment.
    fn snapshot(&mut self, pictures: bool) -> Snapshot {
        self.trace.drain();
        self.trace.refresh_counters();
        if pictures {
            let living: Vec<u32> = self.traced.keys().copied().collect();
            for pid in living {
                self.trace.findings.capture_picture(pid);
            }
        }
        let target = Target {
            pid: 0,
            command: vec!["memtrace".to_owned(), "serve".to_owned()],
            exit_code: None,
            signal: None,
            exited: false,
        };
        let render = RenderOptions::new(Format::Pprof);
        let none = Allocator { probes: Vec::new() };
        let allocator = self.traced.values().next().unwrap_or(&none).clone();
        let report = self.trace.report(Mode::Serve, target, self.started.elapsed(), &allocator, &render);
        let build_ids = self.build_ids_of(&report);
        let taken_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| i64::try_from(since.as_nanos()).unwrap_or(i64::MAX));
        Snapshot {
            report,
            taken_unix_ns,
            build_ids,
            sample_period: self.options.trace.probes.sample_bytes.max(1),
            metrics_stacks: self.options.metrics_stacks,
            executables: self.executables.clone(),
        }
    }

    /// The build ID of each module the report's stacks go through, from the symbolizer, which
    /// parsed each of them to name the frames.
    fn build_ids_of(&self, report: &Report) -> HashMap<String, String> {
        let mut ids = HashMap::new();
        for stack in report.stacks.iter().chain(&report.released_stacks) {
            for module in stack.frames.iter().filter_map(|frame| frame.module.as_ref()) {
                if !ids.contains_key(module)
                    && let Some(id) = self.trace.symbolizer.build_id(stack.pid, module)
                {
                    ids.insert(module.clone(), id);
                }
            }
        }
        ids
    }
}

/// Sends `pid` on `exited` when the process exits.
fn watch_exit(pid: u32, exited: mpsc::UnboundedSender<u32>) -> Result<()> {
    super::record::watch_exit(pid, exited)
        .with_context(|| format!("watching process {pid} ({})", printable(&command_line(pid).join(" "))))
}
