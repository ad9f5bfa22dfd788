//! The serve soak (part of `cargo xtask bench`): `memtrace serve --exe` following a hundred
//! processes that come and go, each leaking from 10,000 distinct stacks (`bench/stacks10k.c
//! --wait`): a million stacks seen, as an agent serving a busy host for hours would. After each
//! process exits, /metrics is scraped (which lets memtrace forget it) and the agent's RSS read.
//! Whatever it keeps per process or per stack and never lets go shows as RSS growing after the
//! warm-up.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Processes started, one after another.
const PROCESSES: usize = 100;
/// Distinct stacks each one leaks from.
const STACKS_PER_PROCESS: u64 = 10_000;

pub struct ServeSoak {
    pub seconds: f64,
    pub processes: usize,
    pub stacks_seen: u64,
    pub rss_after_warmup: u64,
    pub rss_at_end: u64,
    pub lost: u64,
}

impl ServeSoak {
    pub fn flat(&self) -> bool {
        self.rss_at_end <= self.rss_after_warmup + (1 << 20)
    }

    pub fn describe(&self) -> String {
        format!(
            "serve soak: {} processes, {} stacks seen in {:.0} s: agent RSS {} KiB after warm-up, {} KiB at the end ({}), {} lost",
            self.processes,
            self.stacks_seen,
            self.seconds,
            self.rss_after_warmup / 1024,
            self.rss_at_end / 1024,
            if self.flat() { "flat" } else { "GREW" },
            self.lost
        )
    }

    pub fn summary(&self) -> Value {
        json!({
            "serve_soak_seconds": self.seconds,
            "serve_soak_processes": self.processes,
            "serve_soak_stacks_seen": self.stacks_seen,
            "serve_soak_rss_after_warmup_bytes": self.rss_after_warmup,
            "serve_soak_rss_at_end_bytes": self.rss_at_end,
            "serve_soak_rss_flat": self.flat(),
            "serve_soak_lost_events": self.lost,
        })
    }
}

/// Runs the soak with `memtrace` (a release build); the caller holds the machine-wide lock.
pub fn run(root: &Path, memtrace: &Path) -> Result<ServeSoak> {
    let out = root.join("target/bench");
    let target = out.join("serve_soak_stacks10k");
    crate::bench::compile(&root.join("bench/stacks10k.c"), &target, "-O0")?;
    let mut agent = Command::new(memtrace)
        .args(["serve", "--listen", "127.0.0.1:0", "--exact", "--exe", "*/serve_soak_stacks10k"])
        .stderr(Stdio::piped())
        .spawn()
        .context("starting memtrace serve")?;
    let agent_pid = agent.id();
    let mut stderr = BufReader::new(agent.stderr.take().context("memtrace's stderr")?);
    let mut line = String::new();
    let address = loop {
        line.clear();
        if stderr.read_line(&mut line)? == 0 {
            bail!("memtrace serve ended before serving: {:?}", agent.wait());
        }
        if let Some(rest) = line.strip_prefix("memtrace: serving http://") {
            break rest.split('/').next().unwrap_or_default().to_owned();
        }
    };
    // Its later warnings are drained, so that a full pipe never blocks it.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut lost = 0;
    for _ in 0..PROCESSES {
        let mut child = Command::new(&target)
            .arg("--wait")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the soak's process")?;
        let mut pid = String::new();
        BufReader::new(child.stdout.take().context("its stdout")?).read_line(&mut pid)?;
        let pid = pid.trim().to_owned();
        let traced = Instant::now();
        while !metrics(&address)?.contains(&format!("memtrace_outstanding_bytes{{pid=\"{pid}\"")) {
            if traced.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                bail!("memtrace serve did not trace process {pid} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.stdin.take().context("its stdin")?.write_all(b"go\n")?;
        let status = child.wait()?;
        if !status.success() {
            bail!("a soak process failed: {status}");
        }
        // Two scrapes: the first reports the exited process once more, the second finds it gone.
        let exposition = metrics(&address)?;
        lost = lost_events(&exposition);
        metrics(&address)?;
        if let Some(rss) = crate::soak::resident_bytes(agent_pid) {
            samples.push(rss);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    // SAFETY: kill has no memory effects; the pid is our own child.
    unsafe { libc::kill(agent_pid as libc::pid_t, libc::SIGTERM) };
    let status = agent.wait()?;
    if !status.success() {
        bail!("memtrace serve failed during the soak ({status})");
    }
    let quarter = samples.len() / 4;
    let max_of = |range: &[u64]| range.iter().copied().max().unwrap_or(0);
    Ok(ServeSoak {
        seconds,
        processes: PROCESSES,
        stacks_seen: PROCESSES as u64 * STACKS_PER_PROCESS,
        rss_after_warmup: max_of(&samples[quarter..2 * quarter]),
        rss_at_end: max_of(&samples[3 * quarter..]),
        lost,
    })
}

/// GET /metrics.
fn metrics(address: &str) -> Result<String> {
    let mut stream = TcpStream::connect(address).context("connecting to memtrace serve")?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// The sum of memtrace_lost_events_total.
fn lost_events(exposition: &str) -> u64 {
    exposition
        .lines()
        .filter(|line| line.starts_with("memtrace_lost_events_total"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}
