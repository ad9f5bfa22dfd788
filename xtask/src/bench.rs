//! `cargo xtask bench`: memtrace's overhead measured side by side in one run, on a bundled
//! malloc-heavy program: untraced, the probe floor (the same probes running empty programs),
//! memtrace, and bpftrace running a memleak-equivalent script. Prints a table and writes
//! `target/bench/summary.json`.
use std::{
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Runs of each row; the median is reported.
const RUNS: usize = 5;
/// malloc+free pairs per thread per run.
const PAIRS: u64 = 500_000;
/// Outstanding blocks for the agent-memory measurement.
const HELD: u64 = 1_000_000;

pub fn run(root: &Path) -> Result<()> {
    crate::setup::ensure()?;
    crate::setup::ensure_bpftrace()?;
    crate::cargo(root, &["build", "--release", "--package", "memtrace"])?;
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out).context("creating target/bench")?;
    let bench = out.join("alloc_bench");
    crate::status(
        Command::new("cc")
            .args(["-O2", "-g", "-fno-omit-frame-pointer", "-pthread", "-o"])
            .arg(&bench)
            .arg(root.join("bench/alloc_bench.c")),
        "compiling bench/alloc_bench.c",
    )?;
    let memtrace = root.join("target/release/memtrace");
    let report = out.join("report.json");
    let libc = libc_path()?;

    let mut rows = Vec::new();
    let mut summary = serde_json::Map::new();
    for threads in [1u32, 2] {
        let args = ["churn".to_owned(), threads.to_string(), PAIRS.to_string()];
        let untraced = median(RUNS, || churn(Command::new(&bench).args(&args)))?;
        let floor = median(RUNS, || {
            churn(memtrace_run(&memtrace, &report).arg("--empty-probes").arg("--").arg(&bench).args(&args))
        })?;
        let mut lost = 0;
        let mut events_per_second: f64 = 0.0;
        let traced = median(RUNS, || {
            let ns = churn(memtrace_run(&memtrace, &report).arg("--").arg(&bench).args(&args))?;
            let recorded = read_json(&report)?;
            lost += recorded["summary"]["lost_events"].as_u64().unwrap_or(0);
            let events = recorded["summary"]["total_allocations"].as_u64().unwrap_or(0)
                + recorded["summary"]["total_frees"].as_u64().unwrap_or(0);
            let seconds = recorded["duration_seconds"].as_f64().unwrap_or(f64::INFINITY);
            events_per_second = events_per_second.max(events as f64 / seconds);
            Ok(ns)
        })?;
        let command = format!("{} {}", bench.display(), args.join(" "));
        let bpftrace = median(RUNS, || {
            churn(Command::new("bpftrace").arg("-e").arg(bpftrace_script(&libc)).arg("-c").arg(&command))
        })?;
        rows.push((threads, untraced, floor, traced, bpftrace, lost));
        if threads == 1 {
            summary.insert("untraced_ns".into(), json!(untraced));
            summary.insert("floor_ns".into(), json!(floor));
            summary.insert("memtrace_ns".into(), json!(traced));
            summary.insert("memtrace_combined_ns".into(), Value::Null);
            summary.insert("bpftrace_ns".into(), json!(bpftrace));
            summary.insert("events_per_second_1_thread".into(), json!(events_per_second.round()));
        }
        summary.insert(format!("lost_events_{threads}_threads"), json!(lost));
    }
    let total_lost: u64 = rows.iter().map(|row| row.5).sum();
    summary.insert("lost_events".into(), json!(total_lost));

    // The agent's memory for outstanding allocations: peak RSS holding HELD blocks, less its
    // peak RSS holding none.
    let base = peak_rss(memtrace_run(&memtrace, &report).arg("--").arg(&bench).args(["hold", "0"]))?;
    let held = peak_rss(memtrace_run(&memtrace, &report).arg("--").arg(&bench).args(["hold", &HELD.to_string()]))?;
    let outstanding = read_json(&report)?["summary"]["outstanding_allocations"].as_u64().unwrap_or(0);
    summary.insert("agent_peak_rss_bytes".into(), json!(held));
    summary.insert("agent_base_rss_bytes".into(), json!(base));
    summary.insert("outstanding_allocations".into(), json!(outstanding));
    summary.insert("agent_bytes_per_outstanding_allocation".into(), json!((held.saturating_sub(base)) as f64 / outstanding.max(1) as f64));

    println!("ns per malloc+free pair, median of {RUNS} runs of {PAIRS} pairs per thread");
    println!("{:>7} {:>9} {:>9} {:>9} {:>9} {:>12} {:>13} {:>6}", "threads", "untraced", "floor", "memtrace", "bpftrace", "memtrace/fl", "bpftrace/mt", "lost");
    for (threads, untraced, floor, traced, bpftrace, lost) in &rows {
        println!(
            "{threads:>7} {untraced:>9.1} {floor:>9.1} {traced:>9.1} {bpftrace:>9.1} {:>12.2} {:>13.2} {lost:>6}",
            traced / floor,
            (bpftrace - untraced) / (traced - untraced),
        );
    }
    println!(
        "agent memory: {} bytes peak RSS holding {outstanding} outstanding allocations, {} bytes holding none: {:.1} bytes each",
        held,
        base,
        (held.saturating_sub(base)) as f64 / outstanding.max(1) as f64
    );
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(summary))?).context("writing summary.json")?;
    println!("wrote {}", path.display());
    Ok(())
}

