//! What each mapping of a process is, in the terms of `pmap -x`: a program's or library's
//! text and data, the heap, the stack, anonymous memory, other mapped files, and shared memory.
use std::{collections::HashSet, path::Path};

use procfs::process::{MMPermissions, MMapPath, MemoryMap};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MappingKind {
    /// Executable mappings of a program or library.
    Text,
    /// The other mappings of a file that has executable ones (read-only data, relocations,
    /// `.data`), and the anonymous mapping right after its writable data (`.bss`).
    Data,
    /// The break heap (`[heap]`).
    Heap,
    /// Stacks the kernel names (`[stack]`, `[stack:TID]`).
    Stack,
    /// Private anonymous memory (mmap'd blocks, malloc arenas, thread stacks).
    Anonymous,
    /// Other mapped files.
    File,
    /// System V shared memory segments (`/SYSV<key>`).
    SysvShm,
    /// POSIX shared memory (`shm_open`, files in `/dev/shm`).
    PosixShm,
    /// Shared anonymous memory (`MAP_SHARED|MAP_ANONYMOUS`, memfd).
    SharedAnonymous,
    /// `[vdso]`, `[vvar]`, `[vsyscall]` and other pseudo-mappings.
    Other,
}

impl MappingKind {
    pub const ALL: [MappingKind; 10] = [
        MappingKind::Text,
        MappingKind::Data,
        MappingKind::Heap,
        MappingKind::Stack,
        MappingKind::Anonymous,
        MappingKind::File,
        MappingKind::SysvShm,
        MappingKind::PosixShm,
        MappingKind::SharedAnonymous,
        MappingKind::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MappingKind::Text => "text",
            MappingKind::Data => "data",
            MappingKind::Heap => "heap",
            MappingKind::Stack => "stack",
            MappingKind::Anonymous => "anonymous",
            MappingKind::File => "file",
            MappingKind::SysvShm => "sysv_shm",
            MappingKind::PosixShm => "posix_shm",
            MappingKind::SharedAnonymous => "shared_anonymous",
            MappingKind::Other => "other",
        }
    }
}

/// Classifies every mapping of one process (in address order, as the kernel lists them).
pub fn classify(maps: &[MemoryMap]) -> Vec<MappingKind> {
    // Files with an executable mapping are programs or libraries: their other mappings are data.
    let objects: HashSet<(i32, i32, u64)> = maps
        .iter()
        .filter(|map| map.inode != 0 && map.perms.contains(MMPermissions::EXECUTE))
        .map(|map| (map.dev.0, map.dev.1, map.inode))
        .collect();
    let mut kinds: Vec<MappingKind> = Vec::with_capacity(maps.len());
    for (index, map) in maps.iter().enumerate() {
        let shared = map.perms.contains(MMPermissions::SHARED);
        let kind = match &map.pathname {
            MMapPath::Heap => MappingKind::Heap,
            MMapPath::Stack | MMapPath::TStack(_) => MappingKind::Stack,
            MMapPath::Vsys(_) => MappingKind::SysvShm,
            MMapPath::Anonymous if shared => MappingKind::SharedAnonymous,
            MMapPath::Anonymous => {
                // `.bss`: anonymous, writable, right after the writable data of an object.
                let after_data = index > 0
                    && kinds[index - 1] == MappingKind::Data
                    && maps[index - 1].address.1 == map.address.0
                    && maps[index - 1].perms.contains(MMPermissions::WRITE);
                if after_data && map.perms.contains(MMPermissions::WRITE) { MappingKind::Data } else { MappingKind::Anonymous }
            }
            MMapPath::Path(path) => of_path(path, objects.contains(&(map.dev.0, map.dev.1, map.inode)), map.perms),
            MMapPath::Other(name) if name.starts_with("anon_shmem:") => MappingKind::SharedAnonymous,
            MMapPath::Other(name) if name.starts_with("anon:") => MappingKind::Anonymous,
            _ => MappingKind::Other,
        };
        kinds.push(kind);
    }
    kinds
}

fn of_path(path: &Path, is_object: bool, perms: MMPermissions) -> MappingKind {
    let text = path.to_string_lossy();
    let text = text.strip_suffix(" (deleted)").unwrap_or(&text);
    if text.starts_with("/dev/shm/") {
        MappingKind::PosixShm
    } else if text.starts_with("/SYSV") {
        MappingKind::SysvShm
    } else if text == "/dev/zero" || text.starts_with("/memfd:") {
        MappingKind::SharedAnonymous
    } else if is_object && perms.contains(MMPermissions::EXECUTE) {
        MappingKind::Text
    } else if is_object {
        MappingKind::Data
    } else {
        MappingKind::File
    }
}

#[cfg(test)]
mod tests {
    use procfs::{FromBufRead, process::MemoryMaps};

    use super::*;

    #[test]
    fn mappings_classify_like_pmap() {
        let maps = "\
555555554000-555555555000 r--p 00000000 08:01 100                        /usr/bin/prog
555555555000-555555556000 r-xp 00001000 08:01 100                        /usr/bin/prog
555555556000-555555557000 rw-p 00002000 08:01 100                        /usr/bin/prog
555555557000-555555559000 rw-p 00000000 00:00 0 
555555559000-55555557a000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000100000 rw-p 00000000 00:00 0 
7f0000100000-7f0000200000 r--p 00000000 08:01 200                        /var/data.bin
7f0000200000-7f0000500000 rw-s 00000000 00:01 7                          /SYSV0000abcd (deleted)
7f0000600000-7f0000700000 rw-s 00000000 00:1a 8                          /dev/shm/memtrace-test
7f0000800000-7f0000900000 rw-s 00000000 00:01 9                          /dev/zero (deleted)
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
";
        let maps = MemoryMaps::from_buf_read(maps.as_bytes()).expect("valid maps");
        use MappingKind::*;
        assert_eq!(
            classify(&maps.0),
            [Data, Text, Data, Data, Heap, Anonymous, File, SysvShm, PosixShm, SharedAnonymous, Stack, Other]
        );
    }
}
