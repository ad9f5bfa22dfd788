//! Command-line definitions (clap) and nothing else.
use std::{
    ffi::OsString,
    num::{NonZeroU32, NonZeroU64},
    path::PathBuf,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};

use crate::{
    analyze::check::{CheckOptions, DEFAULT_FAIL_ON},
    attach::allocator::Selection,
    kernel::ProbeSettings,
    report::{
        LeakKind,
        options::{Format, KindFilter, RenderOptions, SortBy, Weight},
    },
    session::{RecordOptions, ReportOptions, RunOptions, SavedReportOptions, ServeOptions, TraceOptions},
};

#[derive(Debug, Parser)]
#[command(
    name = "memtrace",
    version,
    about = "Find memory that was allocated and never freed, by call stack, with eBPF.",
    long_about = "memtrace traces a process's allocator calls (malloc, calloc, realloc, free) with \
eBPF uprobes, without restarting or rebuilding it, and reports the call stacks that hold memory \
allocated and not freed, with function, file and line.\n\nIt needs root (or CAP_BPF, CAP_PERFMON, \
CAP_SYS_ADMIN, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH; docs/security.md says why each) and a kernel \
with BTF, uprobes and BPF ring buffers."
)]
pub struct Cli {
    /// Show more detail on stderr: -v for the probes attached and kernel-side diagnostics, -vv
    /// for debug output.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a command with the probes attached before its first instruction, and report what it
    /// had not freed when it exited. Exits with the command's own exit code.
    #[command(after_help = "The report goes to stderr unless -o is given, so the command's \
stdout stays clean. If the command is killed by a signal, memtrace exits with 128 + the signal \
number. If the command is not found memtrace exits with 127, if it cannot be executed with 126, and \
on any error of its own with 1. With --check, leaks that fail the check make it exit with 23 \
(or --exit-code) when the command itself succeeded.")]
    Run(RunArgs),
    /// Attach to running processes and report what they allocated during the window and had not
    /// freed at its end. Stops after --duration, on Ctrl-C or SIGTERM, or when every process has
    /// exited.
    #[command(after_help = "The report goes to stdout unless -o is given. memtrace exits with 0 \
when the window ends (--duration, Ctrl-C, SIGTERM), with 1 when every process exited before it \
(the report is still written) or on any error of its own; with --check, leaks that fail the check \
make it exit with 23 (or --exit-code) instead.")]
    Record(RecordArgs),
    /// Stay attached to processes (by pid, executable or cgroup, following new ones) and serve
    /// what they hold over HTTP: /metrics for Prometheus, /debug/pprof/heap and /allocs as Go
    /// serves them (go tool pprof, Parca, Pyroscope), and a page listing them.
    #[command(after_help = "memtrace serves until SIGTERM or Ctrl-C, then removes every probe and \
exits with 0; it exits with 1 on any error of its own (a port in use, a process that does not \
exist). It listens on loopback unless --allow-remote is given: stacks and command lines say a lot \
about a service, so give a --token-file too. Blocks are sampled (one every 512 KiB allocated, as \
Go, jemalloc and tcmalloc profile their heaps) unless --exact. See docs/serve.md.")]
    Serve(ServeArgs),
    /// Shorthand for `run --faults` (`memtrace faults -- CMD`) or `record --faults`
    /// (`memtrace faults -p PID`): page faults by stack, with the rest of the report.
    Faults(FaultsArgs),
    /// Render a JSON report saved with `--format json -o FILE` again, in any format (a
    /// flamegraph, pprof, ...), or check it again with other suppressions (`--check`). Needs no
    /// privileges and no running target.
    #[command(
        after_help = "The report goes to stdout unless -o is given. A file that is missing, unreadable or not a memtrace JSON report is an error (exit code 1). With --check, the saved stacks are checked again (suppressions, --fail-on, --leak-threshold) and memtrace exits as `run --check` would have: the saved command's own failure first, then 23 (or --exit-code) for leaks; a report without leak kinds cannot be checked (exit code 1)."
    )]
    Report(SavedReportArgs),
}

#[derive(Debug, Args)]
pub struct SavedReportArgs {
    /// The JSON report to render, as written by `memtrace run|record --format json -o FILE`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    #[command(flatten)]
    pub report: ReportArgs,

    /// `--check` decides again on the saved stacks, with these suppressions and kinds.
    #[command(flatten)]
    pub check: CheckArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub report: ReportArgs,

    #[command(flatten)]
    pub check: CheckArgs,

    #[command(flatten)]
    pub trace: TraceArgs,

    /// Trace the processes the command forks too, and what they exec, each reported on its own
    /// (`--follow-forks=false` traces the command's process only).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub follow_forks: bool,

