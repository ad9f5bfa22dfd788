//! What kind of memory a faulting address is in: the mapping that covers it, classified as the
//! memory picture classifies it (`target::maps::classify`), in the coarser terms of the
//! report's fault counts.
use crate::{report::MappingKind, target::maps::Mapping};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// The fault kind of a mapping the classifier called `kind`.
    pub fn of(kind: MappingKind, mapping: &Mapping) -> Self {
        match kind {
            MappingKind::Heap => FaultKind::Heap,
            MappingKind::Stack => FaultKind::Stack,
            MappingKind::Anonymous => FaultKind::Anonymous,
            // `.bss` is a program's data, but anonymous memory to the fault.
            MappingKind::Data if mapping.path.is_none() => FaultKind::Anonymous,
            MappingKind::Text | MappingKind::Data | MappingKind::File => FaultKind::File,
            MappingKind::SysvShm | MappingKind::PosixShm | MappingKind::SharedAnonymous => FaultKind::Shm,
            MappingKind::Other => FaultKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::maps::{classify, parse};

    #[test]
    fn mappings_classify_by_what_the_kernel_names_them() {
        let maps = parse(
            "\
55d0a0000000-55d0a0021000 rw-p 00000000 00:00 0                          [heap]
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
7f0000000000-7f0000100000 rw-p 00000000 00:00 0 
7f0000200000-7f0000300000 r--p 00000000 08:01 1234                       /usr/lib/libc.so.6
7f0000400000-7f0000500000 rw-s 00000000 00:01 7                          /SYSV00000000 (deleted)
7f0000600000-7f0000700000 rw-s 00000000 00:1a 8                          /dev/shm/memtrace-test
7f0000800000-7f0000900000 rw-s 00000000 00:01 9                          /dev/zero (deleted)
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
",
        );
        let kinds: Vec<FaultKind> =
            maps.iter().zip(classify(&maps)).map(|(map, kind)| FaultKind::of(kind, map)).collect();
        use FaultKind::*;
        assert_eq!(kinds, [Heap, Stack, Anonymous, File, Shm, Shm, Shm, Other]);
    }
}
