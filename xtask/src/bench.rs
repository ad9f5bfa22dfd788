//! `cargo xtask bench`: memtrace's overhead measured side by side in one run, on a bundled
//! malloc-heavy program: untraced, the probe floor (the same probes running empty programs),
//! memtrace, and bpftrace running a memleak-equivalent script; and the stack walk's cost, on
//! bench/deep_stack.c allocating 8 calls deep: built without frame pointers and walked by unwind
//! tables, built with them and walked by frame pointer, and both untraced. Prints a table and
//! writes `target/bench/summary.json`.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Runs of each row; the median is reported.
const RUNS: usize = 9;
/// malloc+free pairs per thread per run.
const PAIRS: u64 = 500_000;
/// Outstanding blocks for the agent-memory measurement.
const HELD: u64 = 1_000_000;
/// Mean bytes between samples for the sampling row: jemalloc's default (lg_prof_sample 19).
const SAMPLE_BYTES: &str = "524288";
/// The stack-walking columns: bench/deep_stack.c makes its allocations this many calls below
/// its first frame of `down` (8 frames of it, DEPTH + 5 frames in all), and this many pairs.
const DEEP_DEPTH: u32 = 7;
const DEEP_PAIRS: u64 = 200_000;
/// A second depth for the kernel's cost per frame: (ns at the deeper one - ns at DEEP_DEPTH) /
/// the difference.
const DEEPER_DEPTH: u32 = 47;

/// The ways of running the benchmark program, a column each, in the order of `WAYS`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Untraced,
    Floor,
    Memtrace,
    Combined,
    Sampled,
    Bpftrace,
}

const WAYS: [Way; 6] = [Way::Untraced, Way::Floor, Way::Memtrace, Way::Combined, Way::Sampled, Way::Bpftrace];

/// One row per thread count: ns per pair for each way of running.
struct Row {
    threads: u32,
    untraced: f64,
    floor: f64,
    memtrace: f64,
    combined: f64,
    sampled: f64,
    bpftrace: f64,
    lost: u64,
}

