//! What `run`, `record` and `serve` are asked to do, as the command line (or a test) fills it in. The
//! session reads these and nothing of clap's.
use std::{ffi::OsString, num::NonZeroU32, path::PathBuf, time::Duration};

use crate::{
    analyze::check::CheckOptions, attach::allocator::Selection, kernel::ProbeSettings, report::options::RenderOptions,
};

/// How one trace collects: the kernel side's settings and what the agent adds to them.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// Settings of the kernel side.
    pub probes: ProbeSettings,
    /// Which allocator to probe, and where in its functions.
    pub selection: Selection,
    /// Where separate debug files are looked for.
    pub debug_dirs: Vec<PathBuf>,
    /// `--older-than`: report only blocks at least this old.
    pub older_than: Option<Duration>,
    /// Count page faults, sampling one in this many.
    pub fault_period: Option<u64>,
    /// Time the kernel-side programs (`--program-stats`).
    pub program_stats: bool,
    /// Kernel memory for unwind tables (`--unwind-memory`); the method is `probes.unwind`.
    pub unwind_memory: u64,
}

impl TraceOptions {
    /// Whether the agent holds every block with its address (not `--combined`, not sampled):
    /// what leak kinds need.
    pub fn every_block(&self) -> bool {
        !self.probes.combined && self.probes.sample_bytes == 0
    }
}

/// Where the report goes and how it is rendered.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// A file, or `None` for the console (stderr for `run`, stdout for `record`).
    pub output: Option<PathBuf>,
    pub render: RenderOptions,
}

/// `memtrace run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub trace: TraceOptions,
    pub report: ReportOptions,
    pub check: CheckOptions,
    /// Trace the processes the command forks and what they exec.
    pub follow_forks: bool,
    /// Scan each process at its exit to tell leak kinds apart.
    pub leak_kinds: bool,
    /// The command and its arguments.
    pub command: Vec<OsString>,
    /// `--trace-only`: trace only the processes whose executable matches one of these globs
    /// (all when empty).
    pub trace_only: Vec<String>,
}

/// `memtrace report FILE`: render a saved report again, and check it again with `--check`.
#[derive(Debug, Clone)]
pub struct SavedReportOptions {
    pub file: PathBuf,
    pub report: ReportOptions,
    pub check: CheckOptions,
}

/// `memtrace record`.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    pub trace: TraceOptions,
    pub report: ReportOptions,
    pub check: CheckOptions,
    pub pids: Vec<NonZeroU32>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop the processes at the end of the window to tell leak kinds apart.
    pub scan: bool,
    /// Print a text report every interval.
    pub interval: Option<Duration>,
    /// Stop after this many intervals.
    pub count: Option<NonZeroU32>,
}

/// `memtrace serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub trace: TraceOptions,
    /// Where the HTTP server listens.
    pub listen: std::net::SocketAddr,
    /// Listening on an address other than loopback is allowed.
    pub allow_remote: bool,
    /// A file whose first line is the bearer token every request must carry.
    pub token_file: Option<PathBuf>,
    /// Processes to trace by id, by executable glob, by cgroup directory.
    pub pids: Vec<u32>,
    pub exes: Vec<String>,
    pub cgroups: Vec<PathBuf>,
    /// Each stack's outstanding bytes are compared this often for leak suspects...
    pub growth_interval: Duration,
    /// ...over the last this many intervals.
    pub growth_window: u32,
    /// Stacks per process in `memtrace_stack_outstanding_bytes`.
    pub metrics_stacks: usize,
}
