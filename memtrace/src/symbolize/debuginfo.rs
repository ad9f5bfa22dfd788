//! Separate debug info for stripped modules, found the way GDB finds it: by build-id under each
//! debug directory (`DIR/.build-id/xx/yyyy….debug`), then by the `.gnu_debuglink` name (with its
//! CRC checked) beside the module, in the module's `.debug/`, and under each debug directory
//! followed by the module's own directory.
use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use object::Object;

use crate::untrusted::{self, Links};

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

/// The most memtrace reads of a separate debug file to check its CRC: larger than any debug
/// file a distribution ships, small enough that a planted file cannot keep it reading forever.
pub const MAX_DEBUG_FILE_BYTES: u64 = 8 << 30;

/// A separate debug file, opened: `path` is where it was found (for messages), `file` the
/// descriptor every later read goes through, so that what was checked is what is read.
#[derive(Debug)]
pub struct DebugFile {
    pub path: PathBuf,
    pub file: File,
}

impl DebugFile {
    /// A path that opens this very file (for readers that take paths, like addr2line's).
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

/// A build ID as it is written: lowercase hex, two digits a byte.
pub fn hex(build_id: &[u8]) -> String {
    build_id.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The separate debug file of a module at `module_path` (the path the process mapped it from),
/// if there is one.
///
/// The module and its debuglink name come from the target, so the name must be a plain file
/// name (no `/`, not `.` or `..`): an absolute or climbing name would have memtrace, as root,
/// read any file on the machine. Beside the module, where the target's user may plant files,
/// symbolic links are not followed; under the debug directories, which the user of memtrace
/// chose, they are (distributions link `.build-id` entries to the real files).
pub fn find(links: &DebugLinks, module_path: &str, debug_dirs: &[PathBuf]) -> Option<DebugFile> {
    if let Some(build_id) = links.build_id.as_deref().filter(|id| id.len() >= 2) {
        let hex = hex(build_id);
        for dir in debug_dirs {
            let path = dir.join(".build-id").join(&hex[..2]).join(format!("{}.debug", &hex[2..]));
            if let Ok(file) = untrusted::open(&path, Links::Follow) {
                return Some(DebugFile { path, file });
            }
        }
    }
    let (name, crc) = links.debuglink.as_ref()?;
    if !is_plain_file_name(name) {
        log::debug!("ignoring the debuglink {name:?} of {module_path}: not a plain file name");
        return None;
    }
    let module_dir = Path::new(module_path).parent()?;
    let mut candidates =
        vec![(module_dir.join(name), Links::Refuse), (module_dir.join(".debug").join(name), Links::Refuse)];
    for dir in debug_dirs {
        let relative = module_dir.strip_prefix("/").unwrap_or(module_dir);
        candidates.push((dir.join(relative).join(name), Links::Follow));
    }
    // Beside the module, the debuglink name may be the module itself when it was not
    // stripped: the CRC tells the right file.
    candidates.into_iter().find_map(|(path, links)| {
        let file = untrusted::open(&path, links).ok()?;
        (crc32_of(&file)? == *crc).then_some(DebugFile { path, file })
    })
}

/// Whether a debuglink name names a file in the directory it is joined to, and nothing else.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// CRC-32 of a whole file, as `.gnu_debuglink` records it (the zlib/gzip CRC); `None` for a
/// file larger than [`MAX_DEBUG_FILE_BYTES`] or one that cannot be read.
fn crc32_of(file: &File) -> Option<u32> {
    if file.metadata().ok()?.len() > MAX_DEBUG_FILE_BYTES {
        return None;
    }
    let mut crc = flate2::Crc::new();
    let mut buffer = vec![0u8; 1 << 16];
    // Read through a handle that stops at the cap even if the file grows meanwhile; the
    // position is shared with `file`, so rewind it for the readers after us.
    let mut reader = file.take(MAX_DEBUG_FILE_BYTES);
    loop {
        let read = reader.read(&mut buffer).ok()?;
        if read == 0 {
            (&*file).seek(SeekFrom::Start(0)).ok()?;
            return Some(crc.sum());
        }
        crc.update(buffer.get(..read)?);
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
        let found =
            |links: &DebugLinks, dirs: &[PathBuf]| find(links, module.to_str().unwrap(), dirs).map(|debug| debug.path);
        assert_eq!(found(&links, std::slice::from_ref(&debug_dir)), Some(by_id.join("cdef.debug")));

        std::fs::create_dir_all(dir.path().join("bin/.debug")).unwrap();
        let linked = dir.path().join("bin/.debug/prog.debug");
        std::fs::write(&linked, b"debug info").unwrap();
        let crc = crc32_of(&File::open(&linked).unwrap()).unwrap();
        let links = DebugLinks { build_id: None, debuglink: Some(("prog.debug".into(), crc)) };
        assert_eq!(found(&links, std::slice::from_ref(&debug_dir)), Some(linked.clone()));
        // A file of that name with another CRC is not it.
        let links = DebugLinks { build_id: None, debuglink: Some(("prog.debug".into(), crc ^ 1)) };
        assert_eq!(found(&links, std::slice::from_ref(&debug_dir)), None);
    }

    #[test]
    fn a_debuglink_name_cannot_leave_its_directory_or_follow_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"root only").unwrap();
        let crc = crc32_of(&File::open(&secret).unwrap()).unwrap();
        let module = dir.path().join("bin/prog");
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        let find_named = |name: &str| {
            let links = DebugLinks { build_id: None, debuglink: Some((name.into(), crc)) };
            find(&links, module.to_str().unwrap(), &[]).map(|debug| debug.path)
        };
        // An absolute name, or one that climbs out, is refused even with the right CRC.
        assert_eq!(find_named(secret.to_str().unwrap()), None);
        assert_eq!(find_named("../secret"), None);
        assert_eq!(find_named(".."), None);
        assert_eq!(find_named(""), None);
        // A link planted beside the module is not followed.
        std::os::unix::fs::symlink(&secret, dir.path().join("bin/prog.debug")).unwrap();
        assert_eq!(find_named("prog.debug"), None);
        // A FIFO of that name is refused without blocking.
        nix::unistd::mkfifo(&dir.path().join("bin/fifo.debug"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(find_named("fifo.debug"), None);
        // The same bytes as a plain file beside the module are found, and read from the start.
        std::fs::copy(&secret, dir.path().join("bin/real.debug")).unwrap();
        let links = DebugLinks { build_id: None, debuglink: Some(("real.debug".into(), crc)) };
        let mut debug = find(&links, module.to_str().unwrap(), &[]).unwrap();
        let mut text = String::new();
        debug.file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "root only");
    }
}
