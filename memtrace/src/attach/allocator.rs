//! Which objects provide the allocator functions a target calls, and where they are in those
//! files.
//!
//! A process gets each function from the first object in symbol-lookup order that defines it:
//! the executable (a static binary, or one linking an allocator statically), preloaded
//! libraries, its dependencies (jemalloc, tcmalloc, mimalloc, libstdc++ for operator new), then
//! libc. For a command not started yet, or a process that has just exec'd, `libraries` finds
//! that order as the dynamic loader will, by reading files (memtrace never runs the program's
//! loader or anything else the target controls); for a running process, `/proc/PID/maps` and
//! its `LD_PRELOAD` give it.
use std::{
    collections::{HashMap, HashSet},
    ffi::OsString,
    io::{self, Read},
    os::unix::{ffi::OsStringExt, fs::MetadataExt},
    path::{Path, PathBuf},
};

use memtrace_common::names;
use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};
use thiserror::Error;

use crate::{
    attach::{
        libraries::{self, LibraryError},
        probe_site,
    },
    target::maps,
    untrusted::{self, UntrustedError},
};

/// How a function is probed: its arguments decide the entry program, and whether it hands out
/// a block (probed at return too) or releases one (entry only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// `f(size)`.
    Size,
    /// `calloc(count, size)`.
    Calloc,
    /// `f(alignment, size)`.
    Aligned,
    /// `realloc(ptr, size)`.
    Realloc,
    /// `reallocarray(ptr, count, size)`.
    ReallocArray,
    /// `posix_memalign(&ptr, alignment, size)`.
    PosixMemalign,
    /// `free(ptr)`.
    Free,
    /// `operator delete(ptr, ...)`.
    Delete,
    /// A libc wrapper of a mapping system call (mmap, mremap, shmat, brk, sbrk): probed only
    /// so that the system call's event gets the stack at the wrapper's return.
    MappingWrapper,
}

impl Shape {
    pub fn entry_program(self) -> &'static str {
        match self {
            Shape::Size => names::SIZE_ENTER,
            Shape::Calloc => names::CALLOC_ENTER,
            Shape::Aligned => names::ALIGNED_ENTER,
            Shape::Realloc => names::REALLOC_ENTER,
            Shape::ReallocArray => names::REALLOCARRAY_ENTER,
            Shape::PosixMemalign => names::POSIX_MEMALIGN_ENTER,
            Shape::Free => names::FREE_ENTER,
            Shape::Delete => names::DELETE_ENTER,
            Shape::MappingWrapper => names::WRAPPER_ENTER,
        }
    }

    /// The program probing the function's return, if it has one.
    pub fn return_program(self) -> Option<&'static str> {
        match self {
            Shape::Free | Shape::Delete => None,
            Shape::MappingWrapper => Some(names::WRAPPER_EXIT),
            _ => Some(names::ALLOC_EXIT),
        }
    }
}

/// A function memtrace probes when the target has it.
#[derive(Debug, Clone, Copy)]
pub struct Function {
    pub symbol: &'static str,
    pub shape: Shape,
    /// A C allocator function, renamed by `--symbol-prefix` and looked up in `--allocator-lib`.
    pub c_api: bool,
}

const fn c(symbol: &'static str, shape: Shape) -> Function {
    Function { symbol, shape, c_api: true }
}

/// A function found under its own name in lookup order: C++ operators, mapping wrappers.
const fn cxx(symbol: &'static str, shape: Shape) -> Function {
    Function { symbol, shape, c_api: false }
}

