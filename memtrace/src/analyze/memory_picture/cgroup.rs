//! The process's memory cgroup: what the kernel charges to it. cgroup v2 (`memory.current`,
//! `memory.peak`, `memory.stat`); on a hybrid or v1-only system, the v1 memory controller's
//! equivalents, so the figures are there either way.
use std::{fs, io, path::PathBuf};

use crate::report::CgroupMemory;

/// Where cgroups are mounted on every system memtrace supports.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Reads the memory figures of the cgroup `pid` is in; `Ok(None)` when no memory accounting
/// covers it (the root cgroup, or no memory controller).
pub fn read(pid: u32) -> io::Result<Option<CgroupMemory>> {
    let membership = procfs::process::Process::new(pid as i32)
        .and_then(|process| process.cgroups())
        .map_err(|error| io::Error::other(error.to_string()))?;
    // Hierarchy 0 is v2; a v1 hierarchy lists the controllers bound to it, memory among them.
    let v2 = membership.0.iter().find(|group| group.hierarchy == 0 && group.controllers.is_empty());
    if let Some(memory) = v2.and_then(|group| read_v2(&group.pathname)) {
        return Ok(Some(memory));
    }
    let v1 = membership.0.iter().find(|group| group.controllers.iter().any(|controller| controller == "memory"));
    Ok(v1.and_then(|group| read_v1(&group.pathname)))
}

fn read_v2(path: &str) -> Option<CgroupMemory> {
    let files = Files(PathBuf::from(CGROUP_ROOT).join(path.trim_start_matches('/')));
    let memory = CgroupMemory {
        version: 2,
        path: path.to_owned(),
        current_bytes: files.number("memory.current"),
        peak_bytes: files.number("memory.peak"),
        anon_bytes: files.stat("anon"),
        file_bytes: files.stat("file"),
        shmem_bytes: files.stat("shmem"),
        kernel_bytes: files.stat("kernel"),
    };
    (memory.current_bytes.is_some() || memory.anon_bytes.is_some()).then_some(memory)
}

fn read_v1(path: &str) -> Option<CgroupMemory> {
    let files = Files(PathBuf::from(CGROUP_ROOT).join("memory").join(path.trim_start_matches('/')));
    let memory = CgroupMemory {
        version: 1,
        path: path.to_owned(),
        current_bytes: files.number("memory.usage_in_bytes"),
        peak_bytes: files.number("memory.max_usage_in_bytes"),
        anon_bytes: files.stat("rss"),
        file_bytes: files.stat("cache"),
        shmem_bytes: files.stat("shmem"),
        kernel_bytes: files.number("memory.kmem.usage_in_bytes"),
    };
    memory.current_bytes.is_some().then_some(memory)
}

/// A cgroup's directory.
struct Files(PathBuf);

impl Files {
    /// A file holding one number.
    fn number(&self, file: &str) -> Option<u64> {
        fs::read_to_string(self.0.join(file)).ok()?.trim().parse().ok()
    }

    /// One `key value` line of `memory.stat`.
    fn stat(&self, key: &str) -> Option<u64> {
        let stat = fs::read_to_string(self.0.join("memory.stat")).ok()?;
        stat.lines().find_map(|line| {
            let (name, value) = line.split_once(' ')?;
            if name == key { value.trim().parse().ok() } else { None }
        })
    }
}