    /// Skip the scan at exit that tells leak kinds apart (definitely, indirectly, possibly
    /// lost, still reachable). The scan reads every outstanding block while the process is held
    /// at its exit; at its peak memtrace holds about 52 bytes per outstanding block, against 42
    /// while tracing, plus a cache of about 16 MiB of block contents (measured in BENCHMARKS.md).
    #[arg(long, conflicts_with = "check")]
    pub no_leak_kinds: bool,

    /// Trace and report only the processes whose executable's path matches GLOB (`*` matches
    /// any run of characters, `/` included; `?` one character), e.g. `--trace-only '*/tests/*'`
    /// to check a test suite run by `make` or a script. The others are still followed, so that
    /// their children are seen, but get no probes and are not reported. Repeatable: a process
    /// matching any is traced.
    #[arg(long, value_name = "GLOB")]
    pub trace_only: Vec<String>,

    /// The command to run, and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The processes to trace: `-p 1,2,3` or `-p 1 -p 2`.
    #[arg(short = 'p', long = "pid", value_name = "PID", value_delimiter = ',', required = true)]
    pub pids: Vec<NonZeroU32>,

    /// Stop after this long, e.g. `30s`, `500ms`, `2m`, `1h`. Without it, record until Ctrl-C,
    /// SIGTERM, or the process exits.
    #[arg(short, long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// At the end of the window, stop the processes (ptrace, every thread) just long enough to
    /// scan their memory for pointers and tell leak kinds apart, as `run` does at exit; the
    /// report says how long they were stopped.
    #[arg(long)]
    pub scan: bool,

    /// Print a text report of the top stacks every DURATION while recording (as memleak does),
    /// on stdout (on stderr when -o is given or the format is not text); the final report
    /// marks the stacks that grew in most intervals as leak suspects. Not with --combined,
    /// whose maps are read from the kernel only at the end.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", conflicts_with = "combined")]
    pub interval: Option<Duration>,

    /// With --interval: stop after N intervals.
    #[arg(long, value_name = "N", requires = "interval")]
    pub count: Option<NonZeroU32>,

    /// memleak's positional interval: `record -p PID 5` is `--interval 5s` (a bare number is
    /// seconds, as memleak counts it).
    #[arg(value_name = "INTERVAL", value_parser = parse_duration, conflicts_with_all = ["interval", "combined"])]
    pub interval_positional: Option<Duration>,

    /// memleak's positional count after the interval: `record -p PID 5 3` is `--interval 5s
    /// --count 3`.
    #[arg(value_name = "COUNT", requires = "interval_positional", conflicts_with = "count")]
    pub count_positional: Option<NonZeroU32>,

    #[command(flatten)]
    pub report: ReportArgs,

    #[command(flatten)]
    pub check: CheckArgs,

    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to serve HTTP: ADDRESS:PORT (port 0 picks a free one, printed on stderr).
    #[arg(long, value_name = "ADDRESS:PORT", default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,

    /// Allow --listen on an address other than loopback, reachable from other machines.
    #[arg(long)]
    pub allow_remote: bool,

    /// Require every request to carry `Authorization: Bearer TOKEN`, the token being this file's
    /// first line (Prometheus' `authorization.credentials_file`, `go tool pprof` through a proxy).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Trace these processes: `-p 1,2,3` or `-p 1 -p 2`.
    #[arg(short = 'p', long = "pid", value_name = "PID", value_delimiter = ',')]
    pub pids: Vec<NonZeroU32>,

    /// Trace every process whose executable's path matches GLOB (`*` any run of characters, `/`
    /// included; `?` one), those running now and those started later (execs are watched).
    /// Repeatable.
    #[arg(long = "exe", value_name = "GLOB")]
    pub exes: Vec<String>,

    /// Trace every process in this cgroup directory or below it (e.g.
    /// /sys/fs/cgroup/system.slice/nginx.service), now and later: a container or a systemd
    /// unit. Repeatable.
    #[arg(long = "cgroup", value_name = "DIR")]
    pub cgroups: Vec<PathBuf>,

    /// Record every block instead of a sample: exact numbers, at the price of an event and a
    /// stack walk per allocation. Without it, --sample-bytes defaults to 524,288.
    #[arg(long, conflicts_with = "sample_bytes")]
    pub exact: bool,

    /// Compare each stack's outstanding bytes this often; a stack that grew in most of the last
    /// --growth-window intervals is a leak suspect (memtrace_leak_suspect).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "1m")]
    pub growth_interval: Duration,

