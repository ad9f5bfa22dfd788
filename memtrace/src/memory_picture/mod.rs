//! The memory picture of a process at the end of a trace: what the kernel actually backs, from
//! `/proc/PID/smaps_rollup` and `/proc/PID/smaps`, broken down like `pmap -x`, with its cgroup's
//! figures. It must be read while the process is alive (run mode reads it at the exit stop).
pub mod cgroup;
pub mod kind;

use procfs::process::{MemoryMap, Process};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use cgroup::CgroupMemory;
pub use kind::MappingKind;

/// How many of the largest mappings (by RSS) the picture lists.
pub const LARGEST: usize = 10;

#[derive(Debug, Error)]
pub enum PictureError {
    #[error("reading /proc/{pid}/{file} failed: {detail}")]
    Read { pid: u32, file: &'static str, detail: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MemoryPicture {
    pub pid: u32,
    /// Address space mapped (the sum of every mapping's size).
    pub vsz_bytes: u64,
    /// Resident: pages in RAM mapped by the process.
    pub rss_bytes: u64,
    /// Proportional: each resident page divided by the number of processes mapping it.
    pub pss_bytes: u64,
    /// Unique: resident pages no other process maps (private clean + private dirty).
    pub uss_bytes: u64,
    /// Resident pages other processes map too (shared clean + shared dirty).
    pub shared_bytes: u64,
    pub swap_bytes: u64,
    /// By mapping kind, in the order of [`MappingKind::ALL`], kinds with no mapping left out.
    pub by_kind: Vec<KindUsage>,
    /// The largest mappings by RSS, most first.
    pub largest: Vec<MappingUsage>,
    /// The process's cgroup (v2), when it has one with memory accounting.
    pub cgroup: Option<CgroupMemory>,
    /// The allocator's view next to the kernel's.
    pub allocator: AllocatorView,
}

/// One mapping kind's share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KindUsage {
    pub kind: MappingKind,
    pub mappings: u64,
    pub size_bytes: u64,
    pub rss_bytes: u64,
    pub pss_bytes: u64,
    pub dirty_bytes: u64,
    pub swap_bytes: u64,
}

/// One mapping, as `pmap -x` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MappingUsage {
    /// Start address, `0x…`.
    pub address: String,
    pub kind: MappingKind,
    /// `rw-p`-style permissions.
    pub mode: String,
    pub size_bytes: u64,
    pub rss_bytes: u64,
    pub pss_bytes: u64,
    pub dirty_bytes: u64,
    /// The mapped file or pseudo-path (`[heap]`, `/SYSV0000abcd`, ...), `null` for anonymous.
    pub path: Option<String>,
}

/// What malloc holds against what the kernel backs for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AllocatorView {
    /// Bytes allocated during the trace and not freed (the report's `outstanding_bytes` for
    /// this process).
    pub outstanding_bytes: u64,
    /// RSS of the heap and of private anonymous mappings, where malloc's memory lives. Far
    /// above `outstanding_bytes`: fragmentation, allocator caching, or memory allocated
    /// before the trace.
    pub heap_and_anonymous_rss_bytes: u64,
}

