//! Opening files that someone other than memtrace's user may control: a traced program's
//! binaries and libraries, its `/tmp/perf-PID.map`, a saved report handed to `memtrace report`.
//!
//! memtrace runs as root next to other users' processes, so such a file may be anything: a FIFO
//! that blocks `open` or `read` forever, a symbolic link to `/dev/zero` that never ends, a file
//! of terabytes. Every open here is non-blocking (`O_NONBLOCK`, harmless for regular files),
//! close-on-exec, and accepts only a regular file (checked on the opened descriptor, so that it
//! cannot change in between); reads are capped.
use std::{
    ffi::CString,
    fs::File,
    io::{self, Read},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::FileTypeExt},
    },
    path::Path,
};

use thiserror::Error;

/// Why an untrusted file was not read. The messages are phrased to follow "cannot read PATH: ".
#[derive(Debug, Error)]
pub enum UntrustedError {
    // The cause is in the message, not a source: printed as a chain it would show twice.
    #[error("{0}")]
    Io(io::Error),
    #[error("it is a symbolic link, which memtrace does not follow here")]
    Symlink,
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("it is larger than {} bytes, the most memtrace reads from it", crate::untrusted::group_digits(*.0))]
    TooLarge(u64),
}

impl UntrustedError {
    /// Whether the file simply does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, UntrustedError::Io(error) if error.kind() == io::ErrorKind::NotFound)
    }
}

impl From<io::Error> for UntrustedError {
    fn from(error: io::Error) -> Self {
        UntrustedError::Io(error)
    }
}

/// Whether the last component of a path may be a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    Follow,
    Refuse,
}

/// Opens `path` for reading without blocking and without following a final symbolic link
/// when `links` is [`Links::Refuse`]; fails unless it is a regular file.
pub fn open(path: &Path, links: Links) -> Result<File, UntrustedError> {
    let name = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))?;
    let mut flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    // SAFETY: a valid NUL-terminated path; the returned fd is owned below.
    let fd = unsafe { libc::open(name.as_ptr(), flags) };
    if fd < 0 {
        let error = io::Error::last_os_error();
        return Err(match error.raw_os_error() {
            Some(libc::ELOOP) if links == Links::Refuse => UntrustedError::Symlink,
            _ => UntrustedError::Io(error),
        });
    }
    // SAFETY: the kernel just returned this fd to us.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    regular(file)
}

/// Opens `path` inside the directory tree `root` (a descriptor of a directory), as a process
/// whose root directory `root` is would: `..` and absolute symbolic links stay inside it
/// (`openat2` with `RESOLVE_IN_ROOT`), `/proc` magic links are refused. `path` is taken as
/// absolute. Fails unless it names a regular file.
pub fn open_in_root(root: &OwnedFd, path: &[u8]) -> Result<File, UntrustedError> {
    let name =
        CString::new(path).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))?;
    // SAFETY: open_how is plain data; zeroed is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads the path and `how` (its size given) and returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(libc::SYS_openat2, root.as_raw_fd(), name.as_ptr(), &raw const how, size_of::<libc::open_how>())
    };
    if fd < 0 {
        return Err(UntrustedError::Io(io::Error::last_os_error()));
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("openat2 returned an invalid descriptor"))?;
    // SAFETY: the kernel just returned this fd to us.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    regular(file)
}

/// Opens a directory to resolve paths in with [`open_in_root`].
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    let name = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))?;
    // SAFETY: a valid NUL-terminated path; the returned fd is owned below.
    let fd = unsafe { libc::open(name.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The file, if the descriptor is a regular file's.
fn regular(file: File) -> Result<File, UntrustedError> {
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    Err(UntrustedError::NotRegular(if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }))
}

/// Reads a whole file opened by this module, refusing one larger than `cap` bytes (however
/// its size changes while it is read).
pub fn read_capped(file: &File, cap: u64) -> Result<Vec<u8>, UntrustedError> {
    let size = file.metadata()?.len();
    if size > cap {
        return Err(UntrustedError::TooLarge(cap));
    }
    let mut bytes = Vec::new();
    bytes.try_reserve(usize::try_from(size).unwrap_or(usize::MAX)).map_err(|_| UntrustedError::TooLarge(cap))?;
    file.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(UntrustedError::TooLarge(cap));
    }
    Ok(bytes)
}

