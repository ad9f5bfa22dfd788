//! `cargo xtask setup | demo | test | bench | man | schema`: the project's own tasks, each doing
//! the set-up it needs.
mod bench;
mod setup;

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
    /// Set up, build, and run every test: unit tests and real eBPF integration tests.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up (and install bpftrace), then measure memtrace's overhead side by side with the
    /// probe floor and bpftrace; writes target/bench/summary.json.
    Bench,
    /// Set up, then write the man pages generated from memtrace's clap definitions into
    /// target/man: memtrace.1 and one page per subcommand (`man -l target/man/memtrace-run.1`).
    Man,
    /// Set up, then write the JSON report's schema, derived from the Report types, to
    /// docs/report.schema.json (commit it: a test compares the two).
    Schema,
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
            status(
                Command::new(root.join("target/debug/memtrace")).arg("run").arg("--").arg(&example),
                "memtrace run",
            )
        }
        Task::Bench => bench::run(&root),
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
            let mut test = vec!["test", "--no-fail-fast", "--package", "memtrace", "--package", "memtrace-common"];
            test.extend(args.iter().map(String::as_str));
            cargo(&root, &test)
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
