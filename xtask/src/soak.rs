//! `cargo xtask soak` (also the last part of `cargo xtask bench`): an hour of a busy service
//! compressed into a few minutes, traced by `memtrace record --interval`, watching the agent's
//! resident memory. A service allocating 10,000 times a second and starting three processes a
//! second does, in an hour, 36 million malloc+free pairs and 10,800 forks; `bench/soak.c` does
//! that many, in 400 worker threads that come and go, over a bounded working set and eight call
//! stacks. Whatever the agent keeps per event, thread or process and never lets go shows as RSS
//! growing after the warm-up; whatever it cannot keep up with shows as lost events.
use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// An hour of 10,000 allocations a second.
const PAIRS: u64 = 36_000_000;
/// An hour of three new processes a second.
const FORKS: u64 = 10_800;
/// How often the agent's RSS is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// memtrace's interval reports during the soak.
const INTERVAL: &str = "2s";

/// What the soak measured, for the bench's table and summary.
pub struct Soak {
    pub seconds: f64,
    pub pairs: u64,
    pub threads: u64,
    pub forks: u64,
    pub intervals: u64,
    pub lost: u64,
    /// The agent's largest RSS in the second quarter of the soak (after the warm-up) and in the
    /// last quarter.
    pub rss_after_warmup: u64,
    pub rss_at_end: u64,
}

impl Soak {
    /// Whether the agent's memory stayed flat: its last quarter within 1 MiB of its second.
    pub fn flat(&self) -> bool {
        self.rss_at_end <= self.rss_after_warmup + (1 << 20)
    }

    pub fn summary(&self) -> Value {
        json!({
            "soak_seconds": self.seconds,
            "soak_pairs": self.pairs,
            "soak_threads": self.threads,
            "soak_forks": self.forks,
            "soak_intervals": self.intervals,
            "soak_lost_events": self.lost,
            "soak_rss_after_warmup_bytes": self.rss_after_warmup,
            "soak_rss_at_end_bytes": self.rss_at_end,
            "soak_rss_flat": self.flat(),
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "soak: {} pairs in {} threads and {} forks in {:.0} s, {} intervals: agent RSS {} KiB after warm-up, {} KiB at the end ({}), {} lost",
            self.pairs,
            self.threads,
            self.forks,
            self.seconds,
            self.intervals,
            self.rss_after_warmup / 1024,
            self.rss_at_end / 1024,
            if self.flat() { "flat" } else { "GREW" },
            self.lost
        )
    }
}

/// `cargo xtask soak`: set up, build memtrace for release, take the machine-wide test lock and
/// soak.
pub fn standalone(root: &Path) -> Result<()> {
    crate::setup::ensure()?;
    crate::cargo(root, &["build", "--release", "--package", "memtrace"])?;
    let _lock = crate::bench::machine_lock()?;
    let memtrace = root.join("target/release/memtrace");
    let soak = run(root, &memtrace)?;
    println!("{}", soak.describe());
    println!("{}", crate::serve_soak::run(root, &memtrace)?.describe());
    Ok(())
}

/// Builds the soak's target and runs it under `memtrace` (a release build). The caller holds
/// the machine-wide test lock.
pub fn run(root: &Path, memtrace: &Path) -> Result<Soak> {
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out).context("creating target/bench")?;
    let target = out.join("soak");
    crate::bench::compile(&root.join("bench/soak.c"), &target, "-O2")?;
    let report = out.join("soak.json");
    let intervals_log = out.join("soak-intervals.txt");

