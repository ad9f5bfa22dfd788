//! Separate debug info for stripped modules, found the way GDB finds it: by build-id under each
//! debug directory (`DIR/.build-id/xx/yyyy….debug`), then by the `.gnu_debuglink` name (with its
//! CRC checked) beside the module, in the module's `.debug/`, and under each debug directory
//! followed by the module's own directory.
use std::{
    fs::File,
    io::Read,
    path::{Path, PathBuf},
};

use object::Object;

/// Where debug files are looked for when none is given: Debian's `-dbgsym` packages install
/// there.
pub const DEFAULT_DEBUG_DIR: &str = "/usr/lib/debug";

/// What a module says about its separate debug file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DebugLinks {
    pub build_id: Option<Vec<u8>>,
    /// The `.gnu_debuglink` file name and the CRC-32 of that file.
    pub debuglink: Option<(String, u32)>,
}

impl DebugLinks {
    /// Reads the build-id note and the debuglink section of a parsed module.
    pub fn read<'data, R: object::ReadRef<'data>>(elf: &object::File<'data, R>) -> Self {
        Self {
            build_id: elf.build_id().ok().flatten().map(<[u8]>::to_vec),
            debuglink: elf
                .gnu_debuglink()
                .ok()
                .flatten()
                .map(|(name, crc)| (String::from_utf8_lossy(name).into_owned(), crc)),
        }
    }
}

/// The separate debug file of a module at `module_path` (the path the process mapped it from),
/// if there is one.
pub fn find(links: &DebugLinks, module_path: &str, debug_dirs: &[PathBuf]) -> Option<PathBuf> {
    if let Some(build_id) = links.build_id.as_deref().filter(|id| id.len() >= 2) {
        let hex: String = build_id.iter().map(|byte| format!("{byte:02x}")).collect();
        for dir in debug_dirs {
            let candidate = dir.join(".build-id").join(&hex[..2]).join(format!("{}.debug", &hex[2..]));
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let (name, crc) = links.debuglink.as_ref()?;
    let module_dir = Path::new(module_path).parent()?;
    let mut candidates = vec![module_dir.join(name), module_dir.join(".debug").join(name)];
    for dir in debug_dirs {
        let relative = module_dir.strip_prefix("/").unwrap_or(module_dir);
        candidates.push(dir.join(relative).join(name));
    }
    // Beside the module, the debuglink name may be the module itself when it was not
    // stripped: the CRC tells the right file.
    candidates.into_iter().find(|candidate| candidate.is_file() && crc32_of(candidate) == Some(*crc))
}

/// CRC-32 of a whole file, as `.gnu_debuglink` records it (the zlib/gzip CRC).
fn crc32_of(path: &Path) -> Option<u32> {
    let mut file = File::open(path).ok()?;
    let mut crc = flate2::Crc::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = file.read(&mut buffer).ok()?;
        if read == 0 {
            return Some(crc.sum());
        }
        crc.update(&buffer[..read]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_id_path_and_checked_debuglink() {
        let dir = tempfile::tempdir().unwrap();
        let debug_dir = dir.path().join("debug");
        let by_id = debug_dir.join(".build-id/ab");
        std::fs::create_dir_all(&by_id).unwrap();
        std::fs::write(by_id.join("cdef.debug"), b"x").unwrap();
        let links = DebugLinks { build_id: Some(vec![0xab, 0xcd, 0xef]), debuglink: None };
        let module = dir.path().join("bin/prog");
        assert_eq!(find(&links, module.to_str().unwrap(), std::slice::from_ref(&debug_dir)), Some(by_id.join("cdef.debug")));

        std::fs::create_dir_all(dir.path().join("bin/.debug")).unwrap();
        let linked = dir.path().join("bin/.debug/prog.debug");
        std::fs::write(&linked, b"debug info").unwrap();
        let crc = crc32_of(&linked).unwrap();
        let links = DebugLinks { build_id: None, debuglink: Some(("prog.debug".into(), crc)) };
        assert_eq!(find(&links, module.to_str().unwrap(), std::slice::from_ref(&debug_dir)), Some(linked));
        // A file of that name with another CRC is not it.
        let links = DebugLinks { build_id: None, debuglink: Some(("prog.debug".into(), crc ^ 1)) };
        assert_eq!(find(&links, module.to_str().unwrap(), &[debug_dir]), None);
    }
}
