//! A process's mappings (`/proc/PID/maps`, read and parsed by procfs), and the one classifier of
//! what each mapping is that page faults and the memory picture both use.
use std::{collections::HashSet, io, io::Read, path::PathBuf};

use procfs::{
    FromBufRead,
    process::{MMPermissions, MMapPath, MemoryMap, MemoryMaps, Process},
};

use crate::report::MappingKind;

/// One mapping of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    /// `MAP_SHARED` (`s` in the permissions).
    pub shared: bool,
    /// Offset of `start` in the mapped file.
    pub offset: u64,
    /// The mapped file's device (major, minor) and inode; 0 for anonymous memory.
    pub device: (i32, i32),
    pub inode: u64,
    /// The path as the kernel shows it, without a trailing ` (deleted)`; `[heap]`, `[stack]`,
    /// `[vdso]` for special mappings; `None` for anonymous memory.
    pub path: Option<String>,
    /// The file was deleted or replaced on disk after it was mapped.
    pub deleted: bool,
}

impl Mapping {
    /// A mapping of a regular file (not `[heap]`, `[vdso]` or anonymous memory).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.as_deref().is_some_and(|path| path.starts_with('/'))
    }

    pub fn contains(&self, address: u64) -> bool {
        (self.start..self.end).contains(&address)
    }

    /// `/proc/PID/map_files/START-END`: the mapped file itself, even when deleted on disk or
    /// when the process runs in another mount namespace.
    pub fn map_file(&self, pid: u32) -> PathBuf {
        PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", self.start, self.end))
    }

    /// The mapping as procfs parsed it.
    pub fn of(map: &MemoryMap) -> Self {
        let (path, deleted) = match path_text(&map.pathname) {
            Some(text) => match text.strip_suffix(" (deleted)") {
                Some(path) => (Some(path.to_owned()), true),
                None => (Some(text), false),
            },
            None => (None, false),
        };
        // System V segments are always deleted files; procfs keeps only their key.
        let deleted = deleted || matches!(map.pathname, MMapPath::Vsys(_));
        Mapping {
            start: map.address.0,
            end: map.address.1,
            readable: map.perms.contains(MMPermissions::READ),
            writable: map.perms.contains(MMPermissions::WRITE),
            executable: map.perms.contains(MMPermissions::EXECUTE),
            shared: map.perms.contains(MMPermissions::SHARED),
            offset: map.offset,
            device: map.dev,
            inode: map.inode,
            path,
            deleted,
        }
    }
}

/// The path of a mapping as the kernel writes it in the maps file; `None` for anonymous memory.
pub fn path_text(path: &MMapPath) -> Option<String> {
    Some(match path {
        MMapPath::Anonymous => return None,
        MMapPath::Path(path) => path.to_string_lossy().into_owned(),
        MMapPath::Heap => "[heap]".to_owned(),
        MMapPath::Stack => "[stack]".to_owned(),
        MMapPath::TStack(tid) => format!("[stack:{tid}]"),
        MMapPath::Vdso => "[vdso]".to_owned(),
        MMapPath::Vvar => "[vvar]".to_owned(),
        MMapPath::Vsyscall => "[vsyscall]".to_owned(),
        MMapPath::Rollup => "[rollup]".to_owned(),
        MMapPath::Vsys(key) => format!("/SYSV{:08x}", *key as u32),
        MMapPath::Other(name) => format!("[{name}]"),
    })
}

/// Reads the mappings of `pid`. A path that is not UTF-8 is read with its odd bytes replaced
/// (such a file is not opened by path later, only through `map_files`).
pub fn read(pid: u32) -> io::Result<Vec<Mapping>> {
    let process = Process::new(pid as i32).map_err(procfs_error)?;
    let mut bytes = Vec::new();
    process.open_relative("maps").map_err(procfs_error)?.read_to_end(&mut bytes)?;
    Ok(parse(&String::from_utf8_lossy(&bytes)))
}

/// Parses the text of a maps file; a line procfs cannot parse is skipped, and so is one it
/// would panic on (see [`procfs_would_panic`]).
pub fn parse(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter(|line| !procfs_would_panic(line))
        .filter_map(|line| MemoryMaps::from_buf_read(line.as_bytes()).ok())
        .flat_map(|maps| maps.0)
        .map(|map| Mapping::of(&map))
        .collect()
}

