//! Which object provides the allocator a target uses, and where its functions are in that file.
//!
//! A process gets `malloc` from the first object in symbol-lookup order that defines it: the
//! executable (a static binary), then preloaded libraries and dependencies (jemalloc, tcmalloc),
//! then libc. For a running process that order is read from `/proc/PID/maps`; for a command not
//! started yet, the dynamic loader lists it (`ld.so --list`, what `ldd` does, which loads the
//! libraries but runs none of the program's code).
use std::{
    collections::HashMap,
    ffi::OsString,
    fs::File,
    io::{self, Read},
    path::{Path, PathBuf},
    process::Command,
};

use object::{Object, ObjectSegment, ObjectSymbol, ReadCache, SymbolKind, read::elf::ProgramHeader};
use thiserror::Error;

use crate::procmaps;

/// An allocator function memtrace probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllocatorFunction {
    Malloc,
    Calloc,
    Realloc,
    Free,
}

impl AllocatorFunction {
    pub const ALL: [AllocatorFunction; 4] = [Self::Malloc, Self::Calloc, Self::Realloc, Self::Free];

    pub fn symbol(self) -> &'static str {
        match self {
            Self::Malloc => "malloc",
            Self::Calloc => "calloc",
            Self::Realloc => "realloc",
            Self::Free => "free",
        }
    }
}

/// A function to probe, as a file offset in the allocator object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePoint {
    pub function: AllocatorFunction,
    pub file_offset: u64,
}

/// The object file that provides the target's allocator.
#[derive(Debug, Clone)]
pub struct AllocatorObject {
    /// The path as the target sees it, for people.
    pub name: String,
    /// A path memtrace can open and attach to (through `/proc/PID/root` for a running process, so
    /// that containers and deleted files work).
    pub path: PathBuf,
    pub probes: Vec<ProbePoint>,
}

#[derive(Debug, Error)]
pub enum AllocatorError {
    #[error("process {0} does not exist (check the PID with `ps -p {0}`)")]
    NoSuchProcess(u32),
    #[error("cannot read the memory map of process {pid}: {source}")]
    Maps { pid: u32, source: io::Error },
    #[error(
        "no allocator found in {target}: no loaded object defines `malloc` (a static binary \
         stripped of its symbols cannot be traced)"
    )]
    NotFound { target: String },
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path} is not an ELF file memtrace can read: {reason}")]
    NotElf { path: String, reason: String },
    #[error("{path} defines malloc but not {symbol}, so it is not a usable allocator")]
    Incomplete { path: String, symbol: &'static str },
    #[error("the dynamic loader {loader} could not list the libraries of {program}: {detail}")]
    LoaderList { loader: String, program: String, detail: String },
}

/// Finds the allocator of a running process.
pub fn for_process(pid: u32) -> Result<AllocatorObject, AllocatorError> {
    let maps = procmaps::read(pid).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => AllocatorError::NoSuchProcess(pid),
        _ => AllocatorError::Maps { pid, source },
    })?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    // (path as the process sees it, path memtrace opens), executable first, each object once.
    let mut objects: Vec<(String, PathBuf)> = Vec::new();
    for mapping in maps.iter().filter(|mapping| mapping.is_file() && mapping.executable) {
        let Some(path) = &mapping.path else { continue };
        if objects.iter().any(|(seen, _)| seen == path) {
            continue;
        }
        let openable = if mapping.deleted {
            mapping.map_file(pid)
        } else {
            PathBuf::from(format!("/proc/{pid}/root{path}"))
        };
        let is_exe = exe.as_deref().is_some_and(|exe| exe.to_str() == Some(path.as_str()));
        if is_exe {
            objects.insert(0, (path.clone(), openable));
        } else {
            objects.push((path.clone(), openable));
        }
    }
    choose(objects, &format!("process {pid}"))
}