    /// Intervals the leak-suspect test looks back over (2 to 64).
    #[arg(long, value_name = "N", default_value_t = 60, value_parser = clap::value_parser!(u32).range(2..=64))]
    pub growth_window: u32,

    /// Stacks per process in /metrics' memtrace_stack_outstanding_bytes (the ones holding most).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub metrics_stacks: usize,

    #[command(flatten)]
    pub trace: TraceArgs,
}

/// `serve`'s sampling rate without --exact: Go's MemProfileRate and jemalloc's default
/// (lg_prof_sample 19).
pub const SERVE_SAMPLE_BYTES: u64 = 512 * 1024;

impl ServeArgs {
    /// What `serve` is asked to do.
    pub fn options(&self) -> ServeOptions {
        let mut trace = self.trace.options();
        if !self.exact {
            trace.probes.sample_bytes = self.trace.sample_bytes.unwrap_or(SERVE_SAMPLE_BYTES);
            if self.trace.live_blocks.is_none() {
                trace.probes.live_blocks = 1 << 17;
            }
        }
        ServeOptions {
            trace,
            listen: self.listen,
            allow_remote: self.allow_remote,
            token_file: self.token_file.clone(),
            pids: self.pids.iter().map(|pid| pid.get()).collect(),
            exes: self.exes.clone(),
            cgroups: self.cgroups.clone(),
            growth_interval: self.growth_interval.max(Duration::from_millis(100)),
            growth_window: self.growth_window,
            metrics_stacks: self.metrics_stacks,
        }
    }
}

/// CI mode and suppressions (see docs/ci.md).
#[derive(Debug, Default, Args)]
pub struct CheckArgs {
    /// Fail (exit with --exit-code, 23 by default) when unsuppressed leaks of the --fail-on kinds
    /// exceed --leak-threshold bytes. A target that fails itself keeps its own exit code. With
    /// record, it needs --scan (leak kinds); not with --combined or --sample-bytes.
    #[arg(long)]
    pub check: bool,

    /// Bytes of failing leaks tolerated by --check (default 0: any leak fails).
    #[arg(long, value_name = "BYTES", default_value_t = 0, requires = "check")]
    pub leak_threshold: u64,

    /// Leak kinds that fail --check, comma-separated: definite, indirect, possible, reachable,
    /// or all. Default: definite,indirect.
    #[arg(long, value_name = "KINDS", value_parser = parse_fail_on, requires = "check")]
    pub fail_on: Option<FailOn>,

    /// Exit code of --check when leaks are found (default 23). valgrind's spelling,
    /// --error-exitcode, is the same option.
    #[arg(long, visible_alias = "error-exitcode", value_name = "N", requires = "check", value_parser = clap::value_parser!(u8).range(1..))]
    pub exit_code: Option<u8>,

    /// valgrind's --leak-check=full, accepted as the default it is: memtrace always tells the
    /// leak kinds of every block apart (--no-leak-kinds turns that off).
    #[arg(long, value_name = "full", value_parser = ["full", "yes"], hide_possible_values = true)]
    pub leak_check: Option<String>,

    /// Suppressions file in LeakSanitizer's format (`leak:PATTERN` lines, `*` wildcards, `#`
    /// comments), matched against the function, file and module of every frame; may be given
    /// more than once. Suppressed stacks stay in the report, marked, and never fail --check.
    #[arg(long, value_name = "FILE")]
    pub suppressions: Vec<PathBuf>,

    /// Do not apply the built-in suppressions (glibc's stdio buffers, the dynamic loader's
    /// records and thread-local storage, locale data, libstdc++'s emergency pool).
    #[arg(long)]
    pub no_builtin_suppressions: bool,

    /// Write a suppressions file that would silence this report's failing leaks to FILE (`-`
    /// for stdout).
    #[arg(long, value_name = "FILE")]
    pub print_suppressions: Option<PathBuf>,

    /// valgrind's --gen-suppressions (`yes` or `all`; alone, `yes`): --print-suppressions -, the
    /// suppressions on stdout (in memtrace's format, LeakSanitizer's `leak:` lines).
    #[arg(long, value_name = "yes|all|no", num_args = 0..=1, default_missing_value = "yes", require_equals = true, value_parser = ["yes", "all", "no"], hide_possible_values = true, conflicts_with = "print_suppressions")]
    pub gen_suppressions: Option<String>,
}

/// The leak kinds `--fail-on` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailOn(pub Vec<LeakKind>);