/// Every function probed, C first. C++ operators are the Itanium-mangled names of
/// new/new[]/delete/delete[] in their plain, nothrow, sized and aligned forms.
pub const FUNCTIONS: &[Function] = &[
    c("malloc", Shape::Size),
    c("calloc", Shape::Calloc),
    c("realloc", Shape::Realloc),
    c("reallocarray", Shape::ReallocArray),
    c("posix_memalign", Shape::PosixMemalign),
    c("aligned_alloc", Shape::Aligned),
    c("memalign", Shape::Aligned),
    c("valloc", Shape::Size),
    c("pvalloc", Shape::Size),
    c("free", Shape::Free),
    cxx("_Znwm", Shape::Size),
    cxx("_Znam", Shape::Size),
    cxx("_ZnwmRKSt9nothrow_t", Shape::Size),
    cxx("_ZnamRKSt9nothrow_t", Shape::Size),
    cxx("_ZnwmSt11align_val_t", Shape::Size),
    cxx("_ZnamSt11align_val_t", Shape::Size),
    cxx("_ZnwmSt11align_val_tRKSt9nothrow_t", Shape::Size),
    cxx("_ZnamSt11align_val_tRKSt9nothrow_t", Shape::Size),
    cxx("_ZdlPv", Shape::Delete),
    cxx("_ZdaPv", Shape::Delete),
    cxx("_ZdlPvm", Shape::Delete),
    cxx("_ZdaPvm", Shape::Delete),
    cxx("_ZdlPvRKSt9nothrow_t", Shape::Delete),
    cxx("_ZdaPvRKSt9nothrow_t", Shape::Delete),
    cxx("_ZdlPvSt11align_val_t", Shape::Delete),
    cxx("_ZdaPvSt11align_val_t", Shape::Delete),
    cxx("_ZdlPvmSt11align_val_t", Shape::Delete),
    cxx("_ZdaPvmSt11align_val_t", Shape::Delete),
    cxx("_ZdlPvSt11align_val_tRKSt9nothrow_t", Shape::Delete),
    cxx("_ZdaPvSt11align_val_tRKSt9nothrow_t", Shape::Delete),
    // Not allocator functions, and not renamed by --symbol-prefix: the libc wrappers of the
    // mapping system calls, whichever object defines them.
    cxx("mmap", Shape::MappingWrapper),
    cxx("mremap", Shape::MappingWrapper),
    cxx("shmat", Shape::MappingWrapper),
    cxx("brk", Shape::MappingWrapper),
    cxx("sbrk", Shape::MappingWrapper),
];

/// The user's override of the automatic choice.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `--allocator-lib`: take the C functions from this object only.
    pub library: Option<PathBuf>,
    /// `--symbol-prefix`: the C functions are named PREFIX + name (jemalloc's `je_`).
    pub prefix: String,
    /// `--probe-at-entry`: probe every function at its first instruction, rather than on the
    /// first one the kernel emulates (see `probe_site`).
    pub probe_at_entry: bool,
}

/// An object file to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectFile {
    /// The path as the target sees it, for people.
    pub name: String,
    /// A path memtrace can open and attach to (through `/proc/PID/root` for a running process,
    /// so that containers and deleted files work).
    pub path: PathBuf,
}

/// One function to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePoint {
    /// The symbol as found (with any prefix).
    pub symbol: String,
    pub shape: Shape,
    pub object: ObjectFile,
    /// Where the probe goes: the function's entry, or the first instruction there the kernel
    /// emulates (`probe_site`).
    pub file_offset: u64,
}

/// Everything to probe for one target.
#[derive(Debug, Clone)]
pub struct Allocator {
    pub probes: Vec<ProbePoint>,
}

impl Allocator {
    /// The object that provides `malloc`, named for people.
    pub fn name(&self) -> &str {
        self.probes.first().map_or("", |probe| probe.object.name.as_str())
    }

    /// Whether an operator delete is probed (the kernel side then pairs it with `free`).
    pub fn has_deletes(&self) -> bool {
        self.probes.iter().any(|probe| probe.shape == Shape::Delete)
    }
}

