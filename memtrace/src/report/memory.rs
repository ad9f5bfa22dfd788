//! The memory picture of each process at the end of a trace (the report's `memory`): what the
//! kernel backs, broken down like `pmap -x`, with the process's cgroup and the allocator's view.
use serde::{Deserialize, Serialize};

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