fn parse_fail_on(text: &str) -> Result<FailOn, String> {
    crate::analyze::check::parse_fail_on(text).map(FailOn)
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Report format: `text` for people, `json` for machines (schema in
    /// docs/report.schema.json; `memtrace report` renders it again later), `folded` collapsed
    /// stacks for flamegraph.pl, inferno and speedscope, `svg` an interactive flamegraph, `pprof` a gzipped profile.proto for pprof,
    /// Pyroscope, Grafana and speedscope, `junit` JUnit XML for CI systems (one failing test case
    /// per leak stack).
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Write the report to this file instead of stderr (run) or stdout (record, report).
    /// Checked before tracing starts.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Show only the N stacks holding the most bytes (and, with --faults, the N stacks with the
    /// most page faults). Text shows 10 by default; the other formats show all unless this is
    /// given. -T is memleak's spelling.
    #[arg(short = 'T', long, value_name = "N")]
    pub top: Option<usize>,

    /// The leak kinds text, folded, svg and pprof show, comma-separated: definite, indirect,
    /// possible, reachable, or all (stacks with no leak kind, such as mappings, always show).
    /// Default: with --check, the --fail-on kinds (definite,indirect unless told); otherwise
    /// all. JSON and JUnit keep every kind. valgrind's spelling, --show-leak-kinds, is the same
    /// option.
    #[arg(long, visible_alias = "show-leak-kinds", value_name = "KINDS", value_parser = parse_fail_on)]
    pub kinds: Option<FailOn>,

    /// memleak's -a (show addresses): accepted; text frames always show their addresses.
    #[arg(short = 'a', long)]
    pub show_addresses: bool,

    /// JUnit: give each test case the `file` and `line` attributes of the leak's frame, which
    /// GitHub annotation actions read. Jenkins' junit-10.xsd has no such attributes: a strict
    /// validator (the xUnit plugin) rejects the report with them.
    #[arg(long)]
    pub junit_locations: bool,

    /// What `folded` and `svg` count per stack: outstanding `bytes`, outstanding `allocations`
    /// (blocks), or page `faults` per faulting stack (a report made with --faults).
    #[arg(long, value_enum, default_value_t = Weight::Bytes)]
    pub weight: Weight,

    /// Order stacks (and pick the --top ones) by outstanding `bytes` or by outstanding
    /// allocation `count`.
    #[arg(long, value_enum, default_value_t = SortBy::Bytes)]
    pub sort: SortBy,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Take malloc, free and the rest of the C allocator API from this object (a shared library
    /// path, or the executable for a statically linked allocator) instead of choosing it.
    #[arg(long, value_name = "PATH")]
    pub allocator_lib: Option<PathBuf>,

    /// The C allocator functions carry this prefix, e.g. `je_` for a jemalloc built with
    /// --with-jemalloc-prefix (je_malloc, je_free, ...).
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub symbol_prefix: String,

    /// Probe every allocator function at its first instruction. By default each probe sits on
    /// the first instruction the kernel emulates, when only instructions that change nothing a
    /// probe reads come before it (glibc's free: the branch of its NULL check; libstdc++'s
    /// operators: past endbr64), which costs the traced program far less than a single-stepped
    /// first instruction. -v shows where each probe went.
    #[arg(long)]
    pub probe_at_entry: bool,

    /// Benchmarking only: attach empty programs at the same points, to measure what the probes
    /// themselves cost (the report then counts nothing).
    #[arg(long, hide = true)]
    pub empty_probes: bool,

    /// Testing only: one perf-event uprobe per probe point, as on kernels before 6.6, instead of
    /// one uprobe_multi link per program and file (removing them then takes a grace period
    /// each, one after another).
    #[arg(long, hide = true)]
    pub perf_event_uprobes: bool,

    /// Testing only: thread and process ids below which the kernel keeps per-thread state in
    /// arrays rather than hash maps (default: the kernel's pid_max, up to 262,144). 0 takes the
    /// hash maps for every id, the path machines with a larger pid_max take. At most 4,194,304
    /// (the kernel's largest pid_max).
    #[arg(long, hide = true, value_name = "IDS", value_parser = clap::value_parser!(u32).range(0..=4_194_304))]
    pub id_slots: Option<u32>,

    /// Testing only: take this many bytes as the memory available for the kernel maps, instead
    /// of MemAvailable from /proc/meminfo.
    #[arg(long, hide = true, value_name = "BYTES")]
    pub mem_available: Option<u64>,

    /// Bytes of ring buffer between the kernel and memtrace (rounded up to a power of two pages),
    /// 4,096 to 1,073,741,824 (1 GiB). Raise it if the report says events were lost.
    #[arg(long, default_value_t = 32 * 1024 * 1024, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(4096..=i64::from(crate::kernel::memory::MAX_RING_BUFFER_BYTES)))]
    pub ring_buffer_size: u32,

    /// User stack frames captured per allocation, innermost first (at most 127). A shallower
    /// walk costs less per call; the frames beyond it are cut off.
    #[arg(long, default_value_t = 127, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=127))]
    pub stack_depth: u32,

    /// How user stacks are walked: `auto` by each module's unwind tables (its .eh_frame, as
    /// debuggers and valgrind unwind) where it has them and by frame pointer where it has none;
    /// `tables` by unwind tables only (a frame in a module without them ends the stack, marked
    /// truncated); `fp` by frame pointer only, as memtrace did before: stacks stop at the first
    /// function built without frame pointers (Debian's libc, -O2 builds). -v names each module's
    /// method.
    #[arg(long, value_enum, default_value_t = crate::unwind::Method::Auto, value_name = "METHOD")]
    pub unwind: crate::unwind::Method,

    /// Kernel memory for unwind tables (preallocated when the tables are used): 12 bytes per
    /// row, about one row per 50 bytes of code (Debian's libc's table takes a third of a MiB). A module
    /// whose table no longer fits is walked by frame pointer, and counted
    /// (unwind.modules_not_fitting).
    #[arg(long, default_value_t = 32 << 20, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(4096..=(1 << 34)))]
    pub unwind_memory: u64,

    /// Time every run of memtrace's kernel-side programs (BPF_ENABLE_STATS) and report runs and
    /// nanoseconds per run for each (JSON `kernel_programs`): what tracing costs the traced
    /// program in the kernel, beyond the probes' own traps. Adds about two clock reads per run.
    #[arg(long)]
    pub program_stats: bool,

    /// Keep the outstanding blocks and each stack's totals in kernel maps instead of sending an
    /// event per call; memtrace adds the blocks up per stack when it reports: no ring-buffer
    /// traffic and no agent work per call, at the price of no per-block times.
    #[arg(long, conflicts_with_all = ["sample_bytes", "empty_probes"])]
    pub combined: bool,

    /// `--combined`: distinct stacks the kernel can keep, 1 to 1,048,576 (preallocated, about
    /// 1 KiB each for the frames and 64 bytes per CPU for the totals); blocks from stacks beyond
    /// it are counted in lost.stack_sums_full.
    #[arg(long, default_value_t = 16 * 1024, value_name = "N", requires = "combined", value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub stack_slots: u32,

    /// `--combined` or `--sample-bytes`: outstanding blocks the kernel can track at once, at
    /// least, 1 to 67,108,864 (a table of twice as many 32-byte slots, preallocated: 64 bytes of
    /// kernel memory each; and an overflow map of as many, allocated as used). Default:
    /// 1,048,576 with --combined, 131,072 sampled blocks with --sample-bytes. Blocks beyond it
    /// are counted in lost.live_blocks_full.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=67_108_864))]
    pub live_blocks: Option<u32>,

    /// Record a Poisson sample of the allocated bytes, one sample every BYTES on average (1 to
    /// 1,099,511,627,776: 1 TiB), as tcmalloc and jemalloc profile their heaps; blocks not
    /// sampled cost no stack walk and no event. Numbers are scaled up and marked as estimates
    /// (summary.estimated).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..=1 << 40))]
    pub sample_bytes: Option<u64>,

    /// Record only blocks of at least this many bytes (filtered in the kernel; frees of blocks
    /// not recorded then show as unknown frees). -z is memleak's spelling.
    #[arg(short = 'z', long, value_name = "BYTES", default_value_t = 0)]
    pub min_size: u64,

    /// Record only blocks of at most this many bytes (filtered in the kernel). -Z is memleak's
    /// spelling.
    #[arg(short = 'Z', long, value_name = "BYTES")]
    pub max_size: Option<u64>,

    /// Look for separate debug files of stripped binaries under DIR (by build-id in
    /// DIR/.build-id/, and by .gnu_debuglink in DIR/<the binary's directory>/), like gdb's
    /// debug-file-directory. Repeatable; given, it replaces the default.
    #[arg(long = "debug-dir", value_name = "DIR", default_value = "/usr/lib/debug")]
    pub debug_dirs: Vec<PathBuf>,

    /// Report only allocator blocks at least this old when the report is made (e.g. `5s`), to
    /// leave out short-lived ones still in use; the totals still count every block, and
    /// mappings, which carry no age, are all shown. Not with --combined, which keeps no per-block
    /// times. It needs a unit, `500ms` or `5s`: a bare number is refused, as memleak's -o
    /// counts milliseconds where memtrace's durations count seconds.
    #[arg(long, value_parser = parse_age, value_name = "DURATION", conflicts_with = "combined")]
    pub older_than: Option<Duration>,

    /// Also count the target's minor and major page faults, each with its user stack and the
    /// kind of memory it touched (heap, stack, anonymous, file, shared memory, other).
    #[arg(long)]
    pub faults: bool,

    /// Sample one page fault in N instead of every one (implies --faults), for processes that
    /// fault millions of times. Counts are then scaled by N and marked as estimates.
    #[arg(long, value_name = "N")]
    pub fault_period: Option<NonZeroU64>,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["pids", "command"]))]
