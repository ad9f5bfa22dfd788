//! The memory picture of a process at the end of a trace: what the kernel actually backs, from
//! `/proc/PID/smaps_rollup` and `/proc/PID/smaps`, broken down like `pmap -x`, with its cgroup's
//! figures. It must be read while the process is alive (run mode reads it at the exit stop).
pub mod cgroup;

use procfs::process::{MemoryMap, Process};
use thiserror::Error;

use crate::{
    report::{AllocatorView, KindUsage, MappingKind, MappingUsage, MemoryPicture},
    target::maps::{self, Mapping},
};

/// How many of the largest mappings (by RSS) the picture lists.
pub const LARGEST: usize = 10;

#[derive(Debug, Error)]
pub enum PictureError {
    #[error("reading /proc/{pid}/{file} failed: {detail}")]
    Read { pid: u32, file: &'static str, detail: String },
}

/// Reads the picture of a living process. `allocator.outstanding_bytes` is left 0 for the
/// caller, who knows it.
pub fn capture(pid: u32) -> Result<MemoryPicture, PictureError> {
    let process = Process::new(pid as i32).map_err(|error| read_error(pid, "stat", error))?;
    let rollup = process.smaps_rollup().map_err(|error| read_error(pid, "smaps_rollup", error))?;
    let maps = read_smaps(&process).map_err(|detail| PictureError::Read { pid, file: "smaps", detail })?;
    let totals = rollup.memory_map_rollup.0.first().map(figures).unwrap_or_default();
    let kinds = maps::classify(&maps.iter().map(Mapping::of).collect::<Vec<_>>());

    let by_kind = MappingKind::ALL
        .iter()
        .filter_map(|&wanted| {
            let mut usage = KindUsage {
                kind: wanted,
                mappings: 0,
                size_bytes: 0,
                rss_bytes: 0,
                pss_bytes: 0,
                dirty_bytes: 0,
                swap_bytes: 0,
            };
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
    let path = maps::path_text(&map.pathname);
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

/// `/proc/PID/smaps` as procfs parses it.
fn read_smaps(process: &Process) -> Result<Vec<MemoryMap>, String> {
    let mut bytes = Vec::new();
    let mut file = process.open_relative("smaps").map_err(|error| error.to_string())?;
    std::io::Read::read_to_end(&mut file, &mut bytes).map_err(|error| error.to_string())?;
    parse_smaps(&bytes)
}

/// The text of an smaps file as procfs parses it, refusing (as procfs refuses a line it cannot
/// parse) one whose mapping line procfs would panic on: the paths are the traced process's to
/// choose (see [`maps::procfs_would_panic`]).
pub fn parse_smaps(bytes: &[u8]) -> Result<Vec<MemoryMap>, String> {
    let mut lines = bytes.split(|&byte| byte == b'\n').filter_map(|line| std::str::from_utf8(line).ok());
    if let Some(line) = lines.find(|line| maps::procfs_would_panic(line)) {
        return Err(format!("a mapping whose path procfs cannot parse: {line}"));
    }
    procfs::FromBufRead::from_buf_read(bytes)
        .map(|maps: procfs::process::MemoryMaps| maps.0)
        .map_err(|error| error.to_string())
}

fn read_error(pid: u32, file: &'static str, error: procfs::ProcError) -> PictureError {
    PictureError::Read { pid, file, detail: error.to_string() }
}