/// Opens and reads `path` (see [`open`] and [`read_capped`]).
pub fn read(path: &Path, links: Links, cap: u64) -> Result<Vec<u8>, UntrustedError> {
    read_capped(&open(path, links)?, cap)
}

/// An object file read through `object`'s cache, refusing to read more than a budget of bytes
/// in all: a crafted file (a symbol table "of" terabytes in a sparse file) makes parsing fail
/// instead of memtrace allocate without end.
pub struct CappedRead {
    cache: object::ReadCache<File>,
    left: std::cell::Cell<u64>,
}

impl CappedRead {
    pub fn new(file: File, budget: u64) -> Self {
        Self { cache: object::ReadCache::new(file), left: std::cell::Cell::new(budget) }
    }

    fn charge(&self, bytes: u64) -> Result<(), ()> {
        let left = self.left.get().checked_sub(bytes).ok_or(())?;
        self.left.set(left);
        Ok(())
    }
}

impl<'a> object::ReadRef<'a> for &'a CappedRead {
    fn len(self) -> Result<u64, ()> {
        (&self.cache).len()
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        self.charge(size)?;
        (&self.cache).read_bytes_at(offset, size)
    }

    fn read_bytes_at_until(self, range: std::ops::Range<u64>, delimiter: u8) -> Result<&'a [u8], ()> {
        // object reads at most 4 KiB looking for the delimiter.
        self.charge(4096)?;
        (&self.cache).read_bytes_at_until(range, delimiter)
    }
}

/// 67108864 as "67,108,864".
pub fn group_digits(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn only_regular_files_open_and_never_block() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let name = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        // A FIFO nobody writes to: a blocking open would never return.
        assert!(matches!(open(&fifo, Links::Follow), Err(UntrustedError::NotRegular("a FIFO"))));
        assert!(matches!(
            open(Path::new("/dev/zero"), Links::Follow),
            Err(UntrustedError::NotRegular("a character device"))
        ));
        assert!(matches!(open(dir.path(), Links::Follow), Err(UntrustedError::NotRegular("a directory"))));
        let link = dir.path().join("link");
        symlink("/dev/zero", &link).unwrap();
        assert!(matches!(open(&link, Links::Refuse), Err(UntrustedError::Symlink)));
        assert!(matches!(open(&link, Links::Follow), Err(UntrustedError::NotRegular("a character device"))));
        assert!(open(&dir.path().join("missing"), Links::Follow).unwrap_err().is_not_found());
    }

    #[test]
    fn reads_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read(&file, Links::Refuse, 10).unwrap(), b"0123456789");
        let error = read(&file, Links::Refuse, 9).unwrap_err();
        assert_eq!(error.to_string(), "it is larger than 9 bytes, the most memtrace reads from it");
    }

    #[test]
    fn paths_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("lib")).unwrap();
        std::fs::write(dir.path().join("lib/libx.so"), b"inside").unwrap();
        // An absolute link and a `..` escape both land inside the root.
        symlink("/lib/libx.so", dir.path().join("absolute")).unwrap();
        symlink("../../../../../../lib/libx.so", dir.path().join("lib/climbing")).unwrap();
        let root = open_root(dir.path()).unwrap();
        for path in ["/lib/libx.so", "/absolute", "/lib/climbing", "/../lib/libx.so"] {
            let file = open_in_root(&root, path.as_bytes()).unwrap_or_else(|error| panic!("{path}: {error}"));
            assert_eq!(read_capped(&file, 100).unwrap(), b"inside", "{path}");
        }
        assert!(open_in_root(&root, b"/proc/self/exe").is_err());
        assert_eq!(group_digits(67_108_864), "67,108,864");
    }
}
