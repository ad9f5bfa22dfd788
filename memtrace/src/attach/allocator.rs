//! Which objects provide the allocator functions a target calls, and where they are in those
//! files.
//!
//! A process gets each function from the first object in symbol-lookup order that defines it:
//! the executable (a static binary, or one linking an allocator statically), preloaded
//! libraries, its dependencies (jemalloc, tcmalloc, mimalloc, libstdc++ for operator new), then
//! libc. For a command not started yet, the dynamic loader lists that order (`ld.so --list`,
//! what `ldd` does: it loads the libraries but runs none of the program's code); for a running
//! process, `/proc/PID/maps` and its `LD_PRELOAD` give it.
use std::{
    collections::{HashMap, HashSet},
    ffi::OsString,
    fs::File,
    io::{self, Read},
    path::{Path, PathBuf},
    process::Command,
};

use memtrace_common::names;
use object::{Object, ObjectSegment, ObjectSymbol, ReadCache, SymbolKind, read::elf::ProgramHeader};
use thiserror::Error;

use crate::{attach::probe_site, target::maps};

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
    /// first one the kernel emulates (see `placement`).
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
    /// emulates (`placement`).
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
    #[error("cannot read the memory map of process {pid}: {source}")]
    Maps { pid: u32, source: io::Error },
    #[error(
        "no allocator found in {target}: no loaded object defines `{malloc}` and `{free}` (a static \
         binary stripped of its symbols cannot be traced; --allocator-lib and --symbol-prefix \
         choose one by hand)"
    )]
    NotFound { target: String, malloc: String, free: String },
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path} is not an ELF file memtrace can read: {reason}")]
    NotElf { path: String, reason: String },
    #[error("the dynamic loader {loader} could not list the libraries of {program}: {detail}")]
    LoaderList { loader: String, program: String, detail: String },
}

/// Finds the allocator functions of a running process.
pub fn for_process(pid: u32, selection: &Selection) -> Result<Allocator, AllocatorError> {
    let maps = maps::read(pid).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => AllocatorError::NoSuchProcess(pid),
        _ => AllocatorError::Maps { pid, source },
    })?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let preloads = preloaded_libraries(pid);
    let mut objects: Vec<ObjectFile> = Vec::new();
    for mapping in maps.iter().filter(|mapping| mapping.is_file() && mapping.executable) {
        let Some(name) = &mapping.path else { continue };
        if objects.iter().any(|seen| &seen.name == name) {
            continue;
        }
        let path = if mapping.deleted {
            mapping.map_file(pid)
        } else {
            PathBuf::from(format!("/proc/{pid}/root{name}"))
        };
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

/// Finds the allocator functions a command will use once started, without running it.
pub fn for_command(
    program: &Path,
    env: &[(OsString, OsString)],
    selection: &Selection,
) -> Result<Allocator, AllocatorError> {
    let program = script_interpreter(program)?.unwrap_or_else(|| program.to_path_buf());
    let name = program.display().to_string();
    let mut objects = vec![ObjectFile { name: name.clone(), path: program.clone() }];
    if let Some(loader) = elf_interpreter(&program)? {
        objects.extend(
            loader_list(&loader, &program, env)?
                .into_iter()
                .map(|path| ObjectFile { name: path.clone(), path: path.into() }),
        );
    }
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
/// allows (see `placement`); `-v` says where each went.
fn place(allocator: &mut Allocator) {
    use std::os::unix::fs::FileExt;
    for point in &mut allocator.probes {
        let mut prologue = [0u8; probe_site::PROLOGUE_BYTES];
        let Ok(read) = File::open(&point.object.path).and_then(|file| file.read_at(&mut prologue, point.file_offset))
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

/// File offsets of the probed functions an object defines (dynamic symbols first, then the
/// full symbol table, as a static binary has only that), keyed by symbol name.
pub fn function_offsets(path: &Path, prefix: &str) -> Result<HashMap<String, u64>, AllocatorError> {
    let display = || path.display().to_string();
    let file = File::open(path).map_err(|source| AllocatorError::Read { path: display(), source })?;
    let cache = ReadCache::new(file);
    let elf = object::File::parse(&cache)
        .map_err(|error| AllocatorError::NotElf { path: display(), reason: error.to_string() })?;
    let wanted: HashSet<String> = FUNCTIONS
        .iter()
        .map(|function| if function.c_api { format!("{prefix}{}", function.symbol) } else { function.symbol.to_owned() })
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
    let read = File::open(program)
        .and_then(|mut file| file.read(&mut head))
        .map_err(|source| AllocatorError::Read { path: program.display().to_string(), source })?;
    let head = &head[..read];
    let Some(line) = head.strip_prefix(b"#!") else { return Ok(None) };
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    Ok(line.split_whitespace().next().map(PathBuf::from))
}

/// The `PT_INTERP` of a dynamically linked executable; `None` for a static one.
fn elf_interpreter(program: &Path) -> Result<Option<PathBuf>, AllocatorError> {
    let display = || program.display().to_string();
    let data = std::fs::read(program).map_err(|source| AllocatorError::Read { path: display(), source })?;
    let not_elf = |reason: String| AllocatorError::NotElf { path: display(), reason };
    let elf = object::read::elf::ElfFile64::<object::Endianness>::parse(&*data)
        .map_err(|error| not_elf(error.to_string()))?;
    let endian = elf.endian();
    for header in elf.elf_program_headers() {
        if header.p_type(endian) == object::elf::PT_INTERP {
            let bytes = header.data(endian, &*data).map_err(|_| not_elf("bad PT_INTERP".into()))?;
            let path = bytes.split(|&b| b == 0).next().unwrap_or_default();
            return Ok(Some(PathBuf::from(String::from_utf8_lossy(path).into_owned())));
        }
    }
    Ok(None)
}

/// The libraries the dynamic loader would load for `program`, in load order.
fn loader_list(
    loader: &Path,
    program: &Path,
    env: &[(OsString, OsString)],
) -> Result<Vec<String>, AllocatorError> {
    let failed = |detail: String| AllocatorError::LoaderList {
        loader: loader.display().to_string(),
        program: program.display().to_string(),
        detail,
    };
    let output = Command::new(loader)
        .arg("--list")
        .arg(program)
        .env_clear()
        .envs(env.iter().map(|(key, value)| (key, value)))
        .output()
        .map_err(|error| failed(error.to_string()))?;
    if !output.status.success() {
        return Err(failed(String::from_utf8_lossy(&output.stderr).trim().to_owned()));
    }
    Ok(parse_loader_list(&String::from_utf8_lossy(&output.stdout)))
}

/// Parses `ld.so --list` output: `name => /path (0x...)` or `/path (0x...)` per line.
fn parse_loader_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = line.split_once("=> ").map_or(line, |(_, path)| path);
            let path = path.rsplit_once(" (").map_or(path, |(path, _)| path);
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_list_keeps_paths_in_order() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc)\n\
                    \t/usr/lib/libjemalloc.so.2 (0x00007f01)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f00)\n\
                    \tlibmissing.so => not found\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f02)\n";
        assert_eq!(
            parse_loader_list(text),
            ["/usr/lib/libjemalloc.so.2", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]
        );
    }

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
        assert!(same_library("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"));
        assert!(!same_library("libjemalloc.so.2", "/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(is_dynamic_loader("/lib64/ld-linux-x86-64.so.2"));
        assert!(is_libc("/lib/x86_64-linux-gnu/libc.so.6"));
    }
}