pub struct FaultsArgs {
    /// Attach to these running processes, as `record -p` does.
    #[arg(short = 'p', long = "pid", value_name = "PID", value_delimiter = ',')]
    pub pids: Vec<NonZeroU32>,

    /// With -p: stop after this long (as `record --duration`).
    #[arg(short, long, value_parser = parse_duration, value_name = "DURATION", requires = "pids")]
    pub duration: Option<Duration>,

    /// With a command: trace its children too (as `run --follow-forks`).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub follow_forks: bool,

    #[command(flatten)]
    pub report: ReportArgs,

    #[command(flatten)]
    pub trace: TraceArgs,

    /// Or start this command, as `run` does (after `--`).
    #[arg(trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// What `memtrace faults` stands for.
pub enum FaultsShorthand {
    Run(RunArgs),
    Record(RecordArgs),
}

impl FaultsArgs {
    /// The `run --faults` or `record --faults` this shorthand means.
    pub fn expand(self) -> FaultsShorthand {
        let trace = TraceArgs { faults: true, ..self.trace };
        if self.command.is_empty() {
            FaultsShorthand::Record(RecordArgs {
                pids: self.pids,
                duration: self.duration,
                interval: None,
                count: None,
                interval_positional: None,
                count_positional: None,
                report: self.report,
                trace,
                check: CheckArgs::default(),
                scan: false,
            })
        } else {
            FaultsShorthand::Run(RunArgs {
                report: self.report,
                trace,
                follow_forks: self.follow_forks,
                command: self.command,
                check: CheckArgs::default(),
                no_leak_kinds: false,
                trace_only: Vec::new(),
            })
        }
    }
}

impl CheckArgs {
    /// The check's options.
    pub fn options(&self) -> CheckOptions {
        CheckOptions {
            check: self.check,
            leak_threshold: self.leak_threshold,
            fail_on: self.fail_on.as_ref().map(|kinds| kinds.0.clone()),
            exit_code: self.exit_code,
            suppressions: self.suppressions.clone(),
            builtin_suppressions: !self.no_builtin_suppressions,
            print_suppressions: self.print_suppressions.clone().or_else(|| {
                matches!(self.gen_suppressions.as_deref(), Some("yes" | "all")).then(|| PathBuf::from("-"))
            }),
        }
    }

