//! `serve`'s selector: which processes on the machine are traced. `-p` names processes; `--exe
//! GLOB` takes every process whose executable's path matches, and `--cgroup DIR` every process in
//! a cgroup directory or below it (v1 or v2), those present and those to come. memtrace itself
//! is never selected.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use anyhow::{Result, bail};

use super::trace_only::TraceOnly;

/// Directories below a `--cgroup` directory read at most, so that a huge tree cannot stall the
/// agent.
const MAX_CGROUP_DIRECTORIES: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Selector {
    pids: Vec<u32>,
    /// `--exe`: none when not given (an empty `TraceOnly` would take every process).
    exes: Option<TraceOnly>,
    cgroups: Vec<PathBuf>,
}

impl Selector {
    /// Checks each cgroup directory now; a `-p` process that is gone is an error too.
    pub fn new(pids: Vec<u32>, exes: Vec<String>, cgroups: Vec<PathBuf>) -> Result<Self> {
        if pids.is_empty() && exes.is_empty() && cgroups.is_empty() {
            bail!("serve needs processes to trace: -p PID, --exe GLOB or --cgroup DIR");
        }
        for &pid in &pids {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                bail!("process {pid} does not exist (check the PID with `ps -p {pid}`)");
            }
        }
        for cgroup in &cgroups {
            if !cgroup.join("cgroup.procs").is_file() {
                bail!(
                    "--cgroup {}: not a cgroup directory (no cgroup.procs); give its path under /sys/fs/cgroup",
                    cgroup.display()
                );
            }
        }
        let exes = (!exes.is_empty()).then(|| TraceOnly::new(&exes));
        Ok(Self { pids, exes, cgroups })
    }

    /// Whether processes may join later (`--exe`, `--cgroup`): execs are then watched.
    pub fn follows_new(&self) -> bool {
        self.exes.is_some() || !self.cgroups.is_empty()
    }

    /// Every process selected now.
    pub fn scan(&self) -> BTreeSet<u32> {
        let own = std::process::id();
        let mut selected: BTreeSet<u32> = self.pids.iter().copied().collect();
        if self.exes.is_some() {
            selected.extend(all_processes().into_iter().filter(|&pid| self.exe_matches(pid)));
        }
        for cgroup in &self.cgroups {
            selected.extend(cgroup_members(cgroup));
        }
        selected.remove(&own);
        selected
    }

    /// Whether `pid` (which just exec'd) is selected.
    pub fn selects(&self, pid: u32) -> bool {
        pid != std::process::id()
            && (self.pids.contains(&pid)
                || self.exe_matches(pid)
                || self.cgroups.iter().any(|cgroup| cgroup_members(cgroup).contains(&pid)))
    }

    fn exe_matches(&self, pid: u32) -> bool {
        self.exes.as_ref().is_some_and(|exes| exes.traces_process(pid))
    }
}

/// The process ids in /proc.
fn all_processes() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// The processes in a cgroup directory and the directories below it.
fn cgroup_members(root: &Path) -> BTreeSet<u32> {
    let mut members = BTreeSet::new();
    let mut pending = vec![root.to_path_buf()];
    let mut visited = 0;
    while let Some(directory) = pending.pop() {
        visited += 1;
        if visited > MAX_CGROUP_DIRECTORIES {
            log::warn!("more than {MAX_CGROUP_DIRECTORIES} cgroups below {}: the rest are not read", root.display());
            break;
        }
        if let Ok(text) = std::fs::read_to_string(directory.join("cgroup.procs")) {
            members.extend(text.lines().filter_map(|line| line.trim().parse::<u32>().ok()));
        }
        let Ok(entries) = std::fs::read_dir(&directory) else { continue };
        for entry in entries.flatten() {
            // cgroupfs holds no links; a directory entry's own type is not followed.
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                pending.push(entry.path());
            }
        }
    }
    members
}