#[derive(Debug, Error)]
pub enum AllocatorError {
    #[error("process {0} does not exist (check the PID with `ps -p {0}`)")]
    NoSuchProcess(u32),
    // The cause is in the message, not a source: printed as a chain it would show twice.
    #[error("cannot read the memory map of process {pid}: {cause}")]
    Maps { pid: u32, cause: io::Error },
    #[error(
        "no allocator found in {target}: no loaded object defines `{malloc}` and `{free}` (a static \
         binary stripped of its symbols cannot be traced; --allocator-lib and --symbol-prefix \
         choose one by hand)"
    )]
    NotFound { target: String, malloc: String, free: String },
    // The cause is in the message, not a source: printed as a chain it would show twice.
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: UntrustedError },
    #[error("{path} is not an ELF file memtrace can read: {reason}")]
    NotElf { path: String, reason: String },
    #[error(transparent)]
    Libraries(#[from] LibraryError),
}

/// Finds the allocator functions of a running process.
pub fn for_process(pid: u32, selection: &Selection) -> Result<Allocator, AllocatorError> {
    let maps = maps::read(pid).map_err(|cause| match cause.kind() {
        io::ErrorKind::NotFound => AllocatorError::NoSuchProcess(pid),
        _ => AllocatorError::Maps { pid, cause },
    })?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let preloads = preloaded_libraries(pid);
    let mut objects: Vec<ObjectFile> = Vec::new();
    for mapping in maps.iter().filter(|mapping| mapping.is_file() && mapping.executable) {
        let Some(name) = &mapping.path else { continue };
        if objects.iter().any(|seen| &seen.name == name) {
            continue;
        }
        let path =
            if mapping.deleted { mapping.map_file(pid) } else { PathBuf::from(format!("/proc/{pid}/root{name}")) };
        objects.push(ObjectFile { name: name.clone(), path });
    }
    // Lookup order: the executable, preloaded libraries, the rest, libc last.
    let rank = |object: &ObjectFile| {
        if exe.as_deref().is_some_and(|exe| exe.to_str() == Some(object.name.as_str())) {
            0
        } else if preloads.iter().any(|preload| same_library(preload, &object.name)) {
            1
        } else if is_libc(&object.name) {
            3
        } else {
            2
        }
    };
    objects.sort_by_key(rank); // stable: maps order within a rank
    let library = selection.library.as_ref().map(|library| {
        let wanted = library.display().to_string();
        objects
            .iter()
            .find(|object| same_library(&wanted, &object.name))
            .cloned()
            .unwrap_or(ObjectFile { name: wanted, path: library.clone() })
    });
    let mut allocator = resolve(&objects, library.as_ref(), &selection.prefix, &format!("process {pid}"))?;
    if !selection.probe_at_entry {
        place(&mut allocator);
    }
    Ok(allocator)
}

/// Finds the allocator functions a command will use once started, without running it (nor
/// anything else: see `libraries`).
pub fn for_command(
    program: &Path,
    env: &[(OsString, OsString)],
    selection: &Selection,
) -> Result<Allocator, AllocatorError> {
    let program = script_interpreter(program)?.unwrap_or_else(|| program.to_path_buf());
    let metadata = std::fs::metadata(&program).ok();
    // Set-user-ID or set-group-ID to someone else: the loader runs in secure mode.
    // SAFETY: getuid and getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let secure = metadata.is_some_and(|metadata| {
        (metadata.mode() & libc::S_ISUID != 0 && metadata.uid() != uid)
            || (metadata.mode() & libc::S_ISGID != 0 && metadata.gid() != gid)
    });
    let target = libraries::Target {
        root: PathBuf::from("/"),
        program: program.clone(),
        program_path: program.canonicalize().ok().map(|path| path.into_os_string().into_vec()),
        cwd: std::env::current_dir().ok().map(|path| path.into_os_string().into_vec()),
        env: env.to_vec(),
        secure,
    };
    with_libraries(&target, selection)
}