    /// The kinds `--kinds` shows when not given: with `--check`, the kinds that fail it.
    fn default_kinds(&self) -> KindFilter {
        match (&self.fail_on, self.check) {
            (_, false) => KindFilter::ALL,
            (Some(kinds), true) => KindFilter::of(&kinds.0),
            (None, true) => KindFilter::of(&DEFAULT_FAIL_ON),
        }
    }
}

impl ReportArgs {
    /// Where the report goes and how it is rendered, with the CI options that choose the kinds
    /// shown by default.
    pub fn options(&self, check: &CheckArgs) -> ReportOptions {
        ReportOptions { output: self.output.clone(), render: self.render_options(check) }
    }

    /// How the report is to be rendered.
    pub fn render_options(&self, check: &CheckArgs) -> RenderOptions {
        RenderOptions {
            format: self.format,
            top: self.top,
            weight: self.weight,
            sort: self.sort,
            kinds: self.kinds.as_ref().map_or_else(|| check.default_kinds(), |kinds| KindFilter::of(&kinds.0)),
            junit_locations: self.junit_locations,
        }
    }
}

impl SavedReportArgs {
    /// What `memtrace report` is asked to do.
    pub fn options(&self) -> SavedReportOptions {
        SavedReportOptions {
            file: self.file.clone(),
            report: self.report.options(&self.check),
            check: self.check.options(),
        }
    }
}

impl RunArgs {
    /// What `run` is asked to do.
    pub fn options(&self) -> RunOptions {
        RunOptions {
            trace: self.trace.options(),
            report: self.report.options(&self.check),
            check: self.check.options(),
            follow_forks: self.follow_forks,
            leak_kinds: !self.no_leak_kinds,
            command: self.command.clone(),
            trace_only: self.trace_only.clone(),
        }
    }
}

impl RecordArgs {
    /// What `record` is asked to do.
    pub fn options(&self) -> RecordOptions {
        RecordOptions {
            trace: self.trace.options(),
            report: self.report.options(&self.check),
            check: self.check.options(),
            pids: self.pids.clone(),
            duration: self.duration,
            scan: self.scan,
            interval: self.interval.or(self.interval_positional),
            count: self.count.or(self.count_positional),
        }
    }
}

impl TraceArgs {
    /// How one trace collects.
    pub fn options(&self) -> TraceOptions {
        TraceOptions {
            probes: ProbeSettings {
                ring_buffer_bytes: self.ring_buffer_size,
                empty: self.empty_probes,
                perf_event_uprobes: self.perf_event_uprobes,
                // Set by the session when it scans for leak kinds.
                handout_words: false,
                id_slots: self.id_slots,
                combined: self.combined,
                sample_bytes: self.sample_bytes.unwrap_or(0),
                min_size: self.min_size,
                max_size: self.max_size.unwrap_or(u64::MAX),
                stack_slots: self.stack_slots,
                stack_depth: self.stack_depth,
                live_blocks: self.live_blocks.unwrap_or(if self.combined { 1 << 20 } else { 1 << 17 }),
                mem_available: self.mem_available,
                unwind: self.unwind,
                unwind_capacity: match self.unwind {
                    crate::unwind::Method::FramePointer => crate::unwind::Capacity::NONE,
                    _ => crate::unwind::Capacity::for_budget(self.unwind_memory),
                },
            },
            selection: Selection {
                library: self.allocator_lib.clone(),
                prefix: self.symbol_prefix.clone(),
                probe_at_entry: self.probe_at_entry,
            },
            debug_dirs: self.debug_dirs.clone(),
            older_than: self.older_than,
            fault_period: self.fault_sampling(),
            program_stats: self.program_stats,
            unwind_memory: self.unwind_memory,
        }
    }

