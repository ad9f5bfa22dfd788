//! `cargo xtask fuzz [TARGET] [--seconds N]`, and the short run of every target inside
//! `cargo xtask test`: memtrace's parsers of untrusted input (fuzz/fuzz_targets/) run under
//! libFuzzer through cargo-fuzz, with nightly Rust.
//!
//! Each target's corpus (fuzz/corpus/TARGET, not committed) is seeded first from the committed
//! seeds (fuzz/seeds/TARGET), the committed regressions (fuzz/regressions/TARGET) and real
//! inputs from this machine: ELF files (/bin/true, the libc xtask itself runs on, a program
//! compiled with debug info), xtask's own /proc/self/maps; a target with a dictionary of its
//! format's tokens (fuzz/dicts/TARGET.dict) is given it. The fuzz build sets
//! MEMTRACE_NO_EBPF=1 (see memtrace/build.rs): it needs no bpf-linker and builds no eBPF object.
//! It is cached in fuzz/target.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

/// cargo-fuzz, pinned so that every machine builds the targets the same way.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Seconds each target runs in `cargo xtask test`.
pub const SHORT_RUN_SECONDS: u64 = 8;

/// A single input running longer than this is a hang (libFuzzer's `-timeout`).
const HANG_SECONDS: u64 = 10;

/// Installs what fuzzing needs (nightly is already there: `setup` installs it), builds every
/// target, then runs `only` (else every target) for `seconds` each. Every target runs even
/// when one fails; the error names each that did.
pub fn run(root: &Path, only: Option<&str>, seconds: u64) -> Result<()> {
    ensure_cargo_fuzz()?;
    let fuzz_dir = root.join("fuzz");
    let all = targets(&fuzz_dir)?;
    let chosen: Vec<String> = match only {
        Some(name) if all.iter().any(|target| target == name) => vec![name.to_owned()],
        Some(name) => bail!("no fuzz target {name}; the targets are {}", all.join(", ")),
        None => all,
    };
    let started = Instant::now();
    cargo_fuzz(root, &["build", "--sanitizer", "none"], "building the fuzz targets")?;
    eprintln!("xtask: fuzz targets built in {:.0} s", started.elapsed().as_secs_f64());
    let mut failed = Vec::new();
    for target in &chosen {
        let corpus = seed(root, &fuzz_dir, target)?;
        if let Err(error) = run_target(root, &fuzz_dir, target, &corpus, seconds) {
            eprintln!("xtask: fuzz target {target} FAILED: {error:#}");
            failed.push(target.clone());
        }
    }
    eprintln!("xtask: fuzzing took {:.0} s in all", started.elapsed().as_secs_f64());
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {}. Minimize each input with `cargo +nightly fuzz tmin --sanitizer none TARGET \
             INPUT`, commit it under fuzz/regressions/TARGET/ with a test in memtrace/tests/fuzz_regressions.rs, and fix \
             the cause",
            failed.join(", ")
        );
    }
    Ok(())
}

/// The targets: the files of fuzz/fuzz_targets, sorted.
fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut names = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|extension| extension == "rs")
            && let Some(name) = path.file_stem().and_then(|stem| stem.to_str())
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn ensure_cargo_fuzz() -> Result<()> {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|output| {
            output.status.success() && String::from_utf8_lossy(&output.stdout).contains(CARGO_FUZZ_VERSION)
        });
    if installed {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (once)");
    crate::status(
        Command::new("cargo").args(["install", "cargo-fuzz", "--locked", "--version", CARGO_FUZZ_VERSION]),
        "cargo install cargo-fuzz",
    )
}

fn cargo_fuzz(root: &Path, args: &[&str], what: &str) -> Result<()> {
    crate::status(
        Command::new("cargo").arg("+nightly").arg("fuzz").args(args).current_dir(root).env("MEMTRACE_NO_EBPF", "1"),
        what,
    )
}