/// Whether procfs 0.18 would panic parsing this maps line: its `MMapPath::from` slices the
/// path field by byte index, bytes 5..13 of a path starting with `/SYSV` (the kernel writes
/// System V segments as `/SYSV%08x`) and all but the last byte of one starting with `[stack:`.
/// A file's path is the traced process's to choose, and a panic here would end memtrace.
pub fn procfs_would_panic(line: &str) -> bool {
    // The path as procfs takes it: the sixth space-separated field, trimmed.
    let Some(path) = line.splitn(6, ' ').nth(5).map(str::trim) else { return false };
    if path.starts_with("/SYSV") {
        return path.get(5..13).is_none();
    }
    if path.starts_with("[stack:") {
        return path.get(1..path.len().saturating_sub(1)).is_none();
    }
    false
}

/// procfs's error as an I/O error, keeping "no such process" recognisable.
fn procfs_error(error: procfs::ProcError) -> io::Error {
    match error {
        procfs::ProcError::NotFound(_) => io::Error::from(io::ErrorKind::NotFound),
        procfs::ProcError::Io(error, _) => error,
        other => io::Error::other(other.to_string()),
    }
}

/// What each mapping of one process is (in address order, as the kernel lists them), in the
/// terms of `pmap -x`: a program's or library's text and data, the heap, the stack, anonymous
/// memory, other files, and the kinds of shared memory.
pub fn classify(maps: &[Mapping]) -> Vec<MappingKind> {
    // Files with an executable mapping are programs or libraries: their other mappings are data.
    let objects: HashSet<((i32, i32), u64)> =
        maps.iter().filter(|map| map.inode != 0 && map.executable).map(|map| (map.device, map.inode)).collect();
    let mut kinds: Vec<MappingKind> = Vec::with_capacity(maps.len());
    for (index, map) in maps.iter().enumerate() {
        let kind = match map.path.as_deref() {
            None if map.shared => MappingKind::SharedAnonymous,
            None => {
                // `.bss`: anonymous, writable, right after the writable data of an object.
                let after_data = index > 0
                    && kinds[index - 1] == MappingKind::Data
                    && maps[index - 1].end == map.start
                    && maps[index - 1].writable;
                if after_data && map.writable { MappingKind::Data } else { MappingKind::Anonymous }
            }
            Some("[heap]") => MappingKind::Heap,
            Some(path) if path.starts_with("[stack") => MappingKind::Stack,
            Some(path) if path.starts_with("[anon_shmem:") => MappingKind::SharedAnonymous,
            Some(path) if path.starts_with("[anon:") => MappingKind::Anonymous,
            Some(path) if path.starts_with("/SYSV") => MappingKind::SysvShm,
            Some(path) if path.starts_with("/dev/shm/") => MappingKind::PosixShm,
            Some(path) if path == "/dev/zero" || path.starts_with("/memfd:") => MappingKind::SharedAnonymous,
            Some(path) if path.starts_with('/') => match (objects.contains(&(map.device, map.inode)), map.executable) {
                (true, true) => MappingKind::Text,
                (true, false) => MappingKind::Data,
                (false, _) => MappingKind::File,
            },
            Some(_) => MappingKind::Other,
        };
        kinds.push(kind);
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_anonymous_special_and_deleted_mappings() {
        let text = "\
55d0c1a00000-55d0c1a01000 r-xp 00001000 fe:01 1234   /usr/bin/my prog\n\
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 \n\
7ffd1e5f4000-7ffd1e5f6000 r-xp 00000000 00:00 0                          [vdso]\n\
7f1000000000-7f1000001000 r-xp 00002000 fe:01 99 /tmp/gone (deleted)\n\
garbage\n";
        let maps = parse(text);
        assert_eq!(maps.len(), 4);
        assert_eq!(maps[0].start, 0x55d0c1a00000);
        assert_eq!(maps[0].offset, 0x1000);
        assert!(maps[0].executable && maps[0].is_file());
        assert_eq!(maps[0].path.as_deref(), Some("/usr/bin/my prog"));
        assert_eq!(maps[0].device, (0xfe, 1));
        assert_eq!(maps[1].path, None);
        assert!(maps[1].writable && !maps[0].writable);
        assert!(!maps[1].executable && !maps[1].is_file());
        assert_eq!(maps[2].path.as_deref(), Some("[vdso]"));
        assert!(!maps[2].is_file());
        assert!(maps[3].deleted);
        assert_eq!(maps[3].path.as_deref(), Some("/tmp/gone"));
        assert_eq!(maps[3].map_file(7).to_str(), Some("/proc/7/map_files/7f1000000000-7f1000001000"));
    }

    #[test]
    fn mappings_classify_like_pmap() {
        let maps = parse(
            "\
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
",
        );
        use MappingKind::*;
        assert_eq!(
            classify(&maps),
            [Data, Text, Data, Data, Heap, Anonymous, File, SysvShm, PosixShm, SharedAnonymous, Stack, Other]
        );
    }
}