    let mut soak = Command::new(&target)
        .args([PAIRS.to_string(), FORKS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the soak's target")?;
    let soak_pid = soak.id();
    let mut agent = Command::new(memtrace)
        .args(["record", "--interval", INTERVAL, "--format", "json", "-o"])
        .arg(&report)
        .args(["-p", &soak_pid.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .context("starting memtrace record")?;
    let agent_pid = agent.id();

    // memtrace's stderr: the interval reports go to a file; the attach line starts the soak.
    let agent_stderr = agent.stderr.take().context("memtrace's stderr")?;
    let (attached_tx, attached_rx) = mpsc::channel();
    let mut log = std::fs::File::create(&intervals_log).context("creating soak-intervals.txt")?;
    let copier = std::thread::spawn(move || {
        for line in BufReader::new(agent_stderr).lines().map_while(Result::ok) {
            if line.starts_with("memtrace: tracing ") {
                let _ = attached_tx.send(());
            }
            let _ = writeln!(log, "{line}");
        }
    });
    if attached_rx.recv_timeout(Duration::from_secs(120)).is_err() {
        let _ = soak.kill();
        let _ = agent.wait();
        bail!("memtrace did not attach to the soak's target within 2 minutes (see {})", intervals_log.display());
    }
    let started = Instant::now();
    let mut soak_stdin = soak.stdin.take().context("the soak's stdin")?;
    soak_stdin.write_all(b"go\n").context("starting the soak")?;
    // The target prints its counts when done and then waits for its stdin to close, so that
    // memtrace ends the trace (on SIGTERM, as a service's supervisor would stop it), not the
    // target's exit.
    let soak_stdout = soak.stdout.take().context("the soak's stdout")?;
    let (printed_tx, printed_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let lines: Vec<String> = BufReader::new(soak_stdout).lines().map_while(Result::ok).take(3).collect();
        let _ = printed_tx.send(lines);
    });

    let mut samples: Vec<u64> = Vec::new();
    let printed = loop {
        if let Ok(lines) = printed_rx.try_recv() {
            break lines;
        }
        if let Some(status) = soak.try_wait()? {
            let _ = terminate(agent_pid);
            bail!("the soak's target ended early ({status})");
        }
        if let Some(rss) = resident_bytes(agent_pid) {
            samples.push(rss);
        }
        std::thread::sleep(SAMPLE_EVERY);
    };
    let seconds = started.elapsed().as_secs_f64();
    terminate(agent_pid).context("stopping memtrace with SIGTERM")?;
    let agent_status = agent.wait().context("waiting for memtrace")?;
    drop(soak_stdin);
    let _ = soak.wait();
    let _ = copier.join();
    if !agent_status.success() {
        bail!("memtrace record failed during the soak ({agent_status}; see {})", intervals_log.display());
    }
    if samples.len() < 8 {
        bail!("the soak ended after {seconds:.1} s, too soon to tell memory growth");
    }
    let quarter = samples.len() / 4;
    let max_of = |range: &[u64]| range.iter().copied().max().unwrap_or(0);
    let printed_count =
        |name: &str| printed.iter().find_map(|line| line.strip_prefix(name)?.trim().parse::<u64>().ok()).unwrap_or(0);
    let recorded: Value = serde_json::from_str(&std::fs::read_to_string(&report).context("reading the soak's report")?)
        .context("parsing the soak's report")?;
    Ok(Soak {
        seconds,
        pairs: printed_count("pairs "),
        threads: printed_count("threads "),
        forks: printed_count("forks "),
        intervals: std::fs::read_to_string(&intervals_log)?
            .lines()
            .filter(|line| line.starts_with("memtrace: interval "))
            .count() as u64,
        lost: recorded["summary"]["lost_events"].as_u64().context("no lost_events in the soak's report")?,
        rss_after_warmup: max_of(&samples[quarter..2 * quarter]),
        rss_at_end: max_of(&samples[3 * quarter..]),
    })
}

/// Sends SIGTERM: `memtrace record` then ends its trace and writes its report.
fn terminate(pid: u32) -> Result<()> {
    let pid = libc::pid_t::try_from(pid)?;
    // SAFETY: kill has no memory effects; the pid is our own child, not yet waited for.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// A process's resident set, from /proc/PID/status.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 =
        status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}
