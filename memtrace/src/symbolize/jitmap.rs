//! JIT-compiled code named through `/tmp/perf-PID.map`, the file JITs (the JVM with
//! perf-map-agent, V8's --perf-basic-prof, LuaJIT, .NET, ...) write for perf: one
//! `START SIZE NAME` line per function, START and SIZE in hexadecimal.
//!
//! The file is in a world-writable directory and its writer is the traced process, whose user
//! may be hostile: as perf does, memtrace opens it without following a symbolic link and
//! without blocking, and takes only a regular file owned by the process's user or root, of at
//! most [`MAX_BYTES`].
use std::{os::unix::fs::MetadataExt, path::Path};

use crate::untrusted::{self, UntrustedError};

/// The largest perf map read (a JIT that writes more is said to be skipped).
pub const MAX_BYTES: u64 = 64 << 20;

/// The JIT functions of one process, sorted by start.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JitMap {
    functions: Vec<(u64, u64, String)>,
}

impl JitMap {
    /// Reads `/tmp/perf-PID.map`; `Ok(None)` when the process wrote none, `Err` with the
    /// reason when it is not one memtrace takes.
    pub fn read(pid: u32) -> Result<Option<Self>, String> {
        Self::read_file(Path::new(&format!("/tmp/perf-{pid}.map")), &owners_of(pid))
    }

    /// Reads a perf map owned by root or by one of `owners`.
    fn read_file(path: &Path, owners: &[u32]) -> Result<Option<Self>, String> {
        let file = match untrusted::open(path, untrusted::Links::Refuse) {
            Ok(file) => file,
            Err(error) if error.is_not_found() => return Ok(None),
            Err(error) => return Err(error.to_string()),
        };
        let owner = file.metadata().map_err(|error| error.to_string())?.uid();
        if owner != 0 && !owners.contains(&owner) {
            let process = owners.first().map_or_else(|| "unknown".to_owned(), u32::to_string);
            return Err(format!("it is owned by uid {owner}, neither the process's user (uid {process}) nor root"));
        }
        let bytes = untrusted::read_capped(&file, MAX_BYTES).map_err(|error: UntrustedError| error.to_string())?;
        Ok(Some(Self::parse(&String::from_utf8_lossy(&bytes))))
    }

    /// Malformed lines are skipped. A JIT that moves or frees code appends new lines: the
    /// later of two overlapping entries wins, as perf has it.
    pub fn parse(text: &str) -> Self {
        // By start; the entries never overlap, so they are in end order too and those a new
        // one overlaps are contiguous: each line costs a logarithm, not a pass over all kept
        // (a JIT's map has millions of lines, and the traced process writes it).
        let mut functions: std::collections::BTreeMap<u64, (u64, String)> = std::collections::BTreeMap::new();
        for line in text.lines() {
            let mut fields = line.trim().splitn(3, ' ');
            let (Some(start), Some(size), Some(name)) = (fields.next(), fields.next(), fields.next()) else { continue };
            let (Some(start), Some(size)) = (hex(start), hex(size)) else { continue };
            let end = start.saturating_add(size);
            if end == start {
                // Empty (or at the very last address): it names no address.
                continue;
            }
            let before = functions.range(..start).next_back().filter(|(_, (other_end, _))| *other_end > start);
            let overlapped: Vec<u64> = before
                .map(|(&other_start, _)| other_start)
                .into_iter()
                .chain(functions.range(start..end).map(|(&other_start, _)| other_start))
                .collect();
            for other_start in overlapped {
                functions.remove(&other_start);
            }
            functions.insert(start, (end, name.trim().to_owned()));
        }
        Self { functions: functions.into_iter().map(|(start, (end, name))| (start, end, name)).collect() }
    }

    /// The JIT function holding `address`.
    pub fn name_of(&self, address: u64) -> Option<&str> {
        let index = self.functions.partition_point(|function| function.0 <= address).checked_sub(1)?;
        let (_, end, name) = &self.functions[index];
        (address < *end).then_some(name.as_str())
    }
}

/// The users a process's files are made as: its effective and filesystem user ids (from
/// /proc/PID/status; none when it is gone, and then only root's files are taken).
fn owners_of(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let Some(ids) = status.lines().find_map(|line| line.strip_prefix("Uid:")) else { return Vec::new() };
    // Real, effective, saved, filesystem.
    let ids: Vec<u32> = ids.split_whitespace().filter_map(|id| id.parse().ok()).collect();
    [ids.get(1), ids.get(3)].into_iter().flatten().copied().collect()
}

fn hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16).ok()
}

#[test]
fn lines_parse_and_later_entries_replace_overlapping_ones() {
    let map = JitMap::parse(
        "7f0000001000 40 LazyCompile:~handle app.js:10\nnot a line\n7f0000002000 0x10 stub\n7f0000001000 20 recompiled\n",
    );
    assert_eq!(map.name_of(0x7f00_0000_1010), Some("recompiled"));
    assert_eq!(map.name_of(0x7f00_0000_1030), None);
    assert_eq!(map.name_of(0x7f00_0000_200f), Some("stub"));
    assert_eq!(map.name_of(0x7f00_0000_2010), None);
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn only_regular_files_of_the_process_user_or_root_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let map = dir.path().join("perf-1.map");
        assert_eq!(JitMap::read_file(&map, &[0]), Ok(None));
        std::fs::write(&map, "1000 10 f\n").unwrap();
        assert!(JitMap::read_file(&map, &[0]).unwrap().is_some_and(|map| map.name_of(0x1008) == Some("f")));
        // Owned by another user than the process's (the test runs as root).
        std::os::unix::fs::chown(&map, Some(12345), None).unwrap();
        assert_eq!(
            JitMap::read_file(&map, &[1000]),
            Err("it is owned by uid 12345, neither the process's user (uid 1000) nor root".to_owned())
        );
        assert!(JitMap::read_file(&map, &[12345]).is_ok_and(|map| map.is_some()));
        std::fs::remove_file(&map).unwrap();
        symlink("/dev/zero", &map).unwrap();
        assert_eq!(
            JitMap::read_file(&map, &[0]),
            Err("it is a symbolic link, which memtrace does not follow here".to_owned())
        );
    }
}