/// Reads the picture of a living process. `allocator.outstanding_bytes` is left 0 for the
/// caller, who knows it.
pub fn capture(pid: u32) -> Result<MemoryPicture, PictureError> {
    let process = Process::new(pid as i32).map_err(|error| read_error(pid, "stat", error))?;
    let rollup = process.smaps_rollup().map_err(|error| read_error(pid, "smaps_rollup", error))?;
    let maps = process.smaps().map_err(|error| read_error(pid, "smaps", error))?.0;
    let totals = rollup.memory_map_rollup.0.first().map(figures).unwrap_or_default();
    let kinds = kind::classify(&maps);

    let by_kind = MappingKind::ALL
        .iter()
        .filter_map(|&wanted| {
            let mut usage = KindUsage { kind: wanted, mappings: 0, size_bytes: 0, rss_bytes: 0, pss_bytes: 0, dirty_bytes: 0, swap_bytes: 0 };
            for (map, _) in maps.iter().zip(&kinds).filter(|(_, kind)| **kind == wanted) {
                let own = figures(map);
                usage.mappings += 1;
                usage.size_bytes += own.size;
                usage.rss_bytes += own.rss;
                usage.pss_bytes += own.pss;
                usage.dirty_bytes += own.dirty;
                usage.swap_bytes += own.swap;
            }
            (usage.mappings > 0).then_some(usage)
        })
        .collect::<Vec<_>>();
    let mut largest: Vec<MappingUsage> = maps.iter().zip(&kinds).map(|(map, &kind)| usage_of(map, kind)).collect();
    largest.sort_by(|a, b| b.rss_bytes.cmp(&a.rss_bytes).then(b.size_bytes.cmp(&a.size_bytes)));
    largest.truncate(LARGEST);
    let heap_and_anonymous_rss_bytes = by_kind
        .iter()
        .filter(|usage| matches!(usage.kind, MappingKind::Heap | MappingKind::Anonymous))
        .map(|usage| usage.rss_bytes)
        .sum();
    let cgroup = match cgroup::read(pid) {
        Ok(cgroup) => cgroup,
        Err(error) => {
            log::warn!("cannot read the cgroup of process {pid}: {error}");
            None
        }
    };
    Ok(MemoryPicture {
        pid,
        vsz_bytes: maps.iter().map(|map| map.address.1 - map.address.0).sum(),
        rss_bytes: totals.rss,
        pss_bytes: totals.pss,
        uss_bytes: totals.private,
        shared_bytes: totals.shared,
        swap_bytes: totals.swap,
        by_kind,
        largest,
        cgroup,
        allocator: AllocatorView { outstanding_bytes: 0, heap_and_anonymous_rss_bytes },
    })
}

/// The smaps figures memtrace reports, in bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    size: u64,
    rss: u64,
    pss: u64,
    private: u64,
    shared: u64,
    dirty: u64,
    swap: u64,
}

fn figures(map: &MemoryMap) -> Figures {
    let get = |key: &str| map.extension.map.get(key).copied().unwrap_or(0);
    Figures {
        size: map.address.1.saturating_sub(map.address.0),
        rss: get("Rss"),
        pss: get("Pss"),
        private: get("Private_Clean") + get("Private_Dirty"),
        shared: get("Shared_Clean") + get("Shared_Dirty"),
        dirty: get("Private_Dirty") + get("Shared_Dirty"),
        swap: get("Swap"),
    }
}

fn usage_of(map: &MemoryMap, kind: MappingKind) -> MappingUsage {
    let own = figures(map);
    let path = match &map.pathname {
        procfs::process::MMapPath::Anonymous => None,
        procfs::process::MMapPath::Path(path) => Some(path.to_string_lossy().into_owned()),
        procfs::process::MMapPath::Heap => Some("[heap]".to_owned()),
        procfs::process::MMapPath::Stack => Some("[stack]".to_owned()),
        procfs::process::MMapPath::TStack(tid) => Some(format!("[stack:{tid}]")),
        procfs::process::MMapPath::Vdso => Some("[vdso]".to_owned()),
        procfs::process::MMapPath::Vvar => Some("[vvar]".to_owned()),
        procfs::process::MMapPath::Vsyscall => Some("[vsyscall]".to_owned()),
        procfs::process::MMapPath::Vsys(key) => Some(format!("/SYSV{:08x}", *key as u32)),
        procfs::process::MMapPath::Other(name) => Some(format!("[{name}]")),
        other => Some(format!("{other:?}")),
    };
    MappingUsage {
        address: format!("{:#x}", map.address.0),
        kind,
        mode: map.perms.as_str(),
        size_bytes: own.size,
        rss_bytes: own.rss,
        pss_bytes: own.pss,
        dirty_bytes: own.dirty,
        path,
    }
}

fn read_error(pid: u32, file: &'static str, error: procfs::ProcError) -> PictureError {
    PictureError::Read { pid, file, detail: error.to_string() }
}