/// Finds the allocator functions of a process stopped right after an exec, before its new
/// image runs: its libraries as its loader will find them, inside its root directory.
pub fn for_exec(pid: u32, selection: &Selection) -> Result<Allocator, AllocatorError> {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    // Paths the kernel shows memtrace are relative to memtrace's root: take the target's own
    // root off the front to get them as the target sees them.
    let seen_root = std::fs::read_link(&root).ok().map(|path| path.into_os_string().into_vec());
    let inside = |link: String| {
        let path = std::fs::read_link(link).ok()?.into_os_string().into_vec();
        match seen_root.as_deref() {
            Some(b"/") | None => Some(path),
            Some(prefix) => path.strip_prefix(prefix).filter(|rest| rest.first() == Some(&b'/')).map(<[u8]>::to_vec),
        }
    };
    let target = libraries::Target {
        program: PathBuf::from(format!("/proc/{pid}/exe")),
        program_path: inside(format!("/proc/{pid}/exe")),
        cwd: inside(format!("/proc/{pid}/cwd")),
        env: environment_of(pid),
        secure: auxv_secure(pid),
        root,
    };
    with_libraries(&target, selection)
}

/// The program and the libraries it will load, then the functions they provide.
fn with_libraries(target: &libraries::Target, selection: &Selection) -> Result<Allocator, AllocatorError> {
    let name = target.program.display().to_string();
    let mut objects = vec![ObjectFile { name: name.clone(), path: target.program.clone() }];
    objects.extend(
        libraries::load_order(target)?
            .into_iter()
            .map(|library| ObjectFile { name: library.name.display().to_string(), path: library.path }),
    );
    let library = selection
        .library
        .as_ref()
        .map(|library| ObjectFile { name: library.display().to_string(), path: library.clone() });
    let mut allocator = resolve(&objects, library.as_ref(), &selection.prefix, &name)?;
    if !selection.probe_at_entry {
        place(&mut allocator);
    }
    Ok(allocator)
}

/// Picks, for each function, the first object in lookup order that defines it.
fn resolve(
    objects: &[ObjectFile],
    library: Option<&ObjectFile>,
    prefix: &str,
    target: &str,
) -> Result<Allocator, AllocatorError> {
    let mut symbol_tables: HashMap<PathBuf, HashMap<String, u64>> = HashMap::new();
    let mut probes: Vec<ProbePoint> = Vec::new();
    let mut probed_addresses = HashSet::new();
    for function in FUNCTIONS {
        let symbol = if function.c_api { format!("{prefix}{}", function.symbol) } else { function.symbol.to_owned() };
        let candidates: Vec<&ObjectFile> = match library {
            Some(library) if function.c_api => vec![library],
            _ => objects.iter().filter(|object| !is_dynamic_loader(&object.name)).collect(),
        };
        for object in candidates {
            if !symbol_tables.contains_key(&object.path) {
                let table = match function_offsets(&object.path, prefix) {
                    Ok(table) => table,
                    // A library the loader listed that is not ELF (never expected) cannot
                    // provide functions; the program itself and --allocator-lib must be ELF.
                    Err(error) if object.name != objects[0].name && library != Some(object) => {
                        log::debug!("skipping {}: {error}", object.name);
                        HashMap::new()
                    }
                    Err(error) => return Err(error),
                };
                symbol_tables.insert(object.path.clone(), table);
            }
            let Some(&file_offset) = symbol_tables[&object.path].get(&symbol) else { continue };
            // Symbols that alias one address are probed once, by the first of them.
            if probed_addresses.insert((object.path.clone(), file_offset)) {
                probes.push(ProbePoint {
                    symbol: symbol.clone(),
                    shape: function.shape,
                    object: object.clone(),
                    file_offset,
                });
            } else {
                log::debug!("{symbol} in {} aliases a function already probed", object.name);
            }
            break;
        }
    }
    let found = |name: &str| probes.iter().any(|probe| probe.symbol == format!("{prefix}{name}"));
    if !found("malloc") || !found("free") {
        return Err(AllocatorError::NotFound {
            target: target.to_owned(),
            malloc: format!("{prefix}malloc"),
            free: format!("{prefix}free"),
        });
    }
    Ok(Allocator { probes })
}