fn memtrace_run(memtrace: &Path, report: &Path) -> Command {
    let mut command = Command::new(memtrace);
    command.args(["run", "--format", "json", "-o"]).arg(report);
    command
}

/// Runs a churn and returns its "ns_per_pair".
fn churn(command: &mut Command) -> Result<f64> {
    let output = command.stderr(Stdio::inherit()).output().context("running the benchmark")?;
    if !output.status.success() {
        bail!("{command:?} failed ({})", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("ns_per_pair ")?.trim().parse().ok())
        .with_context(|| format!("no ns_per_pair in the output of {command:?}"))
}

fn median(runs: usize, mut measure: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut values = (0..runs).map(|_| measure()).collect::<Result<Vec<f64>>>()?;
    values.sort_by(f64::total_cmp);
    Ok(values[runs / 2])
}

/// Peak resident memory of the command's own process (memtrace), in bytes.
fn peak_rss(command: &mut Command) -> Result<u64> {
    let child = command.stdout(Stdio::null()).spawn().context("running memtrace")?;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with valid out-pointers.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    if pid < 0 || std::process::ExitStatus::from_raw(status).code() != Some(0) {
        bail!("memtrace failed while measuring its memory");
    }
    Ok(usage.ru_maxrss as u64 * 1024)
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).context("parsing memtrace's report")
}

fn libc_path() -> Result<PathBuf> {
    ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .context("libc.so.6 not found")
}

/// What BCC's memleak does, in bpftrace: sizes at entry, block and user stack at return, the
/// block forgotten at free; only for the benchmark's process.
fn bpftrace_script(libc: &Path) -> String {
    let libc = libc.display();
    format!(
        r#"
uprobe:{libc}:malloc /pid == cpid/ {{ @size[tid] = arg0; }}
uprobe:{libc}:calloc /pid == cpid/ {{ @size[tid] = arg0 * arg1; }}
uprobe:{libc}:realloc /pid == cpid/ {{ delete(@held[arg0]); delete(@stacks[arg0]); @size[tid] = arg1; }}
uretprobe:{libc}:malloc,uretprobe:{libc}:calloc,uretprobe:{libc}:realloc /pid == cpid && @size[tid]/ {{
    @held[retval] = @size[tid]; @stacks[retval] = ustack; delete(@size[tid]);
}}
uprobe:{libc}:free /pid == cpid/ {{ delete(@held[arg0]); delete(@stacks[arg0]); }}
END {{ clear(@size); clear(@held); clear(@stacks); }}
"#
    )
}
