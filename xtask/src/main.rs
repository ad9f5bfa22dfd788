//! `cargo xtask setup | demo | test | bench | soak | man | schema | fuzz | dist`: the project's own
//! tasks, each doing the set-up it needs.
mod bench;
mod dist;
mod fuzz;
mod lint;
mod serve_soak;
mod setup;
mod short_runs;
mod soak;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "memtrace's development tasks")]
struct Xtask {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need, if missing: LLVM 22 (Debian's llvm-22-dev),
    /// bpf-linker built against it, nightly Rust's rust-src, bpftool, a C and C++ compiler,
    /// and what the tests use: the jemalloc, tcmalloc and mimalloc libraries they trace targets
    /// with, valgrind, protoc and Python's protobuf and jsonschema, binutils and groff, libc's
    /// and libstdc++'s debug packages, and nginx.
    Setup,
    /// Set up, build, and run `memtrace run` on the bundled leaky example.
    Demo,
    /// Set up, build, and run every test: the format and clippy gates (see `lint`), a short run
    /// of every fuzz target (a few seconds each, see `fuzz`), unit tests and real eBPF
    /// integration tests. Arguments choose tests and skip the gates and the fuzzing.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up (and install bpftrace), then measure memtrace's overhead side by side with the
    /// probe floor and bpftrace, and soak (see `soak`); writes target/bench/summary.json.
    Bench,
    /// Set up, then run the soak alone: an hour-equivalent of allocation, thread and process
    /// churn (36 million malloc+free pairs, 400 threads, 10,800 forks) under `memtrace record
    /// --interval`, reporting whether the agent's RSS stayed flat after warm-up and what was lost.
    Soak,
    /// Set up, then write the man pages generated from memtrace's clap definitions into
    /// target/man: memtrace.1 and one page per subcommand (`man -l target/man/memtrace-run.1`).
    Man,
    /// Set up, then build what CI machines install, in target/dist: `memtrace`, self-contained
    /// (the C runtime linked in statically, the eBPF object embedded: it needs nothing but the
    /// kernel), and `memtrace_VERSION_amd64.deb` with it and its man pages.
    Dist,
    /// Set up, then write the JSON report's schema, derived from the Report types, to
    /// docs/report.schema.json (commit it: a test compares the two).
    Schema,
    /// Fuzz memtrace's parsers of untrusted input (saved reports and every renderer,
    /// suppressions, perf maps, /proc/PID/maps, ELF symbols and DWARF, the allocator functions'
    /// table, probe placement) with cargo-fuzz, installed if missing: each target's corpus is
    /// seeded from fuzz/seeds, fuzz/regressions and real files, then each runs for --seconds.
    /// A crashing or hanging input is written to fuzz/artifacts/TARGET/.
    Fuzz {
        /// One target (a file name in fuzz/fuzz_targets); every target when not given.
        target: Option<String>,
        /// How long each target runs.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
    },
}

fn main() {
    if let Err(error) = run(Xtask::parse().task) {
        eprintln!("xtask: error: {error:#}");
        std::process::exit(1);
    }
}

fn run(task: Task) -> Result<()> {
    let root = workspace_root();
    match task {
        Task::Setup => setup::ensure(),
        Task::Demo => {
            setup::ensure()?;
            cargo(&root, &["build", "--package", "memtrace"])?;
            let demo_dir = root.join("target/demo");
            std::fs::create_dir_all(&demo_dir).context("creating target/demo")?;
            let example = demo_dir.join("leaky");
            status(
                Command::new("cc")
                    .args(["-O0", "-g", "-fno-omit-frame-pointer", "-o"])
                    .arg(&example)
                    .arg(root.join("examples/leaky.c")),
                "compiling examples/leaky.c",
            )?;
            eprintln!("xtask: running `memtrace run -- target/demo/leaky`");
            status(Command::new(root.join("target/debug/memtrace")).arg("run").arg("--").arg(&example), "memtrace run")
        }
        Task::Bench => bench::run(&root),
        Task::Soak => soak::standalone(&root),
        Task::Dist => dist::run(&root),
        // The generators are examples of the memtrace package, beside the definitions they
        // read: xtask cannot depend on memtrace, whose build script needs bpf-linker.
        Task::Man => {
            setup::ensure()?;
            let dir = root.join("target/man");
            let dir = dir.to_str().context("the workspace path is not UTF-8")?;
            cargo(&root, &["run", "--quiet", "--package", "memtrace", "--example", "man", "--", dir])
        }
        Task::Schema => {
            setup::ensure()?;
            cargo(&root, &["run", "--quiet", "--package", "memtrace", "--example", "schema"])
        }
        Task::Test { args } => {
            setup::ensure()?;
            // The gates first: a format or lint failure is found in a minute, not after the
            // suite. Left out when running chosen tests.
            if args.is_empty() {
                lint::run(&root)?;
            }
            // Fuzzing first, so that cargo test's summary closes the output; a failure is
            // reported after the tests ran.
            let fuzzed = if args.is_empty() { fuzz::run(&root, None, fuzz::SHORT_RUN_SECONDS) } else { Ok(()) };
            let mut test = vec!["test", "--no-fail-fast", "--package", "memtrace", "--package", "memtrace-common"];
            test.extend(args.iter().map(String::as_str));
            let tested = cargo(&root, &test);
            fuzzed.context("the short fuzz run")?;
            tested
        }
        Task::Fuzz { target, seconds } => {
            setup::ensure_nightly()?;
            fuzz::run(&root, target.as_deref(), seconds)
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    status(Command::new(cargo).current_dir(root).args(args), &format!("cargo {}", args.join(" ")))
}

fn status(command: &mut Command, what: &str) -> Result<()> {
    let status = command.status().with_context(|| format!("cannot start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