/// Moves each probe onto the first instruction the kernel emulates, where the function's code
/// allows (see `probe_site`); `-v` says where each went.
fn place(allocator: &mut Allocator) {
    use std::os::unix::fs::FileExt;
    for point in &mut allocator.probes {
        let mut prologue = [0u8; probe_site::PROLOGUE_BYTES];
        let opened = untrusted::open(&point.object.path, untrusted::Links::Follow);
        let Ok(read) =
            opened.map_err(|_| ()).and_then(|file| file.read_at(&mut prologue, point.file_offset).map_err(|_| ()))
        else {
            continue;
        };
        if let Some(placed) = probe_site::emulated_probe_point(&prologue[..read]) {
            log::info!(
                "probing {} in {} {} bytes past its entry, on `{}` (emulated by the kernel; the instructions before it are single-stepped otherwise)",
                point.symbol,
                point.object.name,
                placed.offset,
                placed.instruction
            );
            point.file_offset += placed.offset;
        }
    }
}

fn file_name(path: &str) -> &str {
    Path::new(path).file_name().and_then(|name| name.to_str()).unwrap_or(path)
}

/// Whether `path` is the dynamic loader (ld.so).
pub fn is_dynamic_loader(path: &str) -> bool {
    let name = file_name(path);
    name.starts_with("ld-linux") || name.starts_with("ld-musl") || name == "ld.so"
}

/// Whether `path` is the C library (glibc, whose threads lived in libpthread before 2.34).
/// musl's libc is its dynamic loader too, whose mappings are set apart as the loader's.
pub fn is_c_library(path: &str) -> bool {
    is_libc(path) || file_name(path).starts_with("libpthread.so")
}

fn is_libc(path: &str) -> bool {
    let name = file_name(path);
    name.starts_with("libc.so") || name.starts_with("libc-")
}

/// Whether `wanted` (a path or a bare file name) names the object at `path`.
fn same_library(wanted: &str, path: &str) -> bool {
    wanted == path || (!wanted.contains('/') && file_name(path) == wanted) || file_name(wanted) == file_name(path)
}

