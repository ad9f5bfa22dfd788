//! What kind of memory a faulting address is in, from the mapping that covers it.
use serde::{Deserialize, Serialize};

use crate::target::maps::Mapping;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// The break heap (`[heap]`).
    Heap,
    /// The main thread's stack (`[stack]`); other threads' stacks are anonymous mappings.
    Stack,
    /// Private anonymous memory: mmap'd blocks, arenas, bss, thread stacks.
    Anonymous,
    /// A mapped file (executables and libraries included).
    File,
    /// Shared memory: System V segments, POSIX shm (`/dev/shm`), shared anonymous, memfd.
    Shm,
    /// Anything else: `[vdso]`, `[vvar]`, an address no mapping covers.
    Other,
}

impl FaultKind {
    pub fn of(mapping: &Mapping) -> Self {
        match mapping.path.as_deref() {
            None => FaultKind::Anonymous,
            Some(path) if is_shared_memory(path) => FaultKind::Shm,
            Some("[heap]") => FaultKind::Heap,
            Some(path) if path.starts_with("[stack") => FaultKind::Stack,
            Some(path) if path.starts_with("[anon:") => FaultKind::Anonymous,
            Some(path) if path.starts_with('/') => FaultKind::File,
            Some(_) => FaultKind::Other,
        }
    }
}

/// Paths the kernel shows for shared memory: System V segments (`/SYSV<key>`), POSIX shm
/// (`/dev/shm/...`), shared anonymous memory (`/dev/zero`, deleted), memfd (`/memfd:name`),
/// and named shared anonymous memory (`[anon_shmem:name]`).
pub fn is_shared_memory(path: &str) -> bool {
    path.starts_with("/SYSV")
        || path.starts_with("/dev/shm/")
        || path == "/dev/zero"
        || path.starts_with("/memfd:")
        || path.starts_with("[anon_shmem:")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::maps::parse;

    #[test]
    fn mappings_classify_by_what_the_kernel_names_them() {
        let maps = "\
55d0a0000000-55d0a0021000 rw-p 00000000 00:00 0                          [heap]
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
7f0000000000-7f0000100000 rw-p 00000000 00:00 0 
7f0000200000-7f0000300000 r--p 00000000 08:01 1234                       /usr/lib/libc.so.6
7f0000400000-7f0000500000 rw-s 00000000 00:01 7                          /SYSV00000000 (deleted)
7f0000600000-7f0000700000 rw-s 00000000 00:1a 8                          /dev/shm/memtrace-test
7f0000800000-7f0000900000 rw-s 00000000 00:01 9                          /dev/zero (deleted)
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
";
        let kinds: Vec<FaultKind> = parse(maps).iter().map(FaultKind::of).collect();
        use FaultKind::*;
        assert_eq!(kinds, [Heap, Stack, Anonymous, File, Shm, Shm, Shm, Other]);
    }
}