pub fn run(root: &Path) -> Result<()> {
    crate::setup::ensure()?;
    crate::setup::ensure_bpftrace()?;
    crate::cargo(root, &["build", "--release", "--package", "memtrace"])?;
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out).context("creating target/bench")?;
    let bench = out.join("alloc_bench");
    compile(&root.join("bench/alloc_bench.c"), &bench, "-O2")?;
    let stacks10k = out.join("stacks10k");
    compile(&root.join("bench/stacks10k.c"), &stacks10k, "-O0")?;
    // The same program shape twice: without frame pointers (walked by unwind tables) and with
    // them (walked by frame pointer).
    let deep_tables = out.join("deep_stack_no_frame_pointers");
    compile_with(&root.join("bench/deep_stack.c"), &deep_tables, &["-O2", "-g", "-fomit-frame-pointer"])?;
    let deep_fp = out.join("deep_stack_frame_pointers");
    compile_with(&root.join("bench/deep_stack.c"), &deep_fp, &["-O2", "-g", "-fno-omit-frame-pointer"])?;
    let memtrace = root.join("target/release/memtrace");
    // The same machine-wide lock the integration tests take: they check that no memtrace
    // program is loaded after each of theirs, and a benchmark running beside them would also
    // skew its own numbers.
    let _lock = machine_lock()?;
    let report = out.join("report.json");
    let libc = libc_path()?;

    let mut rows = Vec::new();
    let mut summary = serde_json::Map::new();
    for threads in [1u32, 2] {
        let args = ["churn".to_owned(), threads.to_string(), PAIRS.to_string()];
        let command = format!("{} {}", bench.display(), args.join(" "));
        let mut lost = 0;
        let mut events_per_second: f64 = 0.0;
        // One way of running, once: ns per pair (and what memtrace lost, and its event rate).
        let mut measure = |way: Way| -> Result<f64> {
            let traced_with = |options: &[&str]| {
                let mut command = memtrace_run(&memtrace, &report);
                command.args(options).arg("--").arg(&bench).args(&args);
                command
            };
            let ns = match way {
                Way::Untraced => return churn(Command::new(&bench).args(&args)),
                Way::Floor => return churn(&mut traced_with(&["--empty-probes"])),
                Way::Bpftrace => {
                    return churn(
                        Command::new("bpftrace").arg("-e").arg(bpftrace_script(&libc)).arg("-c").arg(&command),
                    );
                }
                Way::Memtrace => churn(&mut traced_with(&[]))?,
                Way::Combined => churn(&mut traced_with(&["--combined"]))?,
                Way::Sampled => churn(&mut traced_with(&["--sample-bytes", SAMPLE_BYTES]))?,
            };
            let recorded = read_json(&report)?;
            lost += recorded["summary"]["lost_events"].as_u64().unwrap_or(0);
            if way == Way::Memtrace {
                let events = recorded["summary"]["total_allocations"].as_u64().unwrap_or(0)
                    + recorded["summary"]["total_frees"].as_u64().unwrap_or(0);
                let seconds = recorded["duration_seconds"].as_f64().unwrap_or(f64::INFINITY);
                events_per_second = events_per_second.max(events as f64 / seconds);
            }
            Ok(ns)
        };
        // In rounds: each round runs every way once, back to back, so that the machine's load
        // changing between rounds (it is shared) moves every column alike rather than one.
        // Every other round runs the columns in reverse, so that no column always follows the
        // same one (and whatever that one leaves behind, such as a large map still being
        // freed), and a drift within a round favours none.
        let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(RUNS); WAYS.len()];
        for round in 0..RUNS {
            let forward = round % 2 == 0;
            for step in 0..WAYS.len() {
                let column = if forward { step } else { WAYS.len() - 1 - step };
                samples[column].push(measure(WAYS[column])?);
            }
        }
        let [untraced, floor, traced, combined, sampled, bpftrace] =
            [0, 1, 2, 3, 4, 5].map(|column| median(&mut samples[column]));
        rows.push(Row { threads, untraced, floor, memtrace: traced, combined, sampled, bpftrace, lost });
        if threads == 1 {
            summary.insert("untraced_ns".into(), json!(untraced));
            summary.insert("floor_ns".into(), json!(floor));
            summary.insert("memtrace_ns".into(), json!(traced));
            summary.insert("memtrace_combined_ns".into(), json!(combined));
            summary.insert("memtrace_sampled_ns".into(), json!(sampled));
            summary.insert("bpftrace_ns".into(), json!(bpftrace));
            summary.insert("events_per_second_1_thread".into(), json!(events_per_second.round()));
        }
        summary.insert(format!("lost_events_{threads}_threads"), json!(lost));
    }
    let deep = deep_stacks(&memtrace, &report, &deep_tables, &deep_fp)?;
    summary.insert("deep_untraced_ns".into(), json!(deep.untraced));
    summary.insert("deep_untraced_frame_pointers_ns".into(), json!(deep.untraced_fp));
    summary.insert("deep_fp_ns".into(), json!(deep.fp));
    summary.insert("deep_tables_ns".into(), json!(deep.tables));
    summary.insert("deep_kernel_ns_per_frame_tables".into(), json!(deep.kernel_per_frame_tables));
    summary.insert("deep_kernel_ns_per_frame_fp".into(), json!(deep.kernel_per_frame_fp));
    summary.insert("deep_alloc_exit_ns_tables".into(), json!(deep.alloc_exit_tables));
    summary.insert("deep_alloc_exit_ns_fp".into(), json!(deep.alloc_exit_fp));
    summary.insert("deep_lost_events".into(), json!(deep.lost));
    summary.insert("deep_unwind_table_bytes".into(), json!(deep.table_bytes));
    summary.insert(
        "deep_unwind_modules".into(),
        Value::Array(deep.modules.iter().map(|(path, rows)| json!({"path": path, "rows": rows})).collect()),
    );
    let total_lost: u64 = rows.iter().map(|row| row.lost).sum::<u64>() + deep.lost;

    // The kernel-side programs' own time per pair, from the kernel's BPF run-time stats
    // (`--program-stats`): far less noisy than wall-clock rows on a shared machine. The uprobe
    // traps themselves are not in it (the floor's wall-clock row has them).
    // Three rounds of the four, the median of each (in rounds, as above).
    const LABELS: [(&str, &[&str]); 4] = [
        ("floor", &["--empty-probes"]),
        ("memtrace", &[]),
        ("combined", &["--combined"]),
        ("sampled", &["--sample-bytes", SAMPLE_BYTES]),
    ];
    let mut kernel_samples: Vec<Vec<f64>> = vec![Vec::new(); LABELS.len()];
    for _ in 0..3 {
        for (column, (_, options)) in LABELS.iter().enumerate() {
            let args = ["churn", "1", &PAIRS.to_string()].map(str::to_owned);
            churn(
                memtrace_run(&memtrace, &report)
                    .arg("--program-stats")
                    .args(*options)
                    .arg("--")
                    .arg(&bench)
                    .args(&args),
            )?;
            let recorded = read_json(&report)?;
            let total: f64 = recorded["kernel_programs"]
                .as_array()
                .map(|programs| {
                    programs
                        .iter()
                        .map(|program| {
                            program["runs"].as_f64().unwrap_or(0.0) * program["ns_per_run"].as_f64().unwrap_or(0.0)
                        })
                        .sum()
                })
                .unwrap_or(0.0);
            kernel_samples[column].push(total / PAIRS as f64);
        }
    }
    let mut program_ns = Vec::new();
    for ((label, _), samples) in LABELS.iter().zip(&mut kernel_samples) {
        let per_pair = median(samples);
        summary.insert(format!("kernel_program_ns_per_pair_{label}"), json!(per_pair));
        program_ns.push((*label, per_pair));
    }
    summary.insert("lost_events".into(), json!(total_lost));

    // The agent's memory per outstanding allocation beyond a fixed base: peak RSS holding
    // 2 x HELD blocks less holding HELD, per block. (Against holding none, the base would miss
    // the ring buffer's pages, which a million events have all touched.) Without the exit scan
    // (--no-leak-kinds): what tracing holds; and with it: the scan's peak.
    // memtrace reports its own usage (getrusage of its process alone: the traced program's time
    // in the probes is the program's, and counted above).
    let agent_usage = |blocks: u64, options: &[&str]| -> Result<(u64, f64, u64)> {
        let status = memtrace_run(&memtrace, &report)
            .args(options)
            .arg("--")
            .arg(&bench)
            .args(["hold", &blocks.to_string()])
            .status()?;
        if !status.success() {
            bail!("memtrace failed while measuring its memory ({status})");
        }
        let recorded = read_json(&report)?;
        Ok((
            recorded["agent"]["peak_rss_bytes"].as_u64().unwrap_or(0),
            recorded["agent"]["cpu_seconds"].as_f64().unwrap_or(0.0),
            recorded["summary"]["outstanding_allocations"].as_u64().unwrap_or(0),
        ))
    };
    let (base, base_cpu_seconds, base_outstanding) = agent_usage(HELD, &["--no-leak-kinds"])?;
    let (held, held_cpu_seconds, outstanding) = agent_usage(2 * HELD, &["--no-leak-kinds"])?;
    let (scan_base, _, _) = agent_usage(HELD, &[])?;
    let (scan_held, _, _) = agent_usage(2 * HELD, &[])?;
    let extra = outstanding.saturating_sub(base_outstanding).max(1) as f64;
    let per_allocation = held.saturating_sub(base) as f64 / extra;
    let per_allocation_with_scan = scan_held.saturating_sub(scan_base) as f64 / extra;
    let cpu_seconds = held_cpu_seconds - base_cpu_seconds;
    summary.insert("agent_peak_rss_bytes".into(), json!(held));
    summary.insert("agent_base_rss_bytes".into(), json!(base));
    summary.insert("outstanding_allocations".into(), json!(outstanding));
    summary.insert("agent_bytes_per_outstanding_allocation".into(), json!(per_allocation));
    summary.insert("agent_bytes_per_outstanding_allocation_with_exit_scan".into(), json!(per_allocation_with_scan));
    summary.insert("agent_cpu_seconds_per_million_allocations".into(), json!(cpu_seconds * 1e6 / extra));

    // Symbolizing and rendering 10,000 distinct stacks: the same trace reported in full and
    // with --top 1, side by side; the difference is the naming and writing of 9,999 stacks.
    let seconds_for = |top: &[&str]| {
        median_of(RUNS, || {
            let started = std::time::Instant::now();
            let status = memtrace_run(&memtrace, &report).args(top).arg("--").arg(&stacks10k).status()?;
            if !status.success() {
                bail!("memtrace failed on stacks10k ({status})");
            }
            Ok(started.elapsed().as_secs_f64())
        })
    };
    let all_stacks = seconds_for(&[])?;
    let one_stack = seconds_for(&["--top", "1"])?;
    let stacks_reported = read_json(&report)?["summary"]["stacks_total"].as_u64().unwrap_or(0);
    summary.insert("stacks_symbolized".into(), json!(stacks_reported));
    summary.insert("seconds_to_symbolize_and_render_stacks".into(), json!(all_stacks - one_stack));

    println!("ns per malloc+free pair, median of {RUNS} runs of {PAIRS} pairs per thread");
    println!(
        "{:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>6}",
        "threads",
        "untraced",
        "floor",
        "memtrace",
        "combined",
        "sampled",
        "bpftrace",
        "mt/fl",
        "comb/fl",
        "samp/fl",
        "bt/mt",
        "lost"
    );
    for row in &rows {
        println!(
            "{:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6}",
            row.threads,
            row.untraced,
            row.floor,
            row.memtrace,
            row.combined,
            row.sampled,
            row.bpftrace,
            row.memtrace / row.floor,
            row.combined / row.floor,
            row.sampled / row.floor,
            (row.bpftrace - row.untraced) / (row.memtrace - row.untraced),
            row.lost
        );
    }
    let described: Vec<String> = program_ns.iter().map(|(label, ns)| format!("{label} {ns:.0}")).collect();
    println!("kernel-side program time per pair, 1 thread (ns): {}", described.join(", "));
    println!(
        "agent memory: {held} bytes peak RSS holding {outstanding} outstanding allocations, {base} bytes holding {base_outstanding}: {per_allocation:.1} bytes each ({per_allocation_with_scan:.1} at the peak of the exit scan)"
    );
    println!("agent CPU: {:.2} s per million outstanding allocations", cpu_seconds * 1e6 / extra);
    println!("symbolizing and rendering {stacks_reported} distinct stacks: {:.2} s", all_stacks - one_stack);
    println!(
        "stack walking, ns per malloc+free pair, 1 thread, median of {RUNS} runs of {DEEP_PAIRS} pairs, {} frames per stack:",
        DEEP_DEPTH + 5
    );
    println!(
        "  untraced {:.1} (built with frame pointers {:.1}); --unwind fp (frame pointers) {:.1}; --unwind tables (none) {:.1}; lost {}",
        deep.untraced, deep.untraced_fp, deep.fp, deep.tables, deep.lost
    );
    let fp_cost = deep.fp - deep.untraced_fp;
    let tables_cost = deep.tables - deep.untraced;
    println!(
        "  cost over untraced: tables {tables_cost:.1}, frame pointers {fp_cost:.1}: {:.2}x (target 1.5x or less)",
        tables_cost / fp_cost
    );
    println!(
        "  kernel (alloc_exit, --program-stats): {:.0} ns per stack by tables, {:.0} by frame pointer; {:.1} ns per frame by tables, {:.1} by frame pointer",
        deep.alloc_exit_tables, deep.alloc_exit_fp, deep.kernel_per_frame_tables, deep.kernel_per_frame_fp
    );
    let described: Vec<String> = deep.modules.iter().map(|(path, rows)| format!("{path} {rows} rows")).collect();
    println!("  unwind tables: {} bytes of kernel memory ({})", deep.table_bytes, described.join(", "));

    let short = crate::short_runs::measure(&memtrace, &report)?;
    println!("{}", short.describe());
    summary.extend(short.summary());

    // Last, the soak: minutes of a service's life, for the agent's memory and losses over time.
    let soak = crate::soak::run(root, &memtrace)?;
    println!("{}", soak.describe());
    if let Value::Object(fields) = soak.summary() {
        summary.extend(fields);
    }
    let serve_soak = crate::serve_soak::run(root, &memtrace)?;
    println!("{}", serve_soak.describe());
    if let Value::Object(fields) = serve_soak.summary() {
        summary.extend(fields);
    }
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(summary))?).context("writing summary.json")?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The machine-wide lock the integration tests take, held until dropped.
pub fn machine_lock() -> Result<std::fs::File> {
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/memtrace-tests.lock")
        .context("opening /tmp/memtrace-tests.lock")?;
    lock.lock().context("waiting for /tmp/memtrace-tests.lock")?;
    Ok(lock)
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

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn median_of(runs: usize, mut measure: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut values = (0..runs).map(|_| measure()).collect::<Result<Vec<f64>>>()?;
    Ok(median(&mut values))
}

pub fn compile(source: &Path, binary: &Path, optimization: &str) -> Result<()> {
    crate::status(
        Command::new("cc")
            .args([optimization, "-g", "-fno-omit-frame-pointer", "-pthread", "-o"])
            .arg(binary)
            .arg(source),
        &format!("compiling {}", source.display()),
    )
}

fn compile_with(source: &Path, binary: &Path, flags: &[&str]) -> Result<()> {
    crate::status(
        Command::new("cc").args(flags).arg("-o").arg(binary).arg(source),
        &format!("compiling {}", source.display()),
    )
}

/// The stack-walking columns.
struct Deep {
    /// ns per pair: the build without frame pointers untraced, and with them untraced; the
    /// latter traced with --unwind fp, the former with --unwind tables.
    untraced: f64,
    untraced_fp: f64,
    fp: f64,
    tables: f64,
    /// alloc_exit's kernel time per run (one stack walk each) at DEEP_DEPTH, and per frame.
    alloc_exit_tables: f64,
    alloc_exit_fp: f64,
    kernel_per_frame_tables: f64,
    kernel_per_frame_fp: f64,
    lost: u64,
    /// The unwind tables' kernel memory, and each module's rows.
    table_bytes: u64,
    modules: Vec<(String, u64)>,
}

fn deep_stacks(memtrace: &Path, report: &Path, no_frame_pointers: &Path, frame_pointers: &Path) -> Result<Deep> {
    let pairs = DEEP_PAIRS.to_string();
    let traced = |binary: &Path, method: &str, depth: u32, stats: bool| {
        let mut command = memtrace_run(memtrace, report);
        command.args(["--unwind", method]);
        if stats {
            command.arg("--program-stats");
        }
        command.arg("--").arg(binary).args([depth.to_string(), pairs.clone()]);
        command
    };
    // In rounds, every other one reversed, as the rows above.
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); 4];
    let mut lost = 0;
    let mut table_bytes = 0;
    let mut modules = Vec::new();
    for round in 0..RUNS {
        for step in 0..4 {
            let column = if round % 2 == 0 { step } else { 3 - step };
            let depth = DEEP_DEPTH.to_string();
            let ns = match column {
                0 => churn(Command::new(no_frame_pointers).args([&depth, &pairs]))?,
                1 => churn(Command::new(frame_pointers).args([&depth, &pairs]))?,
                2 => churn(&mut traced(frame_pointers, "fp", DEEP_DEPTH, false))?,
                _ => churn(&mut traced(no_frame_pointers, "tables", DEEP_DEPTH, false))?,
            };
            if column >= 2 {
                let recorded = read_json(report)?;
                lost += recorded["summary"]["lost_events"].as_u64().unwrap_or(0);
                if column == 3 {
                    table_bytes = recorded["unwind"]["table_bytes"].as_u64().unwrap_or(0);
                    modules = recorded["unwind"]["modules"]
                        .as_array()
                        .map(|modules| {
                            modules
                                .iter()
                                .map(|module| {
                                    (
                                        module["path"].as_str().unwrap_or("").to_owned(),
                                        module["rows"].as_u64().unwrap_or(0),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                }
            }
            samples[column].push(ns);
        }
    }
    let [untraced, untraced_fp, fp, tables] = [0, 1, 2, 3].map(|column| median(&mut samples[column]));
    // alloc_exit's ns per run at two depths, 3 rounds of the four, the median of each.
    let mut kernel: Vec<Vec<f64>> = vec![Vec::new(); 4];
    for _ in 0..3 {
        for (column, (binary, method, depth)) in [
            (frame_pointers, "fp", DEEP_DEPTH),
            (frame_pointers, "fp", DEEPER_DEPTH),
            (no_frame_pointers, "tables", DEEP_DEPTH),
            (no_frame_pointers, "tables", DEEPER_DEPTH),
        ]
        .into_iter()
        .enumerate()
        {
            churn(&mut traced(binary, method, depth, true))?;
            let recorded = read_json(report)?;
            let alloc_exit = recorded["kernel_programs"]
                .as_array()
                .and_then(|programs| programs.iter().find(|program| program["program"] == "alloc_exit"))
                .and_then(|program| program["ns_per_run"].as_f64())
                .context("no alloc_exit in kernel_programs")?;
            kernel[column].push(alloc_exit);
        }
    }
    let [fp_shallow, fp_deep, tables_shallow, tables_deep] = [0, 1, 2, 3].map(|column| median(&mut kernel[column]));
    let frames = f64::from(DEEPER_DEPTH - DEEP_DEPTH);
    Ok(Deep {
        untraced,
        untraced_fp,
        fp,
        tables,
        alloc_exit_tables: tables_shallow,
        alloc_exit_fp: fp_shallow,
        kernel_per_frame_tables: (tables_deep - tables_shallow) / frames,
        kernel_per_frame_fp: (fp_deep - fp_shallow) / frames,
        lost,
        table_bytes,
        modules,
    })
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
