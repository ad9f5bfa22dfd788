//! The process's memory cgroup: what the kernel charges to it. cgroup v2 (`memory.current`,
//! `memory.peak`, `memory.stat`); on a hybrid or v1-only system, the v1 memory controller's
//! equivalents, so the figures are there either way.
use std::{fs, io, path::PathBuf};

use serde::{Deserialize, Serialize};

/// Where cgroups are mounted on every system memtrace supports.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CgroupMemory {
    /// 2, or 1 when only the v1 memory controller accounts for the process.
    pub version: u8,
    /// The cgroup's path in its hierarchy, `/` for the root.
    pub path: String,
    /// Everything charged to the cgroup now (v2 `memory.current`, v1 `memory.usage_in_bytes`).
    pub current_bytes: Option<u64>,
    /// Its high-water mark (v2 `memory.peak`, Linux 5.19 and newer; v1
    /// `memory.max_usage_in_bytes`).
    pub peak_bytes: Option<u64>,
    /// From `memory.stat`: anonymous memory (v1 `rss`), page cache (v1 `cache`), shared
    /// memory, kernel memory (v1 `memory.kmem.usage_in_bytes`).
    pub anon_bytes: Option<u64>,
    pub file_bytes: Option<u64>,
    pub shmem_bytes: Option<u64>,
    pub kernel_bytes: Option<u64>,
}

/// Reads the memory figures of the cgroup `pid` is in; `Ok(None)` when no memory accounting
/// covers it (the root cgroup, or no memory controller).
pub fn read(pid: u32) -> io::Result<Option<CgroupMemory>> {
    let membership = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    // `0::/path` is the v2 hierarchy; `N:memory:/path` (or `N:a,memory:/path`) the v1 memory
    // controller.
    let v2 = membership.lines().find_map(|line| line.strip_prefix("0::"));
    if let Some(path) = v2
        && let Some(memory) = read_v2(path)
    {
        return Ok(Some(memory));
    }
    let v1 = membership.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers.split(',').any(|controller| controller == "memory").then_some(path)
    });
    Ok(v1.and_then(read_v1))
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