/// Finds the allocator a command will use once started, without running it.
pub fn for_command(
    program: &Path,
    env: &[(OsString, OsString)],
) -> Result<AllocatorObject, AllocatorError> {
    let program = script_interpreter(program)?.unwrap_or_else(|| program.to_path_buf());
    let display = program.display().to_string();
    let mut objects = vec![(display.clone(), program.clone())];
    if let Some(loader) = elf_interpreter(&program)? {
        objects.extend(
            loader_list(&loader, &program, env)?.into_iter().map(|path| (path.clone(), path.into())),
        );
    }
    choose(objects, &display)
}

/// Picks the first object, in lookup order, that defines `malloc`, and resolves its functions.
fn choose(
    objects: Vec<(String, PathBuf)>,
    target: &str,
) -> Result<AllocatorObject, AllocatorError> {
    for (name, path) in objects {
        if is_dynamic_loader(&name) {
            continue; // its private minimal malloc is not what the program calls
        }
        let symbols = function_offsets(&path)?;
        if !symbols.contains_key(AllocatorFunction::Malloc.symbol()) {
            continue;
        }
        let mut probes = Vec::new();
        for function in AllocatorFunction::ALL {
            let Some(&file_offset) = symbols.get(function.symbol()) else {
                return Err(AllocatorError::Incomplete { path: name, symbol: function.symbol() });
            };
            probes.push(ProbePoint { function, file_offset });
        }
        return Ok(AllocatorObject { name, path, probes });
    }
    Err(AllocatorError::NotFound { target: target.to_owned() })
}

fn is_dynamic_loader(path: &str) -> bool {
    Path::new(path)
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with("ld-linux") || name.starts_with("ld-musl") || name == "ld.so")
}

/// File offsets of the allocator functions an object defines (dynamic symbols first, then the
/// full symbol table, as a static binary has only that).
pub fn function_offsets(path: &Path) -> Result<HashMap<&'static str, u64>, AllocatorError> {
    let display = || path.display().to_string();
    let file = File::open(path).map_err(|source| AllocatorError::Read { path: display(), source })?;
    let cache = ReadCache::new(file);
    let elf = object::File::parse(&cache)
        .map_err(|error| AllocatorError::NotElf { path: display(), reason: error.to_string() })?;
    let mut offsets = HashMap::new();
    for symbol in elf.dynamic_symbols().chain(elf.symbols()) {
        if !symbol.is_definition() || symbol.kind() != SymbolKind::Text {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        let Some(function) = AllocatorFunction::ALL.into_iter().find(|f| f.symbol() == name) else {
            continue;
        };
        if offsets.contains_key(function.symbol()) {
            continue;
        }
        if let Some(offset) = file_offset(&elf, symbol.address()) {
            offsets.insert(function.symbol(), offset);
        }
    }
    Ok(offsets)
}

/// Translates an ELF virtual address into an offset in the file, through its loadable segments.
fn file_offset<'data, R: object::ReadRef<'data>>(elf: &object::File<'data, R>, address: u64) -> Option<u64> {
    elf.segments().find_map(|segment| {
        let (offset, size) = segment.file_range();
        let start = segment.address();
        (start..start + size).contains(&address).then(|| offset + (address - start))
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
    fn libc_defines_every_allocator_function_at_distinct_offsets() {
        let maps = procmaps::read(std::process::id()).expect("own maps");
        let libc = maps
            .iter()
            .filter_map(|mapping| mapping.path.as_deref())
            .find(|path| path.contains("libc.so"))
            .expect("the test binary maps libc");
        let offsets = function_offsets(Path::new(libc)).expect("libc parses");
        let mut seen: Vec<u64> = AllocatorFunction::ALL
            .iter()
            .map(|function| offsets[function.symbol()])
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 4, "{offsets:?}");
    }

    #[test]
    fn the_dynamic_loader_is_never_the_allocator() {
        assert!(is_dynamic_loader("/lib64/ld-linux-x86-64.so.2"));
        assert!(!is_dynamic_loader("/usr/lib/x86_64-linux-gnu/libc.so.6"));
    }
}