/// Fills fuzz/corpus/TARGET with the seeds, the regressions and the real inputs for it.
fn seed(root: &Path, fuzz_dir: &Path, target: &str) -> Result<PathBuf> {
    let corpus = fuzz_dir.join("corpus").join(target);
    fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    for (kind, dir) in [("seed", "seeds"), ("regression", "regressions")] {
        let dir = fuzz_dir.join(dir).join(target);
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry?.path();
            if let Some(name) = path.file_name().and_then(|name| name.to_str()) {
                copy(&path, &corpus.join(format!("{kind}-{name}")))?;
            }
        }
    }
    match target {
        "proc_maps" => {
            // Read, not copied: /proc files have no size.
            let maps = fs::read("/proc/self/maps").context("reading /proc/self/maps")?;
            write(&corpus.join("real-self.maps"), &maps)?;
        }
        "elf_symbols" | "elf_allocator" => {
            copy(Path::new("/bin/true"), &corpus.join("real-true"))?;
            if let Some(libc) = own_libc() {
                copy(&libc, &corpus.join("real-libc"))?;
            }
            // A small program with DWARF (line tables, inlined functions): the source files'
            // own example. Without a C compiler, the other seeds do.
            let program = corpus.join("real-leaky-debug");
            let compiled = Command::new("cc")
                .args(["-g", "-O2", "-o"])
                .arg(&program)
                .arg(root.join("examples/leaky.c"))
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if !compiled {
                eprintln!("xtask: no C compiler: {target} is not seeded with a program that has DWARF");
            }
        }
        _ => {}
    }
    Ok(corpus)
}

/// The libc this process runs on, as its maps name it.
fn own_libc() -> Option<PathBuf> {
    let maps = fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().filter_map(|line| line.split_whitespace().nth(5)).find_map(|path| {
        let name = Path::new(path).file_name()?.to_str()?;
        name.starts_with("libc.so").then(|| PathBuf::from(path))
    })
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The longest input a target is given (a larger committed input is cut to that in the corpus;
/// memtrace/tests/fuzz_regressions.rs runs it whole): 4 KiB of text, what libFuzzer would
/// choose, where short inputs reach every branch; 64 KiB for a saved report, whose real seeds
/// are larger; ELF files whole (libFuzzer's own limit, from the largest seed), their tables
/// being at their ends.
fn max_len(target: &str) -> Option<u32> {
    match target {
        "report" => Some(64 << 10),
        "elf_symbols" | "elf_allocator" => None,
        _ => Some(4 << 10),
    }
}

/// Runs one target for `seconds`; its libFuzzer output goes to fuzz/logs/TARGET.log, and a
/// crashing or hanging input to fuzz/artifacts/TARGET/.
fn run_target(root: &Path, fuzz_dir: &Path, target: &str, corpus: &Path, seconds: u64) -> Result<()> {
    let logs = fuzz_dir.join("logs");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let log_path = logs.join(format!("{target}.log"));
    let log = fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let corpus = corpus.to_str().context("the corpus path is not UTF-8")?;
    let started = Instant::now();
    eprintln!("xtask: fuzzing {target} for {seconds} s (log: {})", log_path.display());
    // A dictionary of the format's tokens, where the target has one (fuzz/dicts/TARGET.dict).
    let dict = fuzz_dir.join("dicts").join(format!("{target}.dict"));
    let status = Command::new("cargo")
        .args(["+nightly", "fuzz", "run", "--sanitizer", "none", target, corpus, "--"])
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={HANG_SECONDS}"))
        .args(["-rss_limit_mb=2048", "-print_final_stats=1"])
        .args(dict.is_file().then(|| format!("-dict={}", dict.display())))
        .args(max_len(target).map(|bytes| format!("-max_len={bytes}")))
        .current_dir(root)
        .env("MEMTRACE_NO_EBPF", "1")
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("cannot start cargo fuzz run")?;
    // The log quotes inputs: not always UTF-8.
    let text = String::from_utf8_lossy(&fs::read(&log_path).unwrap_or_default()).into_owned();
    let stat = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("stat::{name}:")))
            .map_or_else(|| "?".to_owned(), |value| value.trim().to_owned())
    };
    let elapsed = started.elapsed().as_secs_f64();
    if status.success() {
        eprintln!(
            "xtask: {target}: {} inputs run in {elapsed:.0} s, corpus {} files, no crash or hang",
            stat("number_of_executed_units"),
            fs::read_dir(corpus).map(Iterator::count).unwrap_or(0)
        );
        return Ok(());
    }
    // What libFuzzer and the panic said, and where the input is.
    let interesting: Vec<&str> = text
        .lines()
        .filter(|line| {
            line.contains("panicked at")
                || line.starts_with("==")
                || line.contains("ERROR: libFuzzer")
                || line.contains("Test unit written to")
                || line.starts_with("attempt to")
        })
        .collect();
    let message = text.lines().skip_while(|line| !line.contains("panicked at")).nth(1).unwrap_or_default();
    bail!(
        "{status} after {elapsed:.0} s:\n  {}\n  {message}\n  full log: {}",
        interesting.join("\n  "),
        log_path.display()
    )
}