/// The `LD_PRELOAD` entries of a running process.
fn preloaded_libraries(pid: u32) -> Vec<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    environ
        .split(|&byte| byte == 0)
        .find_map(|entry| entry.strip_prefix(b"LD_PRELOAD="))
        .map(|value| {
            String::from_utf8_lossy(value)
                .split([' ', ':'])
                .filter(|entry| !entry.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Most bytes read from one object while looking up its symbols (a large C++ library's symbol
/// tables take tens of megabytes).
const OBJECT_READ_BUDGET: u64 = 512 << 20;

/// File offsets of the probed functions an object defines (dynamic symbols first, then the
/// full symbol table, as a static binary has only that), keyed by symbol name.
pub fn function_offsets(path: &Path, prefix: &str) -> Result<HashMap<String, u64>, AllocatorError> {
    let display = || path.display().to_string();
    let file = untrusted::open(path, untrusted::Links::Follow)
        .map_err(|cause| AllocatorError::Read { path: display(), cause })?;
    let cache = untrusted::CappedRead::new(file, OBJECT_READ_BUDGET);
    let elf = object::File::parse(&cache)
        .map_err(|error| AllocatorError::NotElf { path: display(), reason: error.to_string() })?;
    let wanted: HashSet<String> = FUNCTIONS
        .iter()
        .map(
            |function| if function.c_api { format!("{prefix}{}", function.symbol) } else { function.symbol.to_owned() },
        )
        .collect();
    let mut offsets = HashMap::new();
    for symbol in elf.dynamic_symbols().chain(elf.symbols()) {
        if !symbol.is_definition() || symbol.kind() != SymbolKind::Text {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        if !wanted.contains(name) || offsets.contains_key(name) {
            continue;
        }
        if let Some(offset) = file_offset(&elf, symbol.address()) {
            offsets.insert(name.to_owned(), offset);
        }
    }
    Ok(offsets)
}

/// Translates an ELF virtual address into an offset in the file, through its loadable segments.
fn file_offset<'data, R: object::ReadRef<'data>>(elf: &object::File<'data, R>, address: u64) -> Option<u64> {
    // The segments come from the file: any sum may overflow.
    elf.segments().find_map(|segment| {
        let (offset, size) = segment.file_range();
        let into = address.checked_sub(segment.address()).filter(|&into| into < size)?;
        offset.checked_add(into)
    })
}

/// For a `#!` script, the interpreter the kernel will run instead.
fn script_interpreter(program: &Path) -> Result<Option<PathBuf>, AllocatorError> {
    let mut head = [0u8; 256];
    let read = untrusted::open(program, untrusted::Links::Follow)
        .and_then(|mut file| file.read(&mut head).map_err(UntrustedError::Io))
        .map_err(|cause| AllocatorError::Read { path: program.display().to_string(), cause })?;
    let head = &head[..read];
    let Some(line) = head.strip_prefix(b"#!") else { return Ok(None) };
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    Ok(line.split_whitespace().next().map(PathBuf::from))
}

/// A process's environment, from /proc/PID/environ (as its exec set it).
fn environment_of(pid: u32) -> Vec<(OsString, OsString)> {
    // The kernel bounds it (ARG_MAX); the cap only guards against a surprise.
    let environ = untrusted::read(Path::new(&format!("/proc/{pid}/environ")), untrusted::Links::Follow, 16 << 20)
        .unwrap_or_default();
    environ
        .split(|&byte| byte == 0)
        .filter_map(|entry| {
            let split = entry.iter().position(|&byte| byte == b'=')?;
            let (key, value) = entry.split_at(split);
            Some((OsString::from_vec(key.to_vec()), OsString::from_vec(value[1..].to_vec())))
        })
        .collect()
}

/// Whether the kernel started the process's image in secure mode (`AT_SECURE` in its auxiliary
/// vector: set-user-ID, set-group-ID or file capabilities), in which its loader ignores the
/// environment's paths.
fn auxv_secure(pid: u32) -> bool {
    const AT_SECURE: u64 = 23;
    let auxv = std::fs::read(format!("/proc/{pid}/auxv")).unwrap_or_default();
    auxv.chunks_exact(16).any(|pair| {
        let word = |at: usize| u64::from_le_bytes(pair[at..at + 8].try_into().unwrap_or([0; 8]));
        word(0) == AT_SECURE && word(8) != 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libc_provides_the_c_api_once_per_address() {
        let maps = maps::read(std::process::id()).expect("own maps");
        let libc = maps
            .iter()
            .filter_map(|mapping| mapping.path.as_deref())
            .find(|path| is_libc(path))
            .expect("the test binary maps libc");
        let object = ObjectFile { name: libc.to_owned(), path: libc.into() };
        let allocator = resolve(&[object], None, "", "libc").expect("libc has an allocator");
        let symbols: Vec<&str> = allocator.probes.iter().map(|probe| probe.symbol.as_str()).collect();
        for expected in ["malloc", "calloc", "realloc", "reallocarray", "posix_memalign", "valloc", "pvalloc", "free"] {
            assert!(symbols.contains(&expected), "{expected} missing from {symbols:?}");
        }
        let mut offsets: Vec<u64> = allocator.probes.iter().map(|probe| probe.file_offset).collect();
        offsets.sort();
        offsets.dedup();
        assert_eq!(offsets.len(), allocator.probes.len(), "an address probed twice: {allocator:?}");
        assert_eq!(allocator.name(), libc);
        assert!(!allocator.has_deletes());
    }

    #[test]
    fn libraries_match_by_path_or_file_name() {
        assert!(same_library("libjemalloc.so.2", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"));
        assert!(same_library(
            "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
            "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
        ));
        assert!(!same_library("libjemalloc.so.2", "/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(is_dynamic_loader("/lib64/ld-linux-x86-64.so.2"));
        assert!(is_libc("/lib/x86_64-linux-gnu/libc.so.6"));
    }
}