    /// The fault sampling period when faults are traced: 1 counts every fault.
    pub fn fault_sampling(&self) -> Option<u64> {
        match (self.faults, self.fault_period) {
            (_, Some(period)) => Some(period.get()),
            (true, None) => Some(1),
            (false, None) => None,
        }
    }
}

/// The longest duration memtrace takes (`--duration`, `--interval`, `--older-than`): a year.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// `--older-than`: a duration with its unit. memleak's `-o` counts milliseconds and memtrace's
/// bare numbers seconds, so a bare number is refused rather than taken a thousand times longer.
fn parse_age(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "`{trimmed}` needs a unit: write `{trimmed}ms` for milliseconds (what memleak's -o counts) or `{trimmed}s` for seconds"
        ));
    }
    parse_duration(text)
}

/// Parses `250ms`, `10s`, `5m`, `1h` or a bare number of seconds, up to [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("`{text}` is not a duration: use e.g. 500ms, 30s, 2m or 1h"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit `{unit}` in `{text}`: use ms, s, m or h")),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("`{text}` must be a positive duration"));
    }
    if seconds > MAX_DURATION.as_secs_f64() {
        return Err(format!("`{text}` is longer than a year (8760h), the longest duration memtrace takes"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn run(args: &[&str]) -> Result<RunOptions, clap::Error> {
        let all = ["memtrace", "run"].iter().chain(args).chain(&["--", "prog"]);
        Cli::try_parse_from(all).map(|cli| match cli.command {
            Command::Run(args) => args.options(),
            other => panic!("not run: {other:?}"),
        })
    }

    fn record(args: &[&str]) -> Result<RecordOptions, clap::Error> {
        let all = ["memtrace", "record", "-p", "1"].iter().chain(args);
        Cli::try_parse_from(all).map(|cli| match cli.command {
            Command::Record(args) => args.options(),
            other => panic!("not record: {other:?}"),
        })
    }

    #[test]
    fn valgrinds_options_map_to_memtraces() {
        // --leak-check=full is what memtrace always does.
        assert!(run(&["--leak-check=full"]).is_ok());
        assert!(run(&["--leak-check", "full", "--check"]).is_ok());
        assert!(run(&["--leak-check=summary"]).is_err());
        // --show-leak-kinds is --kinds.
        let kinds = |options: RunOptions| options.report.render.kinds;
        let definite_possible = KindFilter::of(&[LeakKind::DefinitelyLost, LeakKind::PossiblyLost]);
        assert_eq!(run(&["--show-leak-kinds=definite,possible"]).map(kinds).unwrap(), definite_possible);
        assert_eq!(run(&["--kinds", "definite,possible"]).map(kinds).unwrap(), definite_possible);
        assert_eq!(run(&["--show-leak-kinds=all"]).map(kinds).unwrap(), KindFilter::ALL);
        // --error-exitcode is --exit-code, and like it needs --check.
        assert_eq!(run(&["--check", "--error-exitcode=3"]).unwrap().check.exit_code, Some(3));
        assert_eq!(run(&["--check", "--exit-code", "3"]).unwrap().check.exit_code, Some(3));
        assert!(run(&["--error-exitcode=3"]).is_err());
        // --gen-suppressions is --print-suppressions -.
        let printed = |args: &[&str]| run(args).unwrap().check.print_suppressions;
        assert_eq!(printed(&["--gen-suppressions"]), Some(PathBuf::from("-")));
        assert_eq!(printed(&["--gen-suppressions=all"]), Some(PathBuf::from("-")));
        assert_eq!(printed(&["--gen-suppressions=yes"]), Some(PathBuf::from("-")));
        assert_eq!(printed(&["--print-suppressions", "-"]), Some(PathBuf::from("-")));
        assert_eq!(printed(&["--gen-suppressions=no"]), None);
        assert!(run(&["--gen-suppressions", "--print-suppressions", "x.supp"]).is_err());
    }

    #[test]
    fn the_kinds_shown_default_to_the_failing_ones_with_check() {
        let kinds = |args: &[&str]| run(args).unwrap().report.render.kinds;
        assert_eq!(kinds(&[]), KindFilter::ALL);
        assert_eq!(kinds(&["--check"]), KindFilter::of(&DEFAULT_FAIL_ON));
        assert_eq!(kinds(&["--check", "--fail-on", "reachable"]), KindFilter::of(&[LeakKind::StillReachable]));
        assert_eq!(kinds(&["--check", "--kinds", "all"]), KindFilter::ALL);
    }

    #[test]
    fn memleaks_options_map_to_memtraces() {
        let sizes = |options: RecordOptions| (options.trace.probes.min_size, options.trace.probes.max_size);
        assert_eq!(record(&["-z", "16", "-Z", "4096"]).map(sizes).unwrap(), (16, 4096));
        assert_eq!(record(&["--min-size", "16", "--max-size", "4096"]).map(sizes).unwrap(), (16, 4096));
        assert_eq!(record(&["-T", "5"]).unwrap().report.render.top, Some(5));
        assert!(record(&["-a"]).is_ok());
        // Positional INTERVAL [COUNT], seconds as memleak counts them.
        let interval = |options: RecordOptions| (options.interval, options.count.map(NonZeroU32::get));
        assert_eq!(record(&["5", "3"]).map(interval).unwrap(), (Some(Duration::from_secs(5)), Some(3)));
        assert_eq!(
            record(&["--interval", "5s", "--count", "3"]).map(interval).unwrap(),
            (Some(Duration::from_secs(5)), Some(3))
        );
        assert_eq!(record(&["250ms"]).map(interval).unwrap(), (Some(Duration::from_millis(250)), None));
        assert!(record(&["5", "--interval", "2s"]).is_err());
        assert!(record(&["5", "3", "--count", "2"]).is_err());
        assert!(record(&["5", "--combined"]).is_err());
        // --older-than needs its unit: memleak's -o counts milliseconds.
        let error = run(&["--older-than", "500"]).unwrap_err().to_string();
        assert!(
            error.contains(
                "`500` needs a unit: write `500ms` for milliseconds (what memleak's -o counts) or `500s` for seconds"
            ),
            "{error}"
        );
        assert_eq!(run(&["--older-than", "500ms"]).unwrap().trace.older_than, Some(Duration::from_millis(500)));
    }

    #[test]
    fn help_lists_the_other_tools_spellings() {
        let mut command = Cli::command();
        let run_help = command.find_subcommand_mut("run").unwrap().render_long_help().to_string();
        for spelling in [
            "--show-leak-kinds",
            "--error-exitcode",
            "--gen-suppressions",
            "--leak-check",
            "-z, --min-size",
            "-Z, --max-size",
            "-T, --top",
            "-a, --show-addresses",
        ] {
            assert!(run_help.contains(spelling), "{spelling} not in run --help:\n{run_help}");
        }
        let record_help = command.find_subcommand_mut("record").unwrap().render_long_help().to_string();
        assert!(record_help.contains("[INTERVAL] [COUNT]"), "{record_help}");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10parsecs").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("").is_err());
        // Durations that would overflow a clock (they once panicked) are refused.
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
        for text in ["100000000000000000000", "10000000000000000000", "8761h", "525601m"] {
            assert_eq!(
                parse_duration(text),
                Err(format!("`{text}` is longer than a year (8760h), the longest duration memtrace takes")),
                "{text}"
            );
        }
    }
}
