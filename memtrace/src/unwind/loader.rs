//! `run` mode: where a process's dynamic loader announces the objects it mapped, before their
//! code runs: `_dl_debug_state`, which debuggers break on (exported by glibc's `ld.so`). The
//! kernel's `loader_mapped` program, attached there, stops the thread while its new code is
//! unknown to the walk; memtrace applies the mappings and resumes it (see `Unwinder::track`).
use std::{collections::HashSet, fs::File, path::PathBuf};

use object::{Object, ObjectSegment, ObjectSymbol};

use crate::target::maps as procmaps;

const SYMBOL: &str = "_dl_debug_state";

/// The file (as memtrace opens it) and offset in it of `_dl_debug_state`, in the objects `pid`
/// maps: at its exec stop, the program and its loader. `None` for a program without one
/// (static, or another loader).
pub fn debug_state_point(pid: u32) -> Option<(PathBuf, u64)> {
    let maps = procmaps::read(pid).ok()?;
    let mut seen = HashSet::new();
    for mapping in maps.iter().filter(|mapping| mapping.executable && mapping.is_file()) {
        let Some(path) = &mapping.path else { continue };
        if !seen.insert(path.clone()) {
            continue;
        }
        // Through the process's root: a process in another mount namespace sees its own files.
        let file_path = PathBuf::from(format!("/proc/{pid}/root{path}"));
        if let Some(offset) = file_offset_of(&file_path, SYMBOL) {
            return Some((file_path, offset));
        }
    }
    None
}

/// The file offset of the function `name`, by the dynamic symbol table.
fn file_offset_of(path: &std::path::Path, name: &str) -> Option<u64> {
    let file = File::open(path).ok()?;
    let cache = object::ReadCache::new(file);
    let elf = object::File::parse(&cache).ok()?;
    let symbol = elf.dynamic_symbols().find(|symbol| symbol.is_definition() && symbol.name() == Ok(name))?;
    let address = symbol.address();
    elf.segments().find_map(|segment| {
        let (offset, size) = segment.file_range();
        let start = segment.address();
        (start..start.checked_add(size)?).contains(&address).then(|| offset + (address - start))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_loaders_announcement_in_this_process() {
        let (path, offset) = debug_state_point(std::process::id()).expect("memtrace runs under glibc's ld.so");
        assert!(path.to_string_lossy().contains("ld-linux"), "{}", path.display());
        assert!(offset > 0);
    }
}
